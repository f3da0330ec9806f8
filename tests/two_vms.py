"""Two VMs on one run, in one test process: the first trains through ``FirstVm`` (the run's
store as it sees it), and at a chosen step a second VM's ``colabkit.fit`` takes the run over.

Each VM has its own staging folder (its own local disk). The second VM runs inside a callback of
the first (``AtStep``), so the order of events is fixed: the first VM's checkpoint is committed,
then the second VM resumes from it and claims the run, and only then (``FirstVm.release``) does the
first VM's pruning of that checkpoint run and its training go on. ``lagging=True`` plays the Drive
mount's delays: the first VM never sees the second one's claim, so it commits once more.
"""

from __future__ import annotations

import threading
from pathlib import Path

import keras
import pytest
from test_fit import BATCH, N, RaiseAt, fit, make_model

from colabkit.checkpoint import checkpoint_name, step_of
from colabkit.storage import LocalStore
from colabkit.storage.faults import FaultyStore

STEPS = N // BATCH  # steps an epoch in test_fit's runs


class FirstVm(FaultyStore):
    """The run's store as the first VM sees it.

    Args:
        inner: The run's store.
        hold: A checkpoint name: once its upload is done (committed) the upload waits, before
            the pruning that follows it, until ``release()``; ``committed`` is set meanwhile.
        lagging: Never list a claim another session wrote (they reach this VM "later").
    """

    def __init__(self, inner, *, hold: str, lagging: bool = False) -> None:
        super().__init__(inner)
        self.hold, self.lagging = hold, lagging
        self.committed = threading.Event()
        self._released = threading.Event()
        self._mine: set[str] = set()

    def release(self) -> None:
        self._released.set()

    def put(self, local_path, name):
        info = super().put(local_path, name)
        self._mine.add(name)
        if name == self.hold:
            self.committed.set()
            self._released.wait(60)
        return info

    def list(self, prefix: str = ""):
        infos = super().list(prefix)
        if not self.lagging:
            return infos
        return [i for i in infos if not i.name.startswith("sessions/") or i.name in self._mine]


class AtStep(keras.callbacks.Callback):
    """Calls ``action()`` once, right after global step ``step`` is trained."""

    def __init__(self, step: int, action) -> None:
        super().__init__()
        self.step, self.action, self.epoch = step, action, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch * STEPS + batch + 1 == self.step:
            self.action()


def takeover(first: FirstVm, second) -> None:
    """Once the first VM committed ``first.hold``: ``second()`` (the second VM's fit), then the
    first VM's pruning and training go on."""
    assert first.committed.wait(60), f"{first.hold} never reached the store"
    try:
        second()
    finally:
        first.release()


def checkpoints(store) -> list[int]:
    """The steps of the checkpoints in ``store``."""
    return sorted(step_of(i.name) for i in store.list() if step_of(i.name) is not None)


def stray_after_takeover(tmp_path: Path) -> Path:
    """A run whose superseded VM committed a checkpoint after the takeover; returns its run
    directory.

    The first VM (``vm1``, saving every 4 steps, keep=2) commits step 4; a second VM (``vm2``,
    saving at epoch ends) resumes from it, claims the run, commits step 6 and is stopped after
    step 8. The first VM never sees that claim (Drive's delays), commits step 8 (the stray
    checkpoint, newer by step than anything of the run's own) and is stopped after step 10.
    """
    run = tmp_path / "run"
    first = FirstVm(LocalStore(run / "checkpoints"), hold=checkpoint_name(4), lagging=True)

    def second_vm():
        with pytest.raises(RuntimeError, match="interrupted"):
            fit(make_model(), run, cache_dir=tmp_path / "vm2", keep=2,
                callbacks=[RaiseAt(1, 1)])  # fmt: skip

    with pytest.raises(RuntimeError, match="interrupted"):
        fit(make_model(), None, store=first, cache_dir=tmp_path / "vm1", save_every="4steps",
            keep=2, callbacks=[AtStep(5, lambda: takeover(first, second_vm)),
                               RaiseAt(1, 3)])  # fmt: skip
    assert checkpoints(first) == [4, 6, 8]  # 4 resumed from, the new VM's 6, the stray 8
    return run

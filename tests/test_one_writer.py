"""One run, one writer, through ``colabkit.fit`` on two VMs (two staging folders, one store):
what the old writer may still do to the store after a takeover, and what the run keeps.

The second VM takes the run over inside a callback of the first (tests/two_vms.py), right after
the first VM committed a checkpoint and before it pruned for it. Real Keras training of
test_fit's tiny model (6 steps an epoch).
"""

from __future__ import annotations

import logging

import pytest
from test_fit import RaiseAt, fit, make_model
from two_vms import AtStep, FirstVm, checkpoints, stray_after_takeover, takeover

import colabkit
from colabkit.checkpoint import checkpoint_name
from colabkit.errors import RunSupersededError
from colabkit.storage import LocalStore


def test_a_takeover_between_a_commit_and_its_pruning_leaves_the_new_writers_checkpoints(
    tmp_path,
):
    """The old VM (keep=1) committed step 4; before it pruned for it, a new VM (keep=5: the
    user changed it there) resumed from 4, claimed the run and committed 6. The old VM's
    pruning must not run on what is now the other session's run: step 2, which the new writer
    keeps, stays."""
    run = tmp_path / "run"
    store = LocalStore(run / "checkpoints")
    with pytest.raises(RuntimeError, match="interrupted"):  # an earlier session: step 2
        fit(make_model(), run, cache_dir=tmp_path / "vm1", save_every="2steps",
            callbacks=[RaiseAt(0, 2)])  # fmt: skip
    first = FirstVm(store, hold=checkpoint_name(4))

    def second_vm():
        with pytest.raises(RuntimeError, match="interrupted"):
            fit(make_model(), run, cache_dir=tmp_path / "vm2", keep=5,
                callbacks=[RaiseAt(1, 0)])  # fmt: skip
        assert checkpoints(store) == [2, 4, 6]  # resumed from 4, committed 6, keeps all

    with pytest.raises(RunSupersededError):
        fit(make_model(), None, store=first, cache_dir=tmp_path / "vm1", save_every="2steps",
            keep=1, callbacks=[AtStep(5, lambda: takeover(first, second_vm))])  # fmt: skip
    assert checkpoints(store) == [2, 4, 6]  # the old VM pruned nothing after the takeover


def test_a_stray_checkpoint_neither_counts_in_keep_nor_is_resumed_from_and_goes_once_passed(
    tmp_path, caplog
):
    """The old VM never sees the new claim (Drive's delays) and commits step 8 after the new VM
    took over from 4 and committed 6. A third session (keep=2) resumes from the run's own 6,
    not the stray 8; at its next commit (12) it keeps the run's two newest (6 and 12), the stray
    8 neither counting among them nor staying."""
    run = stray_after_takeover(tmp_path)
    store = LocalStore(run / "checkpoints")
    with caplog.at_level(logging.WARNING), pytest.raises(RuntimeError, match="interrupted"):
        fit(make_model(), run, cache_dir=tmp_path / "vm3", keep=2,
            callbacks=[RaiseAt(2, 0)])  # fmt: skip
    assert f"Not resuming from {checkpoint_name(8)}" in caplog.text
    third = colabkit.status(run).session_log[-1]
    assert third["resumed_step"] == 6  # the run's own newest, not the stray 8
    assert checkpoints(store) == [6, 12]  # keep=2 of the run's own; the stray pruned

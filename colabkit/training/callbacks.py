"""colabkit's Keras callbacks, for people who call ``model.fit`` themselves.

- :class:`Checkpoint`: verified checkpoints (weights, optimizer, seed generators, history) with
  automatic restore; exact at epoch boundaries when the data order is yours to control.
- :class:`BackupAndRestore`: a drop-in for ``keras.callbacks.BackupAndRestore`` with the same
  constructor and semantics, built on the same machinery (atomic, verified, RNG state included).
- :class:`SessionDeadline`: stops cleanly, saved and durable, before the Colab session limit.

``colabkit.fit`` goes further (mid-epoch resume, metric accumulators, callback state); these are
for notebooks that keep their own ``model.fit`` call. The difference is documented in README.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import keras

from colabkit.checkpoint import (
    FROZEN_KEY,
    SESSIONS_PREFIX,
    CheckpointManager,
    RunState,
    default_cache,
    forget_cache,
    is_colabkit_file,
    open_manager,
    refuse_if_all_corrupt,
    run_store,
)
from colabkit.clock import SYSTEM_CLOCK, Clock
from colabkit.errors import CheckpointError, invalid_argument
from colabkit.storage import Store
from colabkit.training import state as training_state
from colabkit.training.deadline import FINAL_WORDS_S, SessionDeadline
from colabkit.training.frozen import FrozenVariables
from colabkit.training.loop import frozen_variables
from colabkit.training.progbar import say
from colabkit.validate import renamed

__all__ = ["FINAL_WORDS_S", "BackupAndRestore", "Checkpoint", "SessionDeadline"]

log = logging.getLogger(__name__)


class Checkpoint(keras.callbacks.Callback):
    """Verified checkpoints with automatic restore, for a plain ``model.fit``.

    On ``on_train_begin`` it restores the newest verified checkpoint (model and optimizer
    variables, seed generator states) and sets the epoch to continue from; Keras then restarts
    that epoch at batch 0, so a resume is exact at epoch boundaries (when your data order is a
    function of the epoch) and approximate after a mid-epoch save. Use ``colabkit.fit`` for
    exact mid-epoch resume.

    Args:
        directory: Run directory (checkpoints go to ``directory/checkpoints``) or a store URL.
        save_every: ``"epoch"``, ``"500steps"``, ``"10m"`` or a combination.
        keep: How many checkpoints to keep.
        store: A Store to use instead of ``directory``.
        cache_dir: The run's checkpoint cache: a fast local folder where checkpoints are
            written before they reach the store (default: as ``colabkit.fit``'s).
        staging_dir: Deprecated: the old name of ``cache_dir``.
        clock: Injected clock (tests).
    """

    def __init__(
        self,
        directory: str | Path | None = None,
        *,
        save_every: Any = "epoch",
        keep: Any = 3,
        store: Store | None = None,
        cache_dir: str | Path | None = None,
        clock: Clock | None = None,
        staging_dir: str | Path | None = None,
    ) -> None:
        super().__init__()
        cache_dir = renamed("staging_dir", "cache_dir", staging_dir, cache_dir)
        from colabkit.checkpoint import parse_keep, parse_save_every

        if store is None and directory is None:
            raise invalid_argument("directory", directory, "a run directory or a store URL")
        self.save_policy = parse_save_every(save_every)
        self.keep_policy = parse_keep(keep)
        self.store = store if store is not None else run_store(directory, argname="directory")
        self.cache_dir = cache_dir
        self.clock = clock or SYSTEM_CLOCK
        self.manager: CheckpointManager | None = None
        self.frozen: FrozenVariables | None = None
        self._epoch = 0
        self._step = 0
        self._global_step = 0
        self.interrupted = False
        self._gave_up = False

    def _open(self) -> CheckpointManager:
        if self.manager is None:
            cache = Path(self.cache_dir) if self.cache_dir else None
            cache = cache or default_cache(self.store)
            self.manager = open_manager(
                self.store,
                cache,
                save_policy=self.save_policy,
                keep_policy=self.keep_policy,
                clock=self.clock,
            )
        return self.manager

    def on_train_begin(self, logs: Any = None) -> None:
        if self.manager is not None:  # a fit with this callback raised: its last save first
            self.manager.wait_staged()
        manager = self._open()
        training_state.ensure_built(self.model)
        restored = manager.restore()
        if restored is None:
            refuse_if_all_corrupt(manager, remedy="delete them (or the whole folder) to start over")
            manager.claim(background=True)
            return
        training_state.warn_on_version_drift(restored.run, restored.name)
        training_state.restore_variables(
            self.model, restored.arrays, metrics=False, state=restored.state, frozen=self._frozen()
        )
        manager.claim(background=True)  # it fits: take the run over (another VM stops)
        self._global_step = restored.run.global_step
        self._epoch = restored.run.epoch
        self.model._initial_epoch = self._epoch  # read by Keras' fit after on_train_begin
        say(
            f"resuming from {restored.name} (step {self._global_step}) in {manager.store.url} "
            f"at epoch {self._epoch + 1} "
            "(model.fit restarts an epoch at batch 0; its TensorBoard batch steps restart at 0 "
            "and a CSVLogger keeps earlier rows only with append=True: colabkit.fit continues "
            "all three).",
            self.params.get("verbose", 1) if self.params else 1,
        )

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self._epoch, self._step = epoch, 0

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        # once per execution: with steps_per_execution > 1, ``batch`` is its last batch
        self._global_step += max(batch + 1 - self._step, 1)
        self._step = batch + 1
        manager = self._open()
        if manager.superseded is not None:  # another session owns the run now
            raise manager.superseded
        if manager.should_save(step=self._global_step, epoch_end=False):
            self._save(epoch=self._epoch, step=self._step)

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        manager = self._open()
        if manager.superseded is not None:
            raise manager.superseded
        if manager.should_save(step=self._global_step, epoch_end=True):
            self._save(epoch=epoch + 1, step=0, metrics=logs)

    def on_train_end(self, logs: Any = None) -> None:
        if self.manager is not None:
            try:
                if self._gave_up:  # save_now() already said "not durable": no more waiting
                    with contextlib.suppress(OSError, CheckpointError):
                        self.manager.close(timeout=0.0)
                else:
                    self.manager.close()
            finally:  # close() released the run's lock, failure or not
                self.manager = self.frozen = None

    def save_now(self, timeout: float | None = None) -> bool:
        """Saves at the current position and waits until it is durable; False if it is not.

        Args:
            timeout: Seconds to wait for the store (None: until it took the checkpoint or
                failed for good); the staged copy on local disk is always waited for.
        """
        self.interrupted = True
        self._save(epoch=self._epoch, step=self._step)
        manager = self._open()
        manager.wait_staged()
        try:
            manager.wait(timeout)
        except (OSError, CheckpointError) as e:
            log.error("Checkpoint not durable: %s", e)
            self._gave_up = timeout is not None
            return False
        return True

    def _save(self, *, epoch: int, step: int, metrics: Any = None) -> None:
        self._open().wait_staged()  # one snapshot in memory at a time (see ResumableLoop.save)
        model = self.model  # on JAX this attribute syncs the training state into the variables
        state = RunState(
            config={"model": training_state.model_fingerprint(model)},
            epoch=epoch,
            step=step,
            counted_steps=self._global_step,
            versions=training_state.runtime_versions(),
        ).to_json()
        scalars = {k: float(v) for k, v in (metrics or {}).items()}
        captured = training_state.capture_variables(model, self._frozen())
        if captured.frozen is not None:
            state[FROZEN_KEY] = captured.frozen
        self._open().save(
            self._global_step, captured.arrays, state, metrics=scalars, finish=captured.finish
        )

    def _frozen(self) -> FrozenVariables:
        """The run's frozen variables (stored once; see ``colabkit.training.frozen``)."""
        if self.frozen is None:
            self.frozen = frozen_variables(self._open())
        return self.frozen


class BackupAndRestore(Checkpoint):
    """Drop-in replacement for ``keras.callbacks.BackupAndRestore`` with stronger guarantees.

    Same constructor and semantics as Keras': restores the last backup at the start of
    ``fit``, continues from its epoch (an epoch interrupted mid-way restarts at batch 0, as in
    Keras), backs up every epoch or every ``save_freq`` batches, and deletes the backups when
    training ends normally (``delete_checkpoint=True``). In addition: each backup is one atomic,
    checksummed file (a kill mid-save never leaves a backup that will not load), the seed
    generator states are restored, and a corrupt newest backup falls back to the previous one.
    ``double_checkpoint=True`` keeps two backups.

    Where it differs from Keras' (tests/test_backup_and_restore.py asserts each):

    - Its files are its own (``backup_dir/checkpoints/ckpt-N.ckpt`` and the run's session log);
      it does not read Keras' backups, nor Keras its.
    - A backup is written to local disk at once and reaches ``backup_dir`` in the background
      (training does not wait for Drive); a VM that dies in between falls back to the backup
      before it.
    - At the normal end, its backups and the folders it made go, but a file of yours in
      ``backup_dir`` stays (Keras deletes the whole folder). To start over, delete
      ``backup_dir`` (or its ``checkpoints`` folder).
    - No readable backup where some exist: ``fit`` stops with one line (nothing is deleted)
      instead of training from scratch; only the copy in ``backup_dir`` damaged: it resumes
      from the intact local copy.
    - ``save_freq`` must be ``"epoch"``, ``False`` (restore only: never back up) or an integer
      >= 1; Keras accepts 0, negatives and ``True``, and backs up after every batch for those
      and for ``False``.

    Args:
        backup_dir: Where backups go (a folder, or a store URL such as ``gdrive://...``).
        save_freq: ``"epoch"``, an integer number of batches, or ``False`` (restore only).
        double_checkpoint: Keep the previous backup as well.
        delete_checkpoint: Delete the backups when training finishes normally.
    """

    def __init__(
        self,
        backup_dir: str | Path,
        save_freq: str | int | bool = "epoch",
        double_checkpoint: bool = False,
        delete_checkpoint: bool = True,
    ) -> None:
        if not backup_dir:
            raise ValueError("Empty `backup_dir` argument passed")
        if (
            save_freq != "epoch"
            and save_freq is not False
            and (isinstance(save_freq, bool) or not isinstance(save_freq, int) or save_freq < 1)
        ):
            raise ValueError(
                "Invalid value for argument `save_freq`. "
                f"Received: save_freq={save_freq!r}. Expected either 'epoch', "
                "an integer number of batches, or False."
            )
        save_every = "epoch" if save_freq in ("epoch", False) else f"{save_freq}steps"
        super().__init__(backup_dir, save_every=save_every, keep=2 if double_checkpoint else 1)
        self.save_freq = save_freq
        self.backup_dir = backup_dir
        self.double_checkpoint = double_checkpoint
        self.delete_checkpoint = delete_checkpoint

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        if self.save_freq is not False:
            super().on_train_batch_end(batch, logs)

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        if self.save_freq is not False:
            super().on_epoch_end(epoch, logs)

    def on_train_end(self, logs: Any = None) -> None:
        cache = self.manager.cache if self.manager is not None else None
        super().on_train_end(logs)
        if self.delete_checkpoint and not self.interrupted:
            for info in self.store.list():
                if is_colabkit_file(info.name) or info.name.startswith(SESSIONS_PREFIX):
                    self.store.delete(info.name)  # its own files only: a file of yours stays
            if cache is not None:  # the local copies go too, or they would come back
                forget_cache(cache)
            self._remove_empty_folders()

    def _remove_empty_folders(self) -> None:
        """As Keras' callback removes ``backup_dir``: the folders this callback made, once
        empty (a file of the user's keeps its folder; a Drive folder through the API stays)."""
        root = getattr(self.store, "root", None)
        if not isinstance(root, Path) or not self.backup_dir or "://" in str(self.backup_dir):
            return
        top = Path(self.backup_dir).expanduser().absolute()
        folders = sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        for folder in [*folders, root, *([top] if root.parent == top else [])]:
            with contextlib.suppress(OSError):  # not empty (or already gone): kept
                folder.rmdir()

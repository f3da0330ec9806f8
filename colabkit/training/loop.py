"""The callback through which ``colabkit.fit`` drives Keras' own ``model.fit``.

Keras' fit loop starts every epoch at batch 0 and resets metrics at epoch begin. ``colabkit.fit``
therefore runs the interrupted epoch as its own ``model.fit`` call over the steps still to run,
then the remaining epochs in a second call. This callback makes the two calls look like one run
to the user's callbacks (``on_train_begin`` once, true in-epoch batch indices), restores the
state that Keras does not (seed generators, metric accumulators, callback state) at the moment
the uninterrupted run had it, and takes checkpoints at step and epoch boundaries.
"""

from __future__ import annotations

import logging
from typing import Any

import keras

from colabkit.checkpoint import FROZEN_KEY, CheckpointContents, CheckpointManager, RunState
from colabkit.errors import ResumeMismatchError
from colabkit.training import state as training_state
from colabkit.training.data import ResumableBatches
from colabkit.training.frozen import FrozenVariables
from colabkit.training.interrupts import StopRequests
from colabkit.training.logs import RunLogs

log = logging.getLogger(__name__)


class StopForResume(Exception):
    """Raised out of ``model.fit`` after a stop-and-save; ``colabkit.fit`` catches it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ResumableLoop(keras.callbacks.Callback):
    """Forwards Keras' events to the user's callbacks and checkpoints the run.

    Args:
        user_callbacks: The user's callbacks (a ``keras.callbacks.CallbackList`` without
            History or progress bar), driven as if there were a single ``fit`` call.
        manager: Where checkpoints go.
        data: The training batches; its ``epoch`` is set here before each epoch.
        progress: The run's position and history, updated as training goes.
        restored: The checkpoint being resumed from, if any.
        stops: Stop requests (signals, the session deadline) checked after every step.
        deadline: Returns True when the session deadline is reached (checked after every step).
        clock_seconds: A function returning monotonic seconds, for ``train_seconds``.
        chief: Whether this process writes checkpoints (False on the other workers of a
            distributed run: they restore the chief's checkpoints but never write).
        epochs: The run's ``epochs`` (the user's callbacks see them as ``params``).
        run_logs: The user's TensorBoard and CSVLogger logs, continued across sessions
            (``logs.py``); flushed before each save.
    """

    def __init__(
        self,
        *,
        user_callbacks: keras.callbacks.CallbackList,
        manager: CheckpointManager,
        data: ResumableBatches,
        progress: RunState,
        restored: CheckpointContents | None,
        stops: StopRequests,
        deadline: Any,
        clock_seconds: Any,
        chief: bool = True,
        epochs: int,
        run_logs: RunLogs | None = None,
    ) -> None:
        super().__init__()
        self.user = user_callbacks
        self.manager = manager
        self.frozen: FrozenVariables | None = None  # the run's, from on_train_begin
        self.data = data
        self.progress = progress
        self.restored = restored
        self.stops = stops
        self.deadline = deadline
        self._seconds = clock_seconds
        self.chief = chief  # only the chief writes; every worker captures (collective reads)
        self._started_at: float | None = None
        self._began = False
        self._pending_restore = restored is not None
        self.epochs = epochs
        self.run_logs = run_logs

    # -- restoring -----------------------------------------------------------------------------

    def on_train_begin(self, logs: Any = None) -> None:
        self._started_at = self._seconds()
        if self._began:
            return
        self._began = True
        training_state.ensure_built(self.model, self.data.batch(self.data.start_step))
        self.frozen = frozen_variables(self.manager)
        if self.restored is not None:
            restore_model(self.model, self.restored, self.frozen)
        else:
            self.progress.config["model"] = training_state.model_fingerprint(self.model)
            self.progress.config["optimizer"] = training_state.optimizer_fingerprint(self.model)
        if self.chief:  # the checkpoint fits this model: take the run over (other VMs stop)
            self.manager.claim(background=True)
        self.user.on_train_begin(logs)
        if self.run_logs is not None:
            self.run_logs.continue_steps(self.progress.global_step)
        if self.restored is not None and self.progress.step == 0:
            self._restore_callbacks()

    def _restore_callbacks(self) -> None:
        assert self.restored is not None
        training_state.restore_callbacks(
            self.user.callbacks, self.restored.run.callbacks, self.restored.arrays
        )
        self._pending_restore = False

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self.data.epoch = epoch
        self.progress.epoch, self.progress.step = epoch, self.data.start_step
        mid_epoch = self._pending_restore and self.data.start_step > 0
        if mid_epoch:
            assert self.restored is not None
            training_state.restore_metrics(self.model, self.restored.arrays)
        self.user.on_epoch_begin(epoch, logs)
        if mid_epoch:
            self._restore_callbacks()

    # -- training steps ------------------------------------------------------------------------

    def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
        # The work for the step just finished happens here, not in on_train_batch_end: Keras
        # syncs with the device after every step as soon as any callback overrides a batch-end
        # hook, and this one only needs the variables when it saves.
        if batch > 0:
            self._after_step(self.data.start_step + batch)
        self.user.on_train_batch_begin(self.data.start_step + batch, logs)

    def _after_step(self, done: int) -> None:
        """``done`` steps of the epoch are trained: stop or save here if asked to."""
        self.progress.step = done
        if self.manager.superseded is not None:  # another session owns the run now
            raise self.manager.superseded
        if self.deadline():
            self.stops.request("deadline")
        if self.stops.reason is not None:
            self.save()
            raise StopForResume(self.stops.reason)
        if self.manager.should_save(step=self.progress.global_step, epoch_end=False):
            self.save()

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        # One dict for all user callbacks and the history, as in Keras' own CallbackList with
        # History: what a callback adds to the logs (e.g. a learning rate) is recorded.
        logs = {k: float(v) for k, v in (logs or {}).items()}
        for callback in self.user.callbacks:
            callback.on_epoch_end(epoch, logs)
        for key, value in logs.items():
            self.progress.history.setdefault(key, []).append(float(value))
        self.progress.epoch, self.progress.step = epoch + 1, 0
        if self._model.stop_training:
            self.progress.stop_reason = "stopped by a callback"
        if self.manager.superseded is not None:
            raise self.manager.superseded
        if epoch + 1 >= self.epochs or self._model.stop_training:
            return  # the final checkpoint is taken after on_train_end
        if self.deadline():
            self.stops.request("deadline")
        if self.stops.reason is not None:
            self.save(metrics=logs)
            raise StopForResume(self.stops.reason)
        if self.manager.should_save(step=self.progress.global_step, epoch_end=True):
            self.save(metrics=logs)

    def finish(self) -> None:
        """After the last epoch: the user's ``on_train_end``, then the final checkpoint."""
        self.user.on_train_end()
        self.progress.finished = True
        self.save()

    # -- saving --------------------------------------------------------------------------------

    def save(self, metrics: Any = None) -> str | None:
        """Checkpoints the run at its current position (blocks only to copy the variables)."""
        if self._started_at is not None:
            now = self._seconds()
            self.progress.train_seconds += now - self._started_at
            self._started_at = now
        if self.run_logs is not None:
            self.run_logs.flush()  # what was logged up to here is copied before this commits
        # One snapshot in memory at a time: the previous one must be on local disk first (it
        # always is, unless saves come faster than the disk takes them).
        self.manager.wait_staged()
        model = self.model  # on JAX this attribute syncs the training state into the variables
        # every worker captures (collective reads); only the chief stores frozen variables once
        captured = training_state.capture_variables(model, self.frozen if self.chief else None)
        states, callback_arrays = training_state.capture_callbacks(self.user.callbacks)
        arrays = {**captured.arrays, **callback_arrays}
        self.progress.epoch_fingerprint = self.data.epoch_fingerprint()
        self.progress.callbacks = states
        self.progress.versions = training_state.runtime_versions()
        state = self.progress.to_json()
        if captured.frozen is not None:
            state[FROZEN_KEY] = captured.frozen
        if not self.chief:
            return None
        scalars = {k: float(v) for k, v in (metrics or {}).items()}
        step = self.progress.global_step
        return self.manager.save(step, arrays, state, metrics=scalars, finish=captured.finish)

    # -- everything else goes to the user's callbacks unchanged -------------------------------

    def on_test_begin(self, logs: Any = None) -> None:
        self.user.on_test_begin(logs)

    def on_test_end(self, logs: Any = None) -> None:
        self.user.on_test_end(logs)

    def on_test_batch_begin(self, batch: int, logs: Any = None) -> None:
        self.user.on_test_batch_begin(batch, logs)


def frozen_variables(manager: CheckpointManager) -> FrozenVariables:
    """The run's frozen variables, stored once beside its checkpoints (see ``frozen.py``)."""
    objects = manager.verifier
    return FrozenVariables(manager.cache, objects.frozen_object, objects.has)


def restore_model(
    model: keras.Model, restored: CheckpointContents, frozen: FrozenVariables
) -> None:
    """Checks the architecture and optimizer against the checkpoint, then loads the variables."""
    training_state.ensure_built(model)
    config = restored.run.config
    checks = (
        ("model architecture", "model", training_state.model_fingerprint(model)),
        ("optimizer", "optimizer", training_state.optimizer_fingerprint(model)),
    )
    for what, key, actual in checks:
        expected = config.get(key)
        if expected is not None and expected != actual:
            raise ResumeMismatchError(
                f"Cannot resume from {restored.name}: the {what} differs from the run that made "
                f"it (fingerprint {actual}, checkpoint {expected}). Use the same {what}, or pass "
                "fresh=True to archive the old checkpoints and start over."
            )
    training_state.restore_variables(
        model, restored.arrays, metrics=False, state=restored.state, frozen=frozen
    )


class _ForwardTrainBatchEnd:
    """Forwards training batch ends, with true in-epoch indices, to the user's callbacks."""

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self.user.on_train_batch_end(self.data.start_step + batch, logs)


class _ForwardTestBatchEnd:
    """Forwards validation batch ends to the user's callbacks."""

    def on_test_batch_end(self, batch: int, logs: Any = None) -> None:
        self.user.on_test_batch_end(batch, logs)


def _overrides(callback: Any, hook: str) -> bool:
    return not getattr(getattr(callback, hook, None), "_is_default", False)


_BATCH_END_FORWARDERS = (
    (("on_train_batch_end", "on_batch_end"), _ForwardTrainBatchEnd),
    (("on_test_batch_end",), _ForwardTestBatchEnd),
)


def resumable_loop(**options: Any) -> ResumableLoop:
    """The loop callback, forwarding batch ends only where a user callback has such a hook.

    Keras waits for every step's result (a device sync) when any callback overrides a batch-end
    hook; forwarding one that no user callback needs would cost every run that sync.
    """
    user = options["user_callbacks"].callbacks
    bases = tuple(
        forwarder
        for hooks, forwarder in _BATCH_END_FORWARDERS
        if any(_overrides(callback, hook) for callback in user for hook in hooks)
    )
    if not bases:
        return ResumableLoop(**options)
    return type("ResumableLoop", (*bases, ResumableLoop), {})(**options)


def run_progress(
    restored: CheckpointContents | None, config: dict, steps_per_epoch: int
) -> RunState:
    """Where the run starts: the restored checkpoint's state (refused if its epochs have
    another length), or a new run's."""
    if restored is None:
        return RunState(config=config, steps_per_epoch=steps_per_epoch)
    progress = restored.run
    progress.config = config
    if progress.steps_per_epoch != steps_per_epoch:
        raise ResumeMismatchError(
            f"Cannot resume from {restored.name}: it has {progress.steps_per_epoch} steps per "
            f"epoch, this data has {steps_per_epoch}. Use the same data and batch size, or "
            "fresh=True to archive the old checkpoints and start over."
        )
    return progress

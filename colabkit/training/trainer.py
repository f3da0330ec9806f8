"""``colabkit.fit``: ``model.fit`` that resumes exactly where a killed run stopped.

Re-running the same call after a disconnect, a kill or a session limit continues from the newest
checkpoint that verifies; with a seed and deterministic ops the resumed run ends bitwise equal to
an uninterrupted one. See ``colabkit.training.loop`` for how the Keras loop is driven.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras

from colabkit import distribute, ending
from colabkit.checkpoint import (
    CheckpointContents,
    CheckpointManager,
    RunState,
    default_cache,
    forget_cache,
    open_manager,
    parse_keep,
    parse_save_every,
    refuse_if_all_corrupt,
    store_for,
)
from colabkit.clock import SYSTEM_CLOCK, Clock
from colabkit.errors import CheckpointError, RunSupersededError
from colabkit.storage import Store
from colabkit.training import determinism, inputs
from colabkit.training import state as training_state
from colabkit.training.data import ResumableBatches
from colabkit.training.deadline import SessionDeadline, deadline_for
from colabkit.training.frozen import checkpoint_bytes
from colabkit.training.history import RunHistory
from colabkit.training.interrupts import StopRequests
from colabkit.training.logs import RunLogs
from colabkit.training.loop import (
    ResumableLoop,
    StopForResume,
    frozen_variables,
    restore_model,
    resumable_loop,
    run_progress,
)
from colabkit.training.progbar import RunProgbar, announce_start, say
from colabkit.validate import flag, optional, positive_int, renamed

log = logging.getLogger(__name__)


def fit(
    model: keras.Model,
    x: Any,
    y: Any = None,
    *,
    run_dir: str | Path | None = None,
    store: Store | str | None = None,
    epochs: int,
    batch_size: int = 32,
    steps_per_epoch: int | None = None,
    validation_split: float = 0.0,
    validation_data: Any = None,
    validation_batch_size: int | None = None,
    sample_weight: Any = None,
    seed: int | None = None,
    save_every: Any = "epoch",
    keep: Any = 3,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    deterministic: bool = False,
    session_limit: str | float | bool | None = None,
    verbose: Any = "auto",
    fresh: bool = False,
    cache_dir: str | Path | None = None,
    strategy: Any = None,
    notify: str | None = None,
    release_runtime: bool = False,
    clock: Clock | None = None,
    staging_dir: str | Path | None = None,
) -> RunHistory:
    """Trains ``model`` like ``model.fit``, checkpointing so that a re-run resumes exactly.

    Args:
        model: A compiled Keras 3 model.
        x, y, sample_weight: In-memory arrays (or lists/dicts of arrays); or ``x`` alone: a
            ``keras.utils.PyDataset`` whose ``__getitem__`` is a pure function of the index, a
            finite ``tf.data.Dataset`` of batches, or a ``dataset_fn(epoch)`` returning one
            (what each resumes exactly: see ``colabkit.training.tfdata`` and the docs).
        steps_per_epoch: Batches per epoch of a ``tf.data`` input that repeats forever or
            whose size TensorFlow cannot tell. As in ``model.fit``, the epochs are then
            consecutive slices of one stream (the dataset, repeated); of a ``dataset_fn``, the
            first that many batches of each epoch's dataset.
        run_dir: Run directory; checkpoints go to ``run_dir/checkpoints``.
        store: Where checkpoints go instead (a Store or a URL such as ``gdrive://colabkit/run``).
        epochs: Total epochs of the run (not "more epochs"): re-running continues up to it.
        batch_size, validation_split, validation_data, verbose: As in ``model.fit``
            (``validation_split`` takes the last samples, as Keras does).
        validation_batch_size: As in ``model.fit``: by default ``batch_size`` (for a
            ``PyDataset`` ``x``, Keras' default of 32).
        seed: Seed of the data order; ``None`` picks one on the first run and keeps it.
        save_every: ``"epoch"``, ``"500steps"``, ``"10m"`` or a combination like ``"epoch|10m"``.
        keep: How many checkpoints to keep (or a ``colabkit.checkpoint.KeepPolicy``).
        callbacks: Keras callbacks; their state (EarlyStopping, ReduceLROnPlateau, and any with
            ``get_state()``/``set_state()``) is checkpointed and restored.
        deterministic: Turns on the backend's deterministic ops (see ``determinism.enable``).
        session_limit: Stop cleanly (saved and durable) 15 minutes before the session limit:
            ``"12h"``, ``"24h"``; ``None`` (or ``"auto"``) uses the 12 h limit in Colab and
            Kaggle and no limit elsewhere; ``False`` never stops. A ``SessionDeadline`` in
            ``callbacks`` takes precedence.
        fresh: Archive existing checkpoints (never deleted) and start over.
        strategy: A ``tf.distribute`` strategy (or a ``keras.distribution`` on JAX) whose scope
            the model was built in; see ``colabkit.distribute``. Only the chief writes.
        cache_dir: The run's checkpoint cache: a fast local folder where checkpoints are
            written before they reach the store (default: a per-run folder under
            ``/content/colabkit-cache`` in Colab, ``~/.cache/colabkit`` elsewhere).
        staging_dir: Deprecated: the old name of ``cache_dir``.
        notify: A webhook URL (a secret: never logged): one POST when the run finishes, stops
            (session limit, signal) or fails, once its checkpoint is durable or known not to
            be; see ``colabkit.ending``. A failed notification is a warning, never an error.
        release_runtime: In Colab, give the runtime back (``google.colab.runtime.unassign()``)
            once the run finished or stopped at the session limit, its checkpoint is durable
            and Drive is flushed; never otherwise. Nothing after this call runs then.
        clock: Injected clock (tests).

    Returns:
        A :class:`RunHistory` (a ``keras.callbacks.History``) holding the full per-epoch
        history across all resumes, with ``resumes`` (where each resume started),
        ``completed`` (False when stopped early by a signal or the session deadline),
        ``already_finished`` (the run had finished: nothing trained, final weights loaded),
        ``stop_reason``, ``durable`` (False when the last checkpoint could not reach the
        store) and ``train_seconds``.

    Raises:
        ConfigError: An argument is invalid (nothing is written).
        ResumeMismatchError: The checkpoint was made by a different model, optimizer, batch
            size, dataset size or seed (nothing is overwritten).
    """
    clock = clock or SYSTEM_CLOCK
    cache_dir = renamed("staging_dir", "cache_dir", staging_dir, cache_dir)
    inputs.check_arguments(model, fresh=fresh, callbacks=callbacks)
    notify = ending.check_notify(notify)
    flag("release_runtime", release_runtime)
    epochs = positive_int("epochs", epochs)
    batch_size = positive_int("batch_size", batch_size)
    steps_per_epoch = optional(positive_int)("steps_per_epoch", steps_per_epoch)
    validation_batch_size = optional(positive_int)("validation_batch_size", validation_batch_size)
    distribute.check_model_strategy(model, strategy)
    inputs.check_input_strategy(x, strategy)
    chief = strategy is None or distribute.is_chief(strategy)
    save_policy = parse_save_every(save_every)
    keep_policy = parse_keep(keep)
    deadline = deadline_for(callbacks, session_limit, clock)
    train, validation = inputs.prepare_data(x, y, sample_weight, validation_split, validation_data)
    epochs_of_dataset = inputs.dataset_epochs(train, steps_per_epoch)
    checkpoints = store_for(run_dir, store)
    cache = Path(cache_dir) if cache_dir else default_cache(checkpoints)
    if not chief:  # a worker on the chief's machine must not share (or lock) its cache
        cache = cache.with_name(cache.name + distribute.worker_tag(strategy))
    # The user's TensorBoard and CSVLogger write to local disk; copied before each commit.
    logs = RunLogs(callbacks if chief else (), cache / ".logs", run=checkpoints.url)
    manager = open_manager(
        checkpoints, cache, save_policy=save_policy, keep_policy=keep_policy, clock=clock,
        before_commit=logs.copy, runtime=training_state.describe_runtime,
    )  # fmt: skip
    history: RunHistory | None = None
    progress: RunState | None = None
    failure: BaseException | None = None
    runner: _Runner | None = None
    training = False  # past the checks: a run that ends is worth a notification
    try:
        if fresh:
            archived = manager.archive()
            if archived is None:
                log.info("Fresh start: no checkpoint to archive; starting a new run.")
            else:
                log.info("Archived the previous checkpoints under %s; starting over.", archived)
        restored = manager.restore()
        if restored is None:
            refuse_if_all_corrupt(manager)
        config = inputs.run_config(train, validation, batch_size, seed, restored)
        data = epochs_of_dataset or inputs.training_batches(
            train, batch_size, config["seed"], model
        )
        progress = run_progress(restored, config, data.steps_per_epoch)
        if _already_done(progress, epochs):
            # The final checkpoint may be one a killed session staged here: its logs too.
            logs.recover(progress.session)
            history = _return_finished(model, data, restored, progress, epochs, verbose, manager)
            return history
        if deterministic:
            determinism.enable()
        runner = _Runner(
            model, data, validation, manager, progress, restored, callbacks, clock,
            chief=chief, logs=logs, validation_batch_size=validation_batch_size or data.batch_size,
        )  # fmt: skip
        training = True
        history = runner.run(epochs=epochs, verbose=verbose, deadline=deadline)
        return history
    except BaseException as e:
        failure = e
        raise
    finally:
        finished = history is not None and history.completed and history.durable
        # Stopped at the session limit before the store took the checkpoint: no more waiting.
        gave_up = history is not None and history.stop_reason == "deadline" and not history.durable
        closed = _close(manager, drop_cache=finished, timeout=0.0 if gave_up else None)
        if chief and training:
            ending.end_of_run(history, failure, closed, progress, epochs, checkpoints.url,
                              notify_url=notify, release=release_runtime, deadline=deadline,
                              sessions=manager.sessions)  # fmt: skip
        if failure is None and runner is not None:
            # Last of all, once the end is recorded and told: Ctrl-C becomes KeyboardInterrupt,
            # SIGTERM goes to the handler before colabkit's (by default the process ends).
            runner.stops.reraise()


def _close(manager: CheckpointManager, *, drop_cache: bool, timeout: float | None) -> bool:
    """Stops the background threads and releases the run.

    A store failure was already reported by ``_wait_durable`` (or an exception is on its way
    out): it must not replace the result or the exception. Once a finished run is durable in
    the store, its local copies go: the checkpoint cache would otherwise keep a full checkpoint
    of every run forever. Returns whether everything saved reached the store.
    """
    durable = True
    try:
        manager.close(timeout)
    except (OSError, CheckpointError, RunSupersededError) as e:
        log.debug("Checkpoint manager closed with a failure: %s", e)
        drop_cache = durable = False
    if drop_cache:
        forget_cache(manager.cache)
    return durable


def _already_done(progress: RunState, epochs: int) -> bool:
    if progress.finished and progress.stop_reason is not None:
        return True  # stopped by a callback (e.g. EarlyStopping): more epochs would not run
    return progress.epoch >= epochs and progress.step == 0


def _return_finished(
    model: keras.Model,
    data: ResumableBatches,
    restored: CheckpointContents | None,
    progress: RunState,
    epochs: int,
    verbose: Any,
    manager: CheckpointManager,
) -> RunHistory:
    assert restored is not None
    training_state.ensure_built(model, data.batch(0))  # from shapes: nothing is computed
    restore_model(model, restored, frozen_variables(manager))
    of = f"/{epochs}" if progress.epoch == epochs else ""
    say(
        f"the run already finished at epoch {progress.epoch}{of} "
        f"({progress.stop_reason or 'all epochs trained'}); loaded its final weights.",
        verbose,
    )
    return _history(model, progress, epochs, completed=True, already_finished=True)


def _history(
    model: keras.Model,
    progress: RunState,
    epochs: int,
    *,
    completed: bool,
    already_finished: bool = False,
    stop_reason: str | None = None,
    durable: bool = True,
) -> RunHistory:
    history = RunHistory(
        history=progress.history,
        params={"epochs": epochs, "steps": progress.steps_per_epoch, "verbose": 0},
        resumes=progress.resumes,
        completed=completed,
        already_finished=already_finished,
        stop_reason=stop_reason or progress.stop_reason,
        durable=durable,
        train_seconds=progress.train_seconds,
    )
    history.set_model(model)
    model.history = history
    return history


# ------------------------------------------------------------------------------ the run


class _Runner:
    """One call of ``fit``: at most two ``model.fit`` segments, then the final checkpoint."""

    def __init__(
        self, model, data, validation, manager, progress, restored, callbacks, clock, *,
        chief: bool, logs: RunLogs, validation_batch_size: int,
    ) -> None:  # fmt: skip
        self.model, self.data, self.validation = model, data, validation
        self.manager, self.progress, self.restored = manager, progress, restored
        self.callbacks, self.clock = list(callbacks), clock
        self.chief, self.logs = chief, logs
        self.validation_batch_size = validation_batch_size
        self.space_checked = False
        self.stops = StopRequests()  # the signals received while training (run() replaces it)

    def run(self, *, epochs: int, verbose: Any, deadline: SessionDeadline) -> RunHistory:
        progress = self.progress
        self.logs.begin(
            global_step=progress.global_step,
            epoch=progress.epoch,
            resumed=self.restored is not None,
            session=self.manager.sessions.id,
            continues=progress.session if self.restored is not None else None,
        )
        try:
            return self._run(epochs=epochs, verbose=verbose, deadline=deadline)
        finally:
            self.logs.end(copy=self.manager.superseded is None)

    def _run(self, *, epochs: int, verbose: Any, deadline: SessionDeadline) -> RunHistory:
        progress = self.progress
        if self.restored is not None:
            resume = {
                "epoch": progress.epoch,
                "step": progress.step,
                "global_step": progress.global_step,
                "time": self.clock.time(),
            }
            drift = training_state.warn_on_version_drift(self.restored.run, self.restored.name)
            if drift:
                resume["versions_changed"] = drift
            progress.resumes.append(resume)
        announce_start(progress, self.restored, self.manager.store.url, epochs, deadline,
                       self.clock, verbose)  # fmt: skip
        self.progbar = RunProgbar(progress, epochs, deadline, self.clock)
        progress.finished, progress.stop_reason = False, None
        progress.total_epochs = epochs
        user = keras.callbacks.CallbackList(
            # A SessionDeadline among them is the loop's to obey (it checks it every step).
            [callback for callback in self.callbacks if callback is not deadline],
            add_history=False,
            add_progbar=False,
            model=self.model,
            verbose=verbose,
            epochs=epochs,
            steps=self.data.steps_per_epoch,
        )
        self.stops = stops = StopRequests()
        loop = resumable_loop(
            user_callbacks=user,
            manager=self.manager,
            data=self.data,
            progress=progress,
            restored=self.restored,
            stops=stops,
            deadline=deadline.reached,
            clock_seconds=self.clock.monotonic,
            chief=self.chief,
            epochs=epochs,
            run_logs=self.logs,
        )
        stopped: str | None = None
        with stops.handle_signals():
            try:
                self._segments(loop, epochs, verbose)
                loop.finish()
            except StopForResume as stop:
                stopped = stop.reason
        if stopped is not None:  # fit() obeys the signal once the end is recorded and told
            return self._stopped(stopped, deadline, epochs)
        durable = self._wait_durable()  # a signal during the final save: obeyed after
        history = _history(self.model, progress, epochs, completed=True, durable=durable)
        if durable and self.chief:
            last = self.manager.last_committed
            saved = f"its last checkpoint ({last})" if last else "its checkpoints"
            pending = self.manager.upload_pending
            where = (
                f"is on the Drive mount ({self.manager.store.url}), upload pending: Drive "
                f"uploads it in the background (not confirmed: {pending})"
                if pending
                else f"is durable in {self.manager.store.url}"
            )
            say(
                f"run finished at epoch {progress.epoch}/{epochs}"
                f"{f' ({progress.stop_reason})' if progress.stop_reason else ''}; {saved} {where}.",
                verbose,
            )
        return history

    def _segments(self, loop: ResumableLoop, epochs: int, verbose: Any) -> None:
        """The ``model.fit`` calls: the interrupted epoch's remaining steps alone, then the
        other epochs in one call (or one call each, where the data needs it)."""
        epoch, step = self.progress.epoch, self.progress.step
        while epoch < epochs:
            whole = step == 0 and self.data.epochs_per_fit is None
            end = epochs if whole else epoch + 1
            self._segment(loop, step, epoch, end, verbose)
            if self.model.stop_training:
                return
            epoch, step = end, 0

    def _segment(self, loop: ResumableLoop, start_step: int, first: int, end: int, verbose: Any):
        self.data.start_step = start_step
        self.data.start_epoch(  # start_step > 0 only in the interrupted epoch
            first,
            resuming=self.restored is not None,
            expected_fingerprint=self.progress.epoch_fingerprint if start_step else None,
        )
        if self.data.order_changed and self.progress.resumes:
            self.progress.resumes[-1]["order_may_differ"] = True
        # Built before fit: Keras would otherwise read a batch to build it.
        training_state.ensure_built(self.model, self.data.batch(start_step))
        if not self.space_checked and self.chief:
            self.space_checked = True  # once the variables exist, before the first save
            threading.Thread(
                target=self.manager.check_space,
                args=checkpoint_bytes(self.model),
                name="colabkit-space-check",
                daemon=True,
            ).start()
        self.progbar.start_step = start_step  # the bar counts a resumed epoch from its step
        outer = keras.callbacks.CallbackList(
            [loop, self.progbar] if verbose != 0 else [loop],
            add_history=True,  # model.fit returns model.history, which History sets
            add_progbar=False,
            model=self.model,
            verbose=verbose,
            epochs=loop.epochs,  # the progress bar says "Epoch 3/5", not "Epoch 3/3"
            steps=len(self.data),
        )
        self.model.fit(
            self.data.for_fit(first),
            initial_epoch=first,
            epochs=end,
            callbacks=outer,
            validation_data=self.validation,
            # model.fit validates arrays at the training batch size; over colabkit's PyDataset
            # it would fall back to 32 (4x the steps at 128, and as many device syncs).
            validation_batch_size=self.validation_batch_size,
            verbose=verbose,
            shuffle=False,
        )
        self.data.start_step = 0

    def _stopped(self, reason: str, deadline: SessionDeadline, epochs: int):
        timeout = None
        if reason == "deadline":  # say "not durable" while the VM still lives, not hang in it
            self.manager.wait_staged()  # local disk: at least the staged copy is whole
            timeout = deadline.store_wait_budget()
        durable = self._wait_durable(timeout)
        self.progbar.end_line()
        where = f"step {self.progress.global_step} (epoch {self.progress.epoch + 1})"
        if reason == "deadline":
            deadline.after_save(durable=durable)
            why = "" if durable else self.manager.not_durable_because()
            print(
                f"colabkit: session limit near: saved {where}"
                f"{'' if durable else ' (NOT yet durable, see the log)'}; "
                "re-run this cell or command in a new session to resume."
                + (f" Not durable because {why}." if why else "")
            )
        else:
            print(f"colabkit: {reason}: saved {where}; re-run the same call to resume.")
        return _history(
            self.model, self.progress, epochs, completed=False, stop_reason=reason, durable=durable
        )

    def _wait_durable(self, timeout: float | None = None) -> bool:
        """Waits until the checkpoints are in the store; a failure (or ``timeout`` seconds
        passing first) is reported, not raised."""
        started = time.monotonic()
        try:
            self.manager.wait(timeout)
        except (OSError, CheckpointError) as e:
            log.error(
                "The newest checkpoint is only in local cache (%s), not in %s: %s. "
                "Fix the store and re-run the same call to upload it.",
                self.manager.cache,
                self.manager.store.url,
                e,
            )
            return False
        log.debug("Checkpoints durable after %.2fs.", time.monotonic() - started)
        return True

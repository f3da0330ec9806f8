"""The user's TensorBoard and CSVLogger, continued across sessions like the checkpoints.

Inside ``colabkit.fit`` each ``keras.callbacks.TensorBoard`` and ``keras.callbacks.CSVLogger``
whose destination is a local path (a folder on the Drive mount included) writes to this VM's
cache folder instead; colabkit copies what they wrote to the destination before each
checkpoint is committed (in the background, like the checkpoint itself) and at the end. So:

- a Drive hiccup never raises into training (errno 107 from a TensorBoard writer on Drive
  ended a 4-hour run: colabtools#3899); a failed copy is a warning and is retried;
- the event files copied carry the run's tag in their name (TensorBoard reads any name with
  "tfevents" in it), so that a resume trims this run's files only, never another run's in a
  log folder they share;
- the destination holds at least everything up to the newest committed checkpoint, and a
  resume on the same VM (which may continue from a checkpoint its killed predecessor staged but
  never committed, the run's final one included) first copies what that session left locally:
  a resume leaves no gap. Only when it continues that session's own checkpoint: what a session
  that another VM took over left here is never copied. What a killed session logged past the
  checkpoint resumed from is removed from the destination, so nothing is logged twice;
- TensorBoard's batch counter continues from the checkpoint's step (Keras resets it to 0 in
  ``on_train_begin``), epochs keep their numbers, and a ``CSVLogger`` keeps the rows of earlier
  sessions (Keras opens it with "w" unless ``append=True``) with each epoch once.

A destination given as a URL (``gs://``) is left to TensorFlow; only its batch counter is
continued. Summaries a model writes itself (``tf.summary`` in ``call``) are copied as they are.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras

from colabkit.checkpoint import describe_failure
from colabkit.storage.atomic import atomic_output

log = logging.getLogger(__name__)

EVENTS = "events.out.tfevents."  # how TensorFlow names an event file
MANIFEST = "destinations.json"  # in the local folder: where each of its files is copied
# Keras' TensorBoard tags whose step counts training steps (the others count epochs).
_STEP_TAGS = ("batch_", "evaluation_")


class RunLogs:
    """Where the user's logging callbacks write during one ``colabkit.fit`` call.

    Args:
        callbacks: The user's callbacks (those that are not TensorBoard or CSVLogger are left
            alone).
        local: A folder on fast local disk for this session's files (emptied first).
        run: The run's store URL: the event files this run copies carry a tag made from it, so
            that a resume trims only this run's files in a log folder several runs share.
    """

    def __init__(self, callbacks: Sequence[Any], local: Path, run: str = "") -> None:
        self.local = local
        self.tag = "colabkit-" + hashlib.sha256(run.encode()).hexdigest()[:10]
        self.tensorboards = [cb for cb in callbacks if isinstance(cb, keras.callbacks.TensorBoard)]
        self.csv_loggers = [cb for cb in callbacks if isinstance(cb, keras.callbacks.CSVLogger)]
        self._copies: list[tuple[Path, Path]] = []  # (local folder or file, destination)
        self._restore: list[tuple[Any, str, Any]] = []  # (callback, attribute, user's value)
        self._copied: dict[Path, tuple[int, int]] = {}  # local file -> (size, mtime) copied
        self._lock = threading.Lock()
        self._failing = False

    def __bool__(self) -> bool:
        return bool(self.tensorboards or self.csv_loggers)

    def begin(
        self,
        *,
        global_step: int,
        epoch: int,
        resumed: bool,
        session: str | None = None,
        continues: str | None = None,
    ) -> None:
        """Before the callbacks see the model: trim what a killed session logged past the
        checkpoint (``global_step``, ``epoch`` complete epochs; ``continues``: the session
        that wrote it) and point the writers here. ``session``: this session's id (its
        checkpoints carry it), so that the local folder says whose files it holds."""
        if not self:
            return
        self._recover(continues)
        shutil.rmtree(self.local, ignore_errors=True)
        self.local.mkdir(parents=True, exist_ok=True)
        for i, callback in enumerate(self.tensorboards):
            destination = _local_path(callback.log_dir)
            if destination is None:
                continue
            if resumed:
                self._trim_events(destination, global_step, epoch)
            here = self.local / f"tensorboard-{i}"
            self._redirect(callback, "log_dir", str(here))
            self._copies.append((here, destination))
        for i, callback in enumerate(self.csv_loggers):
            destination = _local_path(callback.filename)
            if destination is None:
                continue
            here = self.local / f"csv-{i}" / destination.name
            here.parent.mkdir()
            if resumed or callback.append:  # a new run with append=True adds to the file
                self._keep_rows(destination, here, epoch if resumed else None, callback.sep)
                self._redirect(callback, "append", True)
            self._redirect(callback, "filename", str(here))
            self._copies.append((here, destination))
        destinations = {str(here.relative_to(self.local)): str(d) for here, d in self._copies}
        manifest = {"session": session, "destinations": destinations}
        (self.local / MANIFEST).write_text(json.dumps(manifest, indent=1))

    def recover(self, continues: str | None) -> None:
        """A run that had finished: its final checkpoint may be one a session killed on this
        VM staged (``continues`` wrote it) before its logs were copied; they are copied now."""
        if self:
            self._recover(continues)

    def continue_steps(self, global_step: int) -> None:
        """After the callbacks' ``on_train_begin``: TensorBoard counts on from the checkpoint."""
        for callback in self.tensorboards:
            callback._global_train_batch = global_step  # Keras sets it to 0 there

    def flush(self) -> None:
        """On the training thread, before a checkpoint is taken: what is logged up to it
        reaches the local files (TensorFlow's writers buffer)."""
        for callback in self.tensorboards:
            for writer in list(getattr(callback, "_writers", {}).values()):
                try:
                    writer.flush()
                except Exception as e:  # noqa: BLE001 - a log must never stop training
                    log.debug("Flushing a TensorBoard writer failed: %s", e)

    def copy(self) -> bool:
        """Copies what changed to the destinations (before each commit, and at the end).
        Never raises: a failure is one warning (until a copy succeeds again), retried later."""
        with self._lock:
            try:
                for here, destination in self._copies:
                    self._copy_tree(here, destination)
            except OSError as e:
                if not self._failing:
                    log.warning(
                        "Could not copy the training logs to %s: %s; training continues, the "
                        "copy is retried with the next checkpoint.",
                        destination,
                        describe_failure(e),
                    )
                self._failing = True
                return False
            if self._failing:
                log.warning("The training logs reach their folders again.")
            self._failing = False
            return True

    def end(self, *, copy: bool = True) -> None:
        """After training: the last copy (none once another session owns the run), and the
        callbacks as the user made them."""
        if not self:
            return
        if copy:
            self.flush()
            self.copy()
        for callback, attribute, value in reversed(self._restore):
            setattr(callback, attribute, value)
        self._restore.clear()

    # ------------------------------------------------------------------------------ helpers

    def _recover(self, continues: str | None) -> None:
        """Copies what a session killed on this VM logged after its last copy: a checkpoint it
        staged but never committed is resumed from, and its steps must be in the logs. Not when
        the run continues from another session's checkpoint (this VM's session was taken over):
        its files would bring back what the run replaced."""
        try:
            manifest = json.loads((self.local / MANIFEST).read_text())
        except (OSError, ValueError):
            return
        destinations = manifest.get("destinations", manifest)  # older: the mapping alone
        if "destinations" in manifest and manifest.get("session") != continues:
            log.debug(
                "Not copying the logs in %s: another session's checkpoint is resumed.", self.local
            )
            return
        for name, destination in destinations.items():
            try:
                self._copy_tree(self.local / name, Path(destination))
            except OSError as e:
                log.warning(
                    "Could not copy the logs the previous session left in %s to %s (%s): the "
                    "steps it trained after its last checkpoint reached the store may be "
                    "missing there.",
                    self.local / name,
                    destination,
                    describe_failure(e),
                )
        self._copied.clear()

    def _redirect(self, callback: Any, attribute: str, value: Any) -> None:
        self._restore.append((callback, attribute, getattr(callback, attribute)))
        setattr(callback, attribute, value)

    def _copy_tree(self, here: Path, destination: Path) -> None:
        files = [here] if here.is_file() else sorted(p for p in here.rglob("*") if p.is_file())
        for path in files:
            stat = path.stat()
            seen = (stat.st_size, stat.st_mtime_ns)
            if self._copied.get(path) == seen:
                continue
            target = destination if path == here else destination / path.relative_to(here)
            if path != here and path.name.startswith(EVENTS):  # TensorBoard reads *tfevents*
                target = target.with_name(f"{path.name}.{self.tag}")
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_output(target) as out, open(path, "rb") as source:
                shutil.copyfileobj(source, out)
            self._copied[path] = seen

    def _trim_events(self, destination: Path, global_step: int, epoch: int) -> None:
        """Removes the events logged past the checkpoint from this run's event files there
        (other runs' files in the same folder are not touched)."""
        try:
            files = sorted(destination.rglob(f"{EVENTS}*.{self.tag}"))
            for path in files:
                _trim_event_file(path, global_step, epoch)
        except OSError as e:
            log.warning(
                "Could not remove the TensorBoard events logged after the checkpoint in %s "
                "(%s): the steps trained again after it may show twice.",
                destination,
                describe_failure(e),
            )

    def _keep_rows(self, destination: Path, here: Path, epoch: int | None, separator: str) -> None:
        """Copies the CSV here without the rows of epochs from ``epoch`` on (trained again;
        None: all rows kept)."""
        try:
            with open(destination, newline="") as f:
                text = f.read()
        except FileNotFoundError:
            return
        except OSError as e:
            log.warning(
                "Could not read %s (%s): the CSV log continues without its earlier rows.",
                destination,
                describe_failure(e),
            )
            return
        rows = list(csv.reader(io.StringIO(text), delimiter=separator))
        kept = [row for row in rows[1:] if row and (epoch is None or _epoch_of(row) < epoch)]
        out = io.StringIO()
        writer = csv.writer(out, delimiter=separator)
        if rows:
            writer.writerow(rows[0])
        writer.writerows(kept)
        with open(here, "w", newline="") as f:
            f.write(out.getvalue())


def _epoch_of(row: list[str]) -> float:
    try:
        return float(row[0])
    except ValueError:
        return float("inf")  # not a row Keras wrote: dropped with the replayed ones


def _local_path(value: Any) -> Path | None:
    """The destination as a local path, or None for a URL (left to TensorFlow)."""
    text = os.fspath(value)
    if "://" in text:
        return None
    return Path(os.path.abspath(text))


def _trim_event_file(path: Path, global_step: int, epoch: int) -> None:
    """Rewrites ``path`` without the summaries of steps after ``global_step`` (batch and
    evaluation tags) and epochs from ``epoch`` on (epoch tags, histograms, images)."""
    import tensorflow as tf
    from tensorflow.core.util import event_pb2

    kept, dropped = [], 0
    records = tf.data.TFRecordDataset(str(path)).as_numpy_iterator()
    while True:
        try:
            record = next(records)
        except StopIteration:
            break
        except tf.errors.DataLossError:
            dropped += 1  # a record cut short by the kill
            break
        event = event_pb2.Event.FromString(record)
        if _after(event, global_step, epoch):
            dropped += 1
        else:
            kept.append(record)
    if not dropped:
        return
    with tempfile.TemporaryDirectory(prefix="colabkit-events-") as folder:
        trimmed = os.path.join(folder, path.name)
        with tf.io.TFRecordWriter(trimmed) as writer:
            for record in kept:
                writer.write(record)
        with atomic_output(path) as out, open(trimmed, "rb") as source:
            shutil.copyfileobj(source, out)


def _after(event: Any, global_step: int, epoch: int) -> bool:
    if not event.HasField("summary") or not event.summary.value:
        return False  # the file's header, graphs: not tied to a step
    tags = [value.tag for value in event.summary.value]
    if all(tag.startswith(_STEP_TAGS) for tag in tags):
        return event.step > global_step
    if tags == ["keras"]:
        return False  # the model's summary, at step 0
    return event.step >= epoch

"""A user's TensorBoard and CSVLogger across sessions: killed twice, they read like one run.

The job is tests/resume_worker.py (Dropout, shuffled data, Adam, deterministic ops) with a
``TensorBoard(update_freq="batch")`` and a ``CSVLogger`` added as a user would, SIGKILLed
mid-epoch twice; its logs are compared with an uninterrupted run's. Then, in process: a log
folder that cannot be written (a Drive hiccup) never stops training.
"""

from __future__ import annotations

import csv
import errno
import logging
import sys
from collections import defaultdict
from pathlib import Path

import keras
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_exact_resume import run_worker  # noqa: E402
from test_fit import RaiseAt, fit, make_model  # noqa: E402

tf = pytest.importorskip("tensorflow")
from tensorflow.core.util import event_pb2  # noqa: E402

from colabkit.training.logs import RunLogs  # noqa: E402


def scalars(log_dir: Path) -> dict[tuple[str, str], list[tuple[int, float]]]:
    """{(train|validation, tag): [(step, value), ...]} over every event file, in file order."""
    found = defaultdict(list)
    for path in sorted(log_dir.rglob("events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
            event = event_pb2.Event.FromString(record)
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "scalars":
                    number = float(tf.make_ndarray(value.tensor))
                    found[(path.parent.name, value.tag)].append((event.step, number))
    return dict(found)


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_killed_twice_mid_epoch_the_logs_read_like_one_uninterrupted_run(tmp_path):
    reference = tmp_path / "reference-logs"
    run_worker("tensorflow", tmp_path / "reference", tmp_path / "r.npz", "--logs", str(reference))
    logs = tmp_path / "logs"
    run = tmp_path / "run"
    for kill in ("17", "30"):  # 12 steps an epoch, a checkpoint every 4: resumed at 16, 28
        code = run_worker("tensorflow", run, tmp_path / "o.npz", "--logs", str(logs),
                          "--kill-after-step", kill)  # fmt: skip
        assert code == -9
    assert run_worker("tensorflow", run, tmp_path / "o.npz", "--logs", str(logs)) == 0

    expected, got = scalars(reference / "tensorboard"), scalars(logs / "tensorboard")
    assert got.keys() == expected.keys()
    assert ("train", "batch_loss") in got and ("train", "epoch_loss") in got
    assert ("validation", "epoch_loss") in got
    for key, series in got.items():
        steps = [step for step, _ in series]
        assert steps == sorted(set(steps)), f"{key}: a step twice or out of order: {steps}"
        first = 1 if key[1].startswith("batch_") else 0
        if not key[1].startswith("evaluation_"):
            assert steps == list(range(first, first + len(steps))), f"{key}: a gap: {steps}"
        assert series == expected[key], key  # the same values, step for step

    csv_rows = rows(logs / "log.csv")
    assert [row["epoch"] for row in csv_rows] == [str(e) for e in range(len(csv_rows))]
    assert csv_rows == rows(reference / "log.csv")


def test_a_log_folder_that_cannot_be_written_never_stops_training(tmp_path, caplog, monkeypatch):
    """A Drive hiccup on the logs (errno 107 on every copy for a while): one warning, training
    and checkpoints go on, and the logs arrive once the folder can be written again."""
    copy_tree = RunLogs._copy_tree
    state = {"broken": True}

    def hiccup(self, here, destination):
        if state["broken"]:
            raise OSError(errno.ENOTCONN, "Transport endpoint is not connected")
        return copy_tree(self, here, destination)

    class Heal(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                state["broken"] = False

    monkeypatch.setattr(RunLogs, "_copy_tree", hiccup)
    board = keras.callbacks.TensorBoard(str(tmp_path / "drive" / "tb"), update_freq="batch")
    logger = keras.callbacks.CSVLogger(str(tmp_path / "drive" / "log.csv"))
    with caplog.at_level(logging.WARNING):
        history = fit(make_model(), tmp_path / "run", save_every="2steps",
                      callbacks=[board, logger, Heal()])  # fmt: skip
    assert history.completed and history.durable
    failures = [r for r in caplog.records if "Could not copy the training logs" in r.message]
    assert len(failures) == 1 and "Errno 107" in failures[0].getMessage()
    assert "training continues" in failures[0].getMessage()
    assert [row["epoch"] for row in rows(tmp_path / "drive" / "log.csv")] == ["0", "1", "2"]
    steps = [s for s, _ in scalars(tmp_path / "drive" / "tb")[("train", "batch_loss")]]
    assert steps == list(range(1, 19))
    assert board.log_dir == str(tmp_path / "drive" / "tb")  # the user's callback as it was
    assert logger.filename == str(tmp_path / "drive" / "log.csv") and logger.append is False


def test_a_resume_keeps_the_csv_rows_of_earlier_sessions_once(tmp_path):
    """Keras' CSVLogger (append=False) would wipe them; colabkit keeps epochs 0 and 1 and
    drops nothing else, though the killed session wrote epoch 1's row after its checkpoint."""
    path = tmp_path / "log.csv"
    with pytest.raises(RuntimeError, match="interrupted"):
        fit(make_model(), tmp_path / "run", callbacks=[keras.callbacks.CSVLogger(str(path)),
            RaiseAt(2, 3)])  # fmt: skip
    assert [row["epoch"] for row in rows(path)] == ["0", "1"]
    with path.open("a") as f:
        f.write("2,0.5,0.5\n")  # as if the killed session had logged past its checkpoint
    fit(make_model(), tmp_path / "run", callbacks=[keras.callbacks.CSVLogger(str(path))])
    logged = rows(path)
    assert [row["epoch"] for row in logged] == ["0", "1", "2"]
    assert np.isfinite([float(row["loss"]) for row in logged]).all()


@pytest.mark.parametrize("append", [True, False])
def test_a_new_run_treats_an_existing_csv_as_keras_does(tmp_path, append):
    """Not a resume: append=True adds to the file, append=False starts it again (Keras)."""
    path = tmp_path / "log.csv"
    path.write_text("epoch,accuracy,loss\n0,0.1,9.0\n")  # an earlier experiment's log
    fit(make_model(), tmp_path / "run", epochs=2,
        callbacks=[keras.callbacks.CSVLogger(str(path), append=append)])  # fmt: skip
    epochs = [row["epoch"] for row in rows(path)]
    assert epochs == (["0", "0", "1"] if append else ["0", "1"])


def test_a_resume_trims_only_its_own_event_files_in_a_shared_log_folder(tmp_path):
    """log_dir="logs" for every experiment, as many tutorials write it: another run's events
    (past this run's checkpoint) are left exactly as they were."""
    train_dir = tmp_path / "logs" / "train"
    writer = tf.summary.create_file_writer(str(train_dir))
    with writer.as_default():
        for step in range(1, 51):
            tf.summary.scalar("batch_loss", 1.0 / step, step=step)
    writer.close()
    (other,) = train_dir.iterdir()
    before = other.read_bytes()

    def board():
        return keras.callbacks.TensorBoard(str(tmp_path / "logs"), update_freq="batch")

    with pytest.raises(RuntimeError, match="interrupted"):
        fit(make_model(), tmp_path / "run", save_every="2steps", callbacks=[board(),
            RaiseAt(1, 3)])  # fmt: skip
    fit(make_model(), tmp_path / "run", save_every="2steps", callbacks=[board()])
    assert other.read_bytes() == before  # another run's file: never trimmed
    mine = [p for p in train_dir.iterdir() if p != other]
    assert mine and all(".colabkit-" in p.name for p in mine)
    steps = sorted(s for s, _ in scalars_of(mine)[("train", "batch_loss")])
    assert steps == list(range(1, 19))


def scalars_of(paths):
    found = defaultdict(list)
    for path in paths:
        for record in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
            event = event_pb2.Event.FromString(record)
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "scalars":
                    found[(path.parent.name, value.tag)].append((event.step, 0.0))
    return found

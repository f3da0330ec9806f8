"""The run's logs (a user's TensorBoard and CSVLogger in ``colabkit.fit``) across a kill between
an epoch's end and its checkpoint's commit, and across a takeover by another VM: each epoch and
each step once, none lost, nothing of a superseded session.

The kills are real: tests/logs_worker.py (test_fit's tiny model, 6 steps an epoch, checkpoints
at epoch ends) SIGKILLs itself right before the logs are copied for a checkpoint, or right after
(before the store has it). The takeover runs in process (tests/two_vms.py).
"""

from __future__ import annotations

from pathlib import Path

import keras
import pytest
from test_fit import RaiseAt, fit, make_model
from test_run_logs import rows, scalars
from two_vms import AtStep, FirstVm, takeover
from worker_process import run_script

from colabkit.checkpoint import checkpoint_name
from colabkit.errors import RunSupersededError
from colabkit.storage import LocalStore

pytest.importorskip("tensorflow")

WORKER = Path(__file__).with_name("logs_worker.py")


def run_worker(tmp_path: Path, vm: str, *kill: str) -> int:
    return run_script(WORKER, "tensorflow", str(tmp_path / "run"), str(tmp_path / "logs"),
                      "--staging", str(tmp_path / vm), *kill)  # fmt: skip


def loggers(logs: Path) -> list[keras.callbacks.Callback]:
    """A user's TensorBoard and CSVLogger, as tests/logs_worker.py has them."""
    return [keras.callbacks.TensorBoard(str(logs / "tensorboard"), update_freq="batch"),
            keras.callbacks.CSVLogger(str(logs / "log.csv"))]  # fmt: skip


def assert_logged_once(logs: Path, history: dict[str, list[float]]) -> None:
    """Each of the run's 3 epochs and 18 steps once in the logs, with the run's own values."""
    logged = rows(logs / "log.csv")
    assert [row["epoch"] for row in logged] == ["0", "1", "2"]
    assert [float(row["loss"]) for row in logged] == history["loss"]
    board = scalars(logs / "tensorboard")  # several event files: one per session
    assert sorted(step for step, _ in board[("train", "batch_loss")]) == list(range(1, 19))
    epochs = sorted(board[("train", "epoch_loss")])
    assert [step for step, _ in epochs] == [0, 1, 2]
    assert [value for _, value in epochs] == pytest.approx(history["loss"], rel=1e-6)


@pytest.mark.slow
def test_kills_between_an_epochs_end_and_its_commit_log_each_epoch_once(tmp_path):
    """Killed three times between an epoch's end and its checkpoint's commit, then run again:
    each epoch and each step is in the logs once, with the run's own values.

    1. On VM 1, the end of epoch 1 is staged; killed before its logs were copied (the re-run
       on VM 1 continues from that checkpoint: its logs come from VM 1's disk).
    2. On VM 1 again, epoch 2's logs were copied; killed before its checkpoint was committed.
    3. On VM 2 (VM 1 is gone), resumed from the end of epoch 1: epoch 2 is trained again, and
       its rows and events from step 2 go; at the end of the run, the final checkpoint is
       staged and it is killed before its logs were copied.
    4. On VM 2 again: the run had finished (its final checkpoint is on VM 2's disk); nothing
       is trained, and epoch 3's logs come from VM 2's disk.
    """
    logs = tmp_path / "logs"
    assert run_worker(tmp_path, "vm1", "--kill-before-logs-copy", "6") == -9
    assert run_worker(tmp_path, "vm1", "--kill-at-commit", "12") == -9
    assert [row["epoch"] for row in rows(logs / "log.csv")] == ["0", "1"]
    assert run_worker(tmp_path, "vm2", "--kill-before-logs-copy", "18") == -9
    assert [row["epoch"] for row in rows(logs / "log.csv")] == ["0", "1"]
    history = fit(make_model(), tmp_path / "run", cache_dir=tmp_path / "vm2",
                  save_every="epoch", callbacks=loggers(logs))  # fmt: skip
    assert history.already_finished
    assert_logged_once(logs, history.history)


def test_a_superseded_vms_logs_stay_out_of_the_runs_logs(tmp_path):
    """A second VM takes the run over from step 4 and trains to step 10 (its newest checkpoint:
    9); the first VM, which had
    logged past step 4, stops at its next save. Later the user runs the cell again on the first
    VM, which finishes the run from the second VM's checkpoint. The logs hold each step and
    epoch once: nothing the first VM logged after the takeover, nothing of the second VM's
    lost."""
    run, logs = tmp_path / "run", tmp_path / "drive" / "logs"

    first = FirstVm(LocalStore(run / "checkpoints"), hold=checkpoint_name(4))

    def second_vm():
        with pytest.raises(RuntimeError, match="interrupted"):
            fit(make_model(), run, cache_dir=tmp_path / "vm2", save_every="1steps",
                callbacks=[*loggers(logs), RaiseAt(1, 3)])  # fmt: skip

    with pytest.raises(RunSupersededError):
        fit(make_model(), None, store=first, cache_dir=tmp_path / "vm1", save_every="2steps",
            callbacks=[*loggers(logs), AtStep(5, lambda: takeover(first, second_vm))])  # fmt: skip
    assert [row["epoch"] for row in rows(logs / "log.csv")] == ["0"]  # the second VM's
    steps = [step for step, _ in scalars(logs / "tensorboard")[("train", "batch_loss")]]
    assert sorted(steps) == list(range(1, 11))  # to the second VM's last step, each once

    history = fit(make_model(), run, cache_dir=tmp_path / "vm1", save_every="1steps",
                  callbacks=loggers(logs))  # fmt: skip
    assert history.resumes[-1]["global_step"] == 9
    assert_logged_once(logs, history.history)

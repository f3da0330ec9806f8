"""`colabkit ckpt ls|verify|prune`, run the way a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from colabkit.checkpoint.format import checkpoint_name, write_checkpoint
from colabkit.cli import main
from colabkit.storage import MemoryStore

STEPS = (100, 200, 300)


@pytest.fixture
def run_dir(tmp_path):
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    for epoch, step in enumerate(STEPS, start=1):
        write_checkpoint(
            folder / checkpoint_name(step), {"w": np.full(1000, step)}, {"epoch": epoch}
        )
    return tmp_path / "run"


def damage(run_dir, step):
    path = run_dir / "checkpoints" / checkpoint_name(step)
    path.write_bytes(path.read_bytes()[:500])


def cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_ls_shows_step_epoch_size_age_verified(run_dir, capsys):
    code, out, _ = cli(capsys, "ckpt", "ls", str(run_dir))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["STEP", "EPOCH", "SIZE", "AGE", "VERIFIED", "NAME"]
    assert [line.split()[0] for line in lines[1:]] == ["300", "200", "100"]
    assert lines[1].split()[1] == "3" and "KB" in lines[1] and "yes" in lines[1]


def test_ls_json_marks_the_damaged_one(run_dir, capsys):
    damage(run_dir, 300)
    code, out, _ = cli(capsys, "ckpt", "ls", str(run_dir), "--json")
    assert code == 0
    rows = json.loads(out)
    assert [(r["step"], r["verified"]) for r in rows] == [(300, False), (200, True), (100, True)]
    assert rows[0]["problem"] and rows[1]["epoch"] == 2


def test_ls_of_a_missing_run_says_so_and_succeeds(tmp_path, capsys):
    code, out, _ = cli(capsys, "ckpt", "ls", str(tmp_path / "nope"))
    assert code == 0
    assert "no checkpoints" in out and "does not exist" in out


def test_verify_passes_when_newest_is_good(run_dir, capsys):
    damage(run_dir, 100)  # an old bad one is reported but is not fatal
    code, out, _ = cli(capsys, "ckpt", "verify", str(run_dir))
    assert code == 0
    assert out.splitlines()[0].startswith("ok  ckpt-000000000300")
    assert out.splitlines()[2].startswith("BAD ckpt-000000000100")


def test_verify_fails_naming_the_bad_newest(run_dir, capsys):
    damage(run_dir, 300)
    code, _, err = cli(capsys, "ckpt", "verify", str(run_dir))
    assert code == 1
    assert err.strip() == (
        f"Error: newest checkpoint {checkpoint_name(300)} does not verify "
        f"(resume would use {checkpoint_name(200)})"
    )


def test_verify_without_checkpoints_is_an_error(tmp_path, capsys):
    code, _, err = cli(capsys, "ckpt", "verify", str(tmp_path))
    assert code == 1 and "no checkpoints" in err


def test_prune_keeps_newest_n(run_dir, capsys):
    code, out, _ = cli(capsys, "ckpt", "prune", str(run_dir), "--keep", "1")
    assert code == 0
    left = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert left == [checkpoint_name(300)]
    assert "deleted 2" in out


def test_prune_never_deletes_the_newest_good_one(run_dir, capsys):
    damage(run_dir, 300)
    code, out, _ = cli(capsys, "ckpt", "prune", str(run_dir), "--keep", "1", "--json")
    assert code == 0
    assert json.loads(out)["deleted"] == [checkpoint_name(100)]
    left = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert left == [checkpoint_name(200), checkpoint_name(300)]


@pytest.mark.parametrize("keep", ["0", "-2"])
def test_prune_keep_below_one_is_one_error_line_and_deletes_nothing(run_dir, capsys, keep):
    code, _, err = cli(capsys, "ckpt", "prune", str(run_dir), "--keep", keep)
    assert code == 1  # as every option colabkit refuses: one "Error:" line, exit 1
    assert (
        err.strip()
        == f"Error: Invalid value for --keep. Received: {keep}. Expected an integer >= 1."
    )
    assert len(list((run_dir / "checkpoints").iterdir())) == 3


def test_run_dir_may_be_a_store_url(tmp_path, capsys):
    store = MemoryStore.shared("cli-test")
    path = tmp_path / checkpoint_name(5)
    write_checkpoint(path, {}, {"epoch": 0})
    store.put(path, path.name)
    code, out, _ = cli(capsys, "ckpt", "verify", "memory://cli-test")
    assert code == 0 and checkpoint_name(5) in out


def test_ckpt_commands_have_help_and_run_as_a_command(run_dir):
    for action in ("ls", "verify", "prune"):
        done = subprocess.run(
            [sys.executable, "-m", "colabkit", "ckpt", action, "--help"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert "RUN_DIR" in done.stdout
    done = subprocess.run(
        [sys.executable, "-m", "colabkit", "ckpt", "ls", str(run_dir)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and checkpoint_name(300) in done.stdout

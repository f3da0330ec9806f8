"""A run that crosses a runtime upgrade, and a checkpoint from a newer colabkit.

Colab upgrades its runtime under running projects (Keras 3.10 -> 3.13.2 in March 2026), so the
next session of a run may resume a checkpoint written with other versions: it says so in one
line and goes on. A checkpoint in a newer checkpoint format is refused with one line and left
exactly as it was: skipping it would resume an older checkpoint and lose its work.
Real Keras training on a tiny model; a new VM is simulated by dropping the cache folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
from test_fit import fit, make_data, make_model

import colabkit
from colabkit.checkpoint.format import FORMAT_VERSION, read_checkpoint, verify, write_checkpoint
from colabkit.checkpoint.inventory import inspect_store, prune, run_store
from colabkit.errors import CorruptCheckpointError, UnsupportedCheckpointError
from colabkit.training.state import runtime_versions

ROOT = Path(__file__).resolve().parents[1]


def newest(run_dir: Path) -> Path:
    return sorted((run_dir / "checkpoints").glob("ckpt-*.ckpt"))[-1]


def new_vm(run_dir: Path) -> None:
    shutil.rmtree(str(run_dir) + "-cache")


def rewrite_state(path: Path, change) -> None:
    contents = read_checkpoint(path)
    state = dict(contents.state)
    change(state)
    write_checkpoint(path, contents.arrays, state, created=state["created"])


def with_format_version(path: Path, version) -> None:
    """The same checkpoint with another format_version in its manifest (checksums intact)."""
    with zipfile.ZipFile(path) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    manifest = json.loads(members["manifest.json"])
    manifest["format_version"] = version
    members["manifest.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def drift_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "other versions" in r.getMessage()]


def test_every_checkpoint_records_the_versions_it_was_written_with(tmp_path):
    fit(make_model(), tmp_path / "run", epochs=1)

    versions = verify(newest(tmp_path / "run"))["versions"]
    backend = keras.backend.backend()
    assert versions["keras"] == keras.version() and versions["backend"] == backend
    assert versions[backend] == __import__(backend).__version__
    assert versions["numpy"] == np.__version__
    assert versions["python"] == "{}.{}".format(*sys.version_info[:2])


def test_a_resume_across_an_upgrade_says_so_in_one_line_and_continues(tmp_path, caplog):
    run = tmp_path / "run"
    fit(make_model(), run, epochs=1)
    rewrite_state(newest(run), lambda s: s["versions"].update(keras="3.0.1", numpy="1.26.4"))
    new_vm(run)

    with caplog.at_level(logging.WARNING):
        history = fit(make_model(), run, epochs=2)

    (line,) = drift_warnings(caplog)
    assert "\n" not in line
    assert f"keras 3.0.1 -> {keras.version()}" in line
    assert f"numpy 1.26.4 -> {np.__version__}" in line
    assert "no longer promised to be bitwise equal" in line
    assert len(history.history["loss"]) == 2  # it went on
    assert history.resumes[-1]["versions_changed"] == [
        f"keras 3.0.1 -> {keras.version()}",
        f"numpy 1.26.4 -> {np.__version__}",
    ]


def test_a_resume_on_the_same_versions_says_nothing_about_versions(tmp_path, caplog):
    run = tmp_path / "run"
    fit(make_model(), run, epochs=1)
    new_vm(run)

    with caplog.at_level(logging.WARNING):
        history = fit(make_model(), run, epochs=2)

    assert drift_warnings(caplog) == []
    assert "versions_changed" not in history.resumes[-1]


def test_a_checkpoint_of_colabkit_0_1_is_compared_by_what_it_recorded(tmp_path, caplog):
    run = tmp_path / "run"
    fit(make_model(), run, epochs=1)

    def as_written_by_0_1(state):
        del state["versions"]
        state["keras"] = {"backend": keras.backend.backend(), "version": "3.0.2"}

    rewrite_state(newest(run), as_written_by_0_1)
    new_vm(run)
    with caplog.at_level(logging.WARNING):
        fit(make_model(), run, epochs=2)

    (line,) = drift_warnings(caplog)
    assert f"keras 3.0.2 -> {keras.version()}" in line and "backend" not in line


def test_the_callbacks_path_says_so_too(tmp_path, caplog):
    x, y = make_data()
    folder = tmp_path / "backup"
    model = make_model()
    first = colabkit.callbacks.Checkpoint(folder, cache_dir=tmp_path / "vm1")
    model.fit(x, y, epochs=1, verbose=0, callbacks=[first])
    rewrite_state(newest(folder), lambda s: s["versions"].update(keras="3.0.1"))

    with caplog.at_level(logging.WARNING):
        model = make_model()
        second = colabkit.callbacks.Checkpoint(folder, cache_dir=tmp_path / "vm2")
        model.fit(x, y, epochs=2, verbose=0, callbacks=[second])

    (line,) = drift_warnings(caplog)
    assert f"keras 3.0.1 -> {keras.version()}" in line


# -- a newer checkpoint format ------------------------------------------------------------------


def test_a_newer_format_is_refused_with_one_line_not_skipped_as_corrupt(tmp_path):
    run = tmp_path / "run"
    fit(make_model(), run, epochs=1)
    with_format_version(newest(run), FORMAT_VERSION + 1)

    with pytest.raises(UnsupportedCheckpointError) as refused:
        verify(newest(run))

    message = str(refused.value)
    assert "\n" not in message and newest(run).name in message
    assert f"checkpoint format {FORMAT_VERSION + 1}" in message
    assert f"colabkit ({colabkit.__version__})" in message
    assert "written by colabkit" in message
    assert "pip install -U colabkit-keras" in message
    assert not isinstance(refused.value, CorruptCheckpointError)


@pytest.mark.parametrize("version", [0, "1", True, None, 1.0])
def test_a_format_version_colabkit_never_wrote_is_corrupt(tmp_path, version):
    run = tmp_path / "run"
    fit(make_model(), run, epochs=1)
    with_format_version(newest(run), version)

    with pytest.raises(CorruptCheckpointError, match="not a format colabkit wrote"):
        verify(newest(run))


def test_resume_stops_at_a_newer_format_and_touches_nothing(tmp_path):
    run = tmp_path / "run"
    fit(make_model(), run, epochs=2, keep=1)  # one checkpoint per epoch; keep=1 would prune
    with_format_version(newest(run), FORMAT_VERSION + 1)
    new_vm(run)
    before = digests(run)

    with pytest.raises(UnsupportedCheckpointError, match="pip install -U colabkit-keras"):
        fit(make_model(), run, epochs=4, keep=1)
    with pytest.raises(UnsupportedCheckpointError):
        fit(make_model(), run, epochs=4, keep=1, save_every="1steps")

    assert digests(run) == before  # nothing resumed from, pruned, written or overwritten


def test_the_cli_refuses_it_in_one_line_and_ckpt_prune_keeps_it(tmp_path):
    run = tmp_path / "run"
    fit(make_model(), run, epochs=3)
    with_format_version(newest(run), FORMAT_VERSION + 1)
    before = digests(run / "checkpoints")

    statuses = inspect_store(run_store(run))
    assert [s.newer_format for s in statuses] == [True, False, False]
    assert prune(run_store(run), 1, statuses) == [statuses[2].name]  # the newer one is kept

    verify_cli = subprocess.run(
        [sys.executable, "-m", "colabkit", "ckpt", "verify", str(run)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert verify_cli.returncode == 1
    assert f"checkpoint format {FORMAT_VERSION + 1}" in verify_cli.stdout + verify_cli.stderr
    assert set(digests(run / "checkpoints")) == set(before) - {f"{statuses[2].name}"}


def test_runtime_versions_name_the_backend_framework():
    versions = runtime_versions()
    assert set(versions) == {"keras", "backend", keras.backend.backend(), "numpy", "python"}

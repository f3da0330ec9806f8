"""``colabkit doctor``, run the way a user runs it: a subprocess, on this GPU-less machine.

The three slow runs (each asks TensorFlow and JAX in subprocesses) start together in a
module fixture, so the file costs about one doctor run of wall time.
"""

from __future__ import annotations

import dataclasses
import errno
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from fakes import BIN, NVIDIA_SMI, mount_table

from colabkit.cli import main
from colabkit.doctor import (
    DOCTOR_SCHEMA,
    check_drive,
    diagnose,
    schema_errors,
    validate,
)
from colabkit.drive import DriveHealth
from colabkit.env import SystemView, detect
from colabkit.gpu import GpuQuery, accelerator_report
from colabkit.tpu import TpuInfo

DOCS = Path(__file__).resolve().parents[1] / "docs" / "doctor.md"


def _start(*args: str, path_prefix: str | None = None, **env_vars) -> subprocess.Popen[str]:
    env = dict(os.environ, COLABKIT_FAKE_NVIDIA_SMI=str(NVIDIA_SMI / "a100.csv"), **env_vars)
    if path_prefix is not None:
        env["PATH"] = path_prefix + os.pathsep + env.get("PATH", "")
    return subprocess.Popen(
        [sys.executable, "-m", "colabkit", "doctor", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


@pytest.fixture(scope="module")
def runs():
    """(returncode, stdout, stderr) of each doctor run, started in parallel."""
    started = {
        "json": _start("--json"),  # asks TensorFlow for real: the one slow run
        "text-require": _start("--require-gpu", "--frameworks", "jax"),
        "a100": _start(
            "--json", "--require-gpu", "--frameworks=jax", path_prefix=str(BIN), KERAS_BACKEND="jax"
        ),
    }
    results = {}
    for name, proc in started.items():
        out, err = proc.communicate(timeout=180)
        results[name] = (proc.returncode, out, err)
    return results


def test_json_report_here_is_local_without_gpu_and_matches_the_schema(runs):
    code, out, err = runs["json"]
    assert code == 0, err
    report = json.loads(out)
    assert schema_errors(report) == []
    assert report["environment"]["kind"] == "local"
    assert report["accelerator"]["gpus"] == []
    (no_gpu,) = [f for f in report["findings"] if f["code"] == "no-gpu"]
    assert "Runtime → Change runtime type → GPU" in no_gpu["fix"]
    frameworks = {f["name"]: f for f in report["accelerator"]["frameworks"]}
    assert frameworks["tensorflow"]["installed"] and frameworks["tensorflow"]["gpu_count"] == 0
    if importlib.util.find_spec("torch") is None:  # reported without starting anything
        assert (frameworks["torch"]["installed"], frameworks["torch"]["checked"]) == (False, False)


def test_text_report_and_require_gpu_exit_1_with_the_fix(runs):
    code, out, err = runs["text-require"]
    assert code == 1
    assert "local machine" in out and "No NVIDIA GPU found" in out
    assert re.search(r"^Frameworks: +jax [\d.]+: 0 GPU$", out, re.M)
    assert err.startswith("Error: No usable GPU") and "Change runtime type → GPU" in err
    assert len(err.strip().splitlines()) == 1


def test_a_fake_nvidia_smi_a100_is_reported(runs):
    code, out, err = runs["a100"]
    report = json.loads(out)
    assert schema_errors(report) == []
    (gpu,) = report["accelerator"]["gpus"]
    assert (gpu["name"], gpu["memory_total_mib"]) == ("NVIDIA A100-SXM4-40GB", 40960)
    assert report["accelerator"]["gpu_source"] == "nvidia-smi"
    # The A100 is fake, so the real JAX here (Keras' backend in this run) cannot see it.
    codes = [f["code"] for f in report["findings"]]
    assert "jax-cannot-see-gpu" in codes and "no-gpu" not in codes
    assert code == 1 and "jax[cuda12]" in err


def test_bad_session_limit_is_an_error_line(capsys):
    assert main(["doctor", "--session-limit", "forever"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: Invalid value for --session-limit. Received: 'forever'")


def test_unknown_framework_is_an_error_line(capsys):
    assert main(["doctor", "--frameworks", "tensorflow,caffe"]) == 1
    assert "Invalid value for --frameworks" in capsys.readouterr().err


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as done:
        main(["doctor", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for option in ("--json", "--require-gpu", "--session-limit", "--frameworks"):
        assert option in out


def test_the_validator_catches_what_the_schema_forbids(runs):
    report = json.loads(runs["json"][1])
    report["environment"]["kind"] = "laptop"
    report["accelerator"]["gpus"] = [{"index": -1}]
    del report["ok"]
    report["extra"] = 1
    errors = validate(report, DOCTOR_SCHEMA)
    assert any("'laptop' is not one of" in e for e in errors)
    assert any("$.accelerator.gpus[0]: missing 'name'" in e for e in errors)
    assert any("below the minimum" in e for e in errors)
    assert "$: missing 'ok'" in errors and "$: unexpected property 'extra'" in errors


def test_docs_describe_every_field_of_the_schema():
    text = DOCS.read_text()

    def fields(schema, prefix=""):
        for key, sub in schema.get("properties", {}).items():
            yield prefix + key
            yield from fields(sub.get("items", sub), f"{prefix}{key}.")

    missing = [name for name in fields(DOCTOR_SCHEMA) if f"`{name}`" not in text]
    assert missing == []


def _colab(tmp_path, session_limit="12h"):
    env = detect(
        session_limit=session_limit,
        system=SystemView(environ={}, exists=lambda p: p == "/var/colab/hostname"),
    )
    return dataclasses.replace(env, drive_mountpoint=tmp_path / "drive")


def _stale_listdir(path):
    raise OSError(errno.ENOTCONN, "Transport endpoint is not connected", path)


def test_drive_states_in_colab(tmp_path, monkeypatch):
    env = _colab(tmp_path)
    mount_table(monkeypatch, tmp_path)
    assert check_drive(env).status == "not-mounted"
    assert check_drive(env).finding.code == "drive-not-mounted"
    (tmp_path / "drive" / "MyDrive").mkdir(parents=True)  # local files, not a mount
    assert check_drive(env).status == "not-mounted"
    mount_table(monkeypatch, tmp_path, tmp_path / "drive")
    healthy = check_drive(env)
    assert (healthy.mountpoint, healthy.status) == (tmp_path / "drive", "healthy")
    assert healthy.space.free > 0 and healthy.space.total >= healthy.space.free
    stale = check_drive(env, listdir=_stale_listdir)
    assert (stale.status, stale.finding.severity) == ("stale", "error")
    quota = DriveHealth(tmp_path, "io-error", "EIO on write", "Check your storage quota.", 5)
    unhealthy = check_drive(env, health=lambda path: quota)
    assert unhealthy.status == "unhealthy" and unhealthy.finding.fix == "Check your storage quota."
    outside = dataclasses.replace(env, kind="local")
    assert check_drive(outside).status == "not-colab"


def test_report_warns_when_the_session_is_about_to_end(tmp_path):
    env = _colab(tmp_path, session_limit="2h")
    env = dataclasses.replace(env, session_start=env.detected_at - 90 * 60)
    accelerator = accelerator_report(
        frameworks=(),
        environ={},
        gpu_query=lambda: GpuQuery((), "none"),
        tpu_probe=lambda environ: TpuInfo(False),
    )
    report = diagnose(environment=env, accelerator=accelerator, drive=check_drive(env))
    (ending,) = [f for f in report.findings if f.code == "session-ending"]
    assert "About 30 min left" in ending.message
    assert report.ok and schema_errors(report.to_json()) == []
    assert "about 30 min left of 2 h" in report.text()
    assert "<table>" in report.html()


def test_a_reader_that_leaves_early_gets_no_traceback():
    """`colabkit doctor | head -1`: the pipe's reader is gone before doctor prints."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "colabkit", "doctor", "--frameworks", "none"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert done.returncode == 141
    assert "Traceback" not in done.stderr and "Error" not in done.stderr

"""colabkit.setup(): validation first, GPU before Drive, Drive in Colab, directories, summary."""

from __future__ import annotations

import dataclasses
import sys
import types

import pytest
from fakes import fake_colab_drive, nvidia_smi_output

import colabkit
from colabkit.clock import FakeClock
from colabkit.env import SystemView, detect
from colabkit.errors import AcceleratorError, ConfigError, DriveError
from colabkit.frameworks import FrameworkView
from colabkit.gpu import GpuQuery, accelerator_report, parse_nvidia_smi
from colabkit.session import Session, setup
from colabkit.tpu import TpuInfo


def accelerator(board: str | None):
    gpus = parse_nvidia_smi(nvidia_smi_output(board)) if board else ()
    tf = FrameworkView("tensorflow", True, True, "2.21.0", len(gpus), ())
    return accelerator_report(
        frameworks=["tensorflow"],
        environ={},
        gpu_query=lambda: GpuQuery(gpus, "nvidia-smi"),
        framework_check=lambda names: (tf,),
        tpu_probe=lambda environ: TpuInfo(False),
    )


def local_env(tmp_path):
    return detect(
        system=SystemView(
            environ={}, exists=lambda p: False, cwd=lambda: tmp_path, home=lambda: tmp_path / "home"
        )
    )


def colab_env(tmp_path):
    """Colab, with the Drive mountpoint and local disk moved under tmp_path."""
    env = detect(system=SystemView(environ={}, exists=lambda p: p == "/var/colab/hostname"))
    return dataclasses.replace(
        env,
        drive_mountpoint=tmp_path / "drive",
        durable_root=tmp_path / "content" / "runs",
        cache_root=tmp_path / "content" / "colabkit-cache",
    )


@pytest.fixture
def colab_drive(monkeypatch):
    """The fake ``google.colab.drive``, imported the way a user imports the real one."""
    yield from fake_colab_drive(monkeypatch)


def test_setup_is_the_public_entry_point():
    assert colabkit.setup is setup and colabkit.Session is Session


def test_local_setup_creates_the_run_and_cache_dirs_and_prints_a_summary(tmp_path, capsys):
    session = setup("mnist", environment=local_env(tmp_path), accelerator=accelerator("t4"))
    assert session.run_dir == tmp_path / "runs" / "mnist" and session.run_dir.is_dir()
    assert session.cache_dir.parent == tmp_path / "home" / ".cache" / "colabkit"
    assert session.cache_dir.name.startswith("mnist-")
    assert session.cache_dir.is_dir()
    assert session.drive is None
    out = capsys.readouterr().out
    assert "local machine" in out and "Tesla T4" in out and str(session.run_dir) in out
    assert session.deadline is None and "no session limit" in out  # as colabkit.fit locally


def test_the_cache_folder_setup_reports_is_the_one_fit_caches_in(tmp_path):
    import keras
    import numpy as np

    session = setup("exp", drive=tmp_path / "runs", accelerator=accelerator("t4"), show=False)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")

    class Interrupt(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 2:
                raise RuntimeError("disconnected")

    x = np.zeros((64, 3), "float32")
    with pytest.raises(RuntimeError, match="disconnected"):
        colabkit.fit(model, x, x[:, :1], run_dir=session.run_dir, epochs=1, batch_size=8,
                     save_every="1steps", session_limit=False, verbose=0,
                     callbacks=[Interrupt()])  # fmt: skip
    assert any(session.cache_dir.glob("*.ckpt"))  # the interrupted run's local copies


def test_in_colab_auto_mounts_drive_and_puts_the_run_on_it(tmp_path, colab_drive):
    session = setup(
        "mnist", environment=colab_env(tmp_path), accelerator=accelerator("t4"), show=False
    )
    assert session.drive.status == "mounted"
    assert session.run_dir == tmp_path / "drive" / "MyDrive" / "colabkit" / "mnist"
    assert session.run_dir.is_dir()
    assert session.environment.drive_mounted
    assert session.environment.session_limit_s == 12 * 3600  # "auto" in Colab
    again = setup(
        "mnist", environment=colab_env(tmp_path), accelerator=accelerator("t4"), show=False
    )
    assert again.drive.status == "already-mounted" and again.run_dir == session.run_dir


def test_a_drive_path_on_the_mount_mounts_first(tmp_path, colab_drive):
    target = tmp_path / "drive" / "MyDrive" / "experiments"
    session = setup(
        "r1",
        drive=target,
        environment=colab_env(tmp_path),
        accelerator=accelerator("t4"),
        show=False,
    )
    assert session.drive.mounted and session.run_dir == target / "r1" and session.run_dir.is_dir()


def test_drive_false_in_colab_stays_on_local_disk(tmp_path, colab_drive):
    env = colab_env(tmp_path)
    session = setup("r1", drive=False, environment=env, accelerator=accelerator("t4"), show=False)
    assert session.drive is None and colab_drive.calls == []
    assert session.run_dir == tmp_path / "content" / "runs" / "r1"


def test_a_failed_mount_in_colab_raises_rather_than_training_on_disk_lost_with_the_vm(
    tmp_path, colab_drive
):
    colab_drive.fail_next(colab_drive.TIMEOUT, times=3)
    clock = FakeClock()
    with pytest.raises(DriveError, match="consent dialog"):
        setup("r1", environment=colab_env(tmp_path), accelerator=accelerator("t4"), clock=clock)
    assert clock.sleeps == [5.0, 10.0]
    assert not (tmp_path / "content").exists()


@pytest.mark.parametrize(
    ("answers", "says"),
    [
        (("decline",), "access to Google Drive was declined: run again and allow it"),
        (("ignore",) * 3, "the Drive consent dialog was not answered"),
    ],
    ids=["declined", "unanswered"],
)
def test_the_consent_dialog_declined_or_unanswered_is_one_line_from_setup(
    tmp_path, colab_drive, answers, says
):
    colab_drive.answer_consent(*answers)
    with pytest.raises(DriveError) as raised:
        setup("r1", environment=colab_env(tmp_path), accelerator=accelerator("t4"),
              clock=FakeClock(), show=False)  # fmt: skip
    assert says in str(raised.value) and "\n" not in str(raised.value)
    assert len(colab_drive.calls) == len(answers)  # a declined dialog is not asked again
    assert not (tmp_path / "content").exists() and not (tmp_path / "drive" / "MyDrive").exists()


def test_require_gpu_fails_before_drive_is_touched_or_anything_is_created(tmp_path, colab_drive):
    with pytest.raises(AcceleratorError, match="Runtime → Change runtime type → GPU"):
        setup(
            "r1",
            require_gpu=True,
            environment=colab_env(tmp_path),
            accelerator=accelerator(None),
            show=False,
        )
    assert colab_drive.calls == [] and not (tmp_path / "content").exists()


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"run_name": "a/b"}, "run_name"),
        ({"drive": "yes please"}, None),
        ({"drive": ""}, "drive"),
        ({"drive": 1}, "drive"),
        ({"session_limit": "forever"}, "session_limit"),
        ({"require_gpu": "yes"}, "require_gpu"),
    ],
)
def test_bad_arguments_fail_before_anything_happens(tmp_path, monkeypatch, kwargs, name):
    monkeypatch.chdir(tmp_path)  # a relative folder lands here, not in the repository
    if name is None:  # a string that is not "auto" is a folder path: valid
        setup(environment=local_env(tmp_path), accelerator=accelerator(None), show=False, **kwargs)
        assert (tmp_path / kwargs["drive"]).is_dir()
        return
    with pytest.raises(ConfigError, match=f"argument `{name}`"):
        setup(environment=local_env(tmp_path), accelerator=accelerator(None), show=False, **kwargs)
    assert not (tmp_path / "runs").exists()


def test_drive_true_outside_colab_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="Drive mounts only in Colab"):
        setup("r", drive=True, environment=local_env(tmp_path), accelerator=accelerator(None))


def test_session_limit_applies_to_an_injected_environment(tmp_path):
    session = setup(
        "r", session_limit="24h", environment=local_env(tmp_path), accelerator=accelerator(None),
        show=False,
    )  # fmt: skip
    assert session.environment.session_limit_s == 24 * 3600


def test_html_summary_in_a_notebook_kernel(tmp_path, monkeypatch):
    shown = []
    fake_ipython = types.ModuleType("IPython")
    fake_ipython.get_ipython = lambda: types.SimpleNamespace(kernel=object())
    monkeypatch.setitem(sys.modules, "IPython", fake_ipython)
    display = types.ModuleType("IPython.display")
    display.HTML = lambda html: ("HTML", html)
    display.display = shown.append
    monkeypatch.setitem(sys.modules, "IPython.display", display)
    setup("r1", environment=local_env(tmp_path), accelerator=accelerator("l4"))
    ((kind, html),) = shown
    assert kind == "HTML" and "<table>" in html and "NVIDIA L4" in html


def test_html_is_escaped(tmp_path):
    env = local_env(tmp_path)
    session = setup("r1", drive=tmp_path / "<b>", environment=env, accelerator=accelerator(None))
    html = session._repr_html_()
    assert "&lt;b&gt;" in html and "<b>/r1" not in html
    assert "No NVIDIA GPU found" in html


def test_setup_shows_a_finding_with_the_fix_when_the_data_is_on_the_drive_mount(tmp_path):
    env = local_env(tmp_path)
    session = setup(
        "s", environment=env, accelerator=accelerator("t4"), show=False,
        data="/content/drive/MyDrive/data/train",
    )  # fmt: skip
    (finding,) = [f for f in session.findings if f.code == "data-on-drive-mount"]
    assert "colabkit.stage('/content/drive/MyDrive/data/train')" in finding.fix
    assert finding.fix in session.summary_text()
    assert "colabkit.stage(&#x27;/content/drive/MyDrive/data/train&#x27;)" in session._repr_html_()
    local = setup("t", environment=env, accelerator=accelerator("t4"), show=False, data=tmp_path)
    assert "data-on-drive-mount" not in [f.code for f in local.findings]


def test_fit_into_the_drive_folder_before_mounting_refuses_and_setup_then_works(
    tmp_path, colab_drive, monkeypatch
):
    """The common slip: run_dir on /content/drive in a new session, without setup() first.
    It would train onto local disk (lost with the VM, and Drive could not mount over it)."""
    import keras
    import numpy as np

    import colabkit.env

    monkeypatch.setattr(colabkit.env, "COLAB_DRIVE_MOUNTPOINT", tmp_path / "drive")
    run_dir = tmp_path / "drive" / "MyDrive" / "colabkit" / "exp"
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x = np.zeros((32, 3), "float32")
    train = dict(run_dir=run_dir, epochs=1, batch_size=8, session_limit=False, verbose=0,
                 cache_dir=tmp_path / "cache")  # fmt: skip
    with pytest.raises(OSError, match="Google Drive is not mounted at") as refused:
        colabkit.fit(model, x, x[:, :1], **train)
    assert "\n" not in str(refused.value) and "Mount it first" in str(refused.value)
    assert not (tmp_path / "drive").exists()
    setup("exp", environment=colab_env(tmp_path), accelerator=accelerator("t4"), show=False)
    assert colabkit.fit(model, x, x[:, :1], **train).completed
    assert any((run_dir / "checkpoints").glob("ckpt-*.ckpt"))

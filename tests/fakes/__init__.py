"""Test doubles for the environment work: a fake ``google.colab`` and a fake ``nvidia-smi``.

``tests/fakes`` is put on ``sys.path`` (or ``PATH`` for ``bin/``) by the tests that need them;
``google`` has no ``__init__.py`` here so it merges with the installed ``google`` namespace
(google-auth, googleapiclient) instead of hiding it.
"""

from __future__ import annotations

from pathlib import Path

FAKES = Path(__file__).resolve().parent
BIN = FAKES / "bin"
NVIDIA_SMI = FAKES / "nvidia_smi"


def nvidia_smi_output(name: str) -> str:
    """The ``nvidia-smi --query-gpu=...`` output called ``name`` (e.g. ``"t4"``).

    Typed in nvidia-smi's exact CSV format with each board's real name and memory, not captured
    on the board (see nvidia_smi/README.md).
    """
    return (NVIDIA_SMI / f"{name}.csv").read_text()


def fake_colab_drive(monkeypatch):
    """Imports the fake ``google.colab.drive`` the way a user imports the real one.

    Yields the module, reset; afterwards ``google.colab`` is gone from ``sys.modules`` again.
    colabkit reads the fake's mount table instead of ``/proc/mounts``. Use as the body of a
    fixture: ``yield from fake_colab_drive(monkeypatch)``.
    """
    import importlib
    import sys
    import tempfile

    import colabkit.env

    names = ("google.colab", "google.colab.drive")
    monkeypatch.syspath_prepend(str(FAKES))
    for name in names:
        monkeypatch.delitem(sys.modules, name, raising=False)
    module = importlib.import_module("google.colab.drive")
    table = tempfile.NamedTemporaryFile("w", suffix=".mounts", delete=False)  # noqa: SIM115
    table.close()
    module.mount_table = table.name
    monkeypatch.setattr(colabkit.env, "MOUNT_TABLE", table.name)
    module.reset()
    yield module
    Path(table.name).unlink(missing_ok=True)
    module.reset()
    for name in names:
        sys.modules.pop(name, None)


def mount_table(monkeypatch, folder: Path, *drive_mountpoints: Path) -> Path:
    """A mount table (``/proc/mounts``' format) listing Google Drive at ``drive_mountpoints``,
    which colabkit reads instead of the machine's."""
    import colabkit.env

    lines = ["proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0"]
    lines += [f"drive {mp} fuse.drive rw,nosuid,nodev,relatime 0 0" for mp in drive_mountpoints]
    table = folder / "mounts"
    table.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(colabkit.env, "MOUNT_TABLE", str(table))
    return table

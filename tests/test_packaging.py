"""colabkit never breaks a user's Colab: no tensorflow pin, keras lower bound only, light import."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ["tensorflow", "google.colab", "keras", "jax", "torch", "IPython"]


def _dependencies() -> list[str]:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["dependencies"]


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_core_dependencies_never_include_tensorflow():
    names = [_name(r) for r in _dependencies()]
    assert not [n for n in names if n.startswith(("tensorflow", "tf-", "tf-nightly"))]


def test_keras_has_a_lower_bound_only():
    (keras,) = [r for r in _dependencies() if _name(r) == "keras"]
    specifiers = re.findall(r"(==|!=|<=|>=|~=|<|>|===)", keras)
    assert specifiers and set(specifiers) == {">="}, keras


def _imported_after(statement: str) -> dict[str, bool]:
    code = (
        f"import json, sys\n{statement}\n"
        f"print(json.dumps({{m: m in sys.modules for m in {HEAVY!r}}}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "statement",
    [
        "import colabkit",
        "import colabkit, colabkit.env, colabkit.gpu, colabkit.drive, colabkit.session",
        "import colabkit.doctor, colabkit.cli, colabkit.duration; colabkit.setup",
    ],
)
def test_import_is_light(statement):
    imported = _imported_after(statement)
    assert not any(imported.values()), imported

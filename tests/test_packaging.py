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


def _project() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]


def _canonical(name: str) -> str:
    """PEP 503 normalisation."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _dependencies() -> list[str]:
    return _project()["dependencies"]


def _name(requirement: str) -> str:
    return _canonical(re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0])


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


# -- the distribution name ---------------------------------------------------------------------

# `colabkit` on the package index is an unrelated project (ColabKit 0.0.1, media helpers, whose
# wheel holds only `ColabKit/`): `pip install colabkit` installs that and `import colabkit` fails.
TAKEN = {"colabkit"}


def _confusable(name: str) -> str:
    """The index's stricter check for new names: separators dropped, o/0 and l/i/1 folded."""
    return _canonical(name).replace("-", "").translate(str.maketrans("oli", "011"))


def _install_lines(text: str) -> list[str]:
    return re.findall(r"pip install[^\n`]*", text)


def _notebook_text(path: Path) -> str:
    cells = json.loads(path.read_text())["cells"]
    return "\n".join("".join(c["source"]) for c in cells)


def _colabkit_requirements(line: str) -> list[str]:
    """The requirement names in an install line that mean this project (anything 'colabkit')."""
    names = []
    for token in line.split()[2:]:
        token = token.strip("'\"")
        if token.startswith("-"):
            continue
        name = re.match(r"[A-Za-z0-9._-]*", token).group(0)  # up to [extras], ==, ), ...
        if "colabkit" in name.lower():
            names.append(name)
    return names


def test_the_distribution_name_is_not_a_taken_one():
    name = _project()["name"]
    assert _confusable(name) not in {_confusable(t) for t in TAKEN}, name


@pytest.mark.parametrize(
    "document", ["README.md", "docs/user-guide.md", "examples/colab_mnist.ipynb"]
)
def test_the_first_cell_installs_the_name_in_pyproject(document):
    path = ROOT / document
    text = _notebook_text(path) if path.suffix == ".ipynb" else path.read_text()
    name = _canonical(_project()["name"])
    first_cell = [line for line in _install_lines(text) if line.startswith("pip install -q ")]
    assert first_cell, f"{document} has no `%pip install -q ...` line"
    assert [_canonical(n) for n in _colabkit_requirements(first_cell[0])] == [name]


def test_every_install_line_that_names_colabkit_installs_this_project():
    name = _canonical(_project()["name"])
    texts = {p: p.read_text() for p in ROOT.glob("*.md") if p.name != "CHANGELOG.md"}  # history
    texts.update({p: p.read_text() for p in (ROOT / "docs").glob("*.md")})
    texts.update({p: p.read_text() for p in (ROOT / "colabkit").rglob("*.py")})
    texts.update({p: _notebook_text(p) for p in (ROOT / "examples").glob("*.ipynb")})
    wrong = {
        (str(path.relative_to(ROOT)), line)
        for path, text in texts.items()
        for line in _install_lines(text)
        for requirement in _colabkit_requirements(line)
        if _canonical(requirement) != name
    }
    assert not wrong, wrong
    lines = [line for text in texts.values() for line in _install_lines(text)]
    assert sum(bool(_colabkit_requirements(line)) for line in lines) >= 5


def test_the_version_has_one_source_and_a_changelog_entry():
    import colabkit

    project = _project()
    assert "version" not in project and "version" in project["dynamic"]
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert re.search(rf"^## {re.escape(colabkit.__version__)}\b", changelog, re.M), (
        f"CHANGELOG.md has no '## {colabkit.__version__}' section"
    )


def test_the_installed_metadata_is_this_version():
    from importlib import metadata

    import colabkit

    assert metadata.version(_project()["name"]) == colabkit.__version__


def test_classifiers_name_every_python_from_the_floor_to_colabs():
    project = _project()
    assert project["requires-python"] == ">=3.10"
    pythons = {
        c.rsplit(" ", 1)[1]
        for c in project["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    }
    assert pythons == {"3.10", "3.11", "3.12", "3.13"}

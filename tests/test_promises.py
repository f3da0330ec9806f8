"""docs/promises.md ties each README promise to what backs it; this keeps that list true.

Every test named there exists, every script or file exists, every README section has a row, and
every event of the README's "What survives what" table is listed. BENCHMARKS.md's sections each
name the commit they were measured on (bench/stale.py reads those markers).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMISES = ROOT / "docs" / "promises.md"


def _rows() -> list[tuple[str, str, str]]:
    rows = []
    for line in PROMISES.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0] not in ("README section", "---"):
            rows.append((cells[0], cells[1], cells[2]))
    return rows


def _readme_sections() -> list[str]:
    return re.findall(r"^## (.+)$", (ROOT / "README.md").read_text(), re.M)


def _survives_events() -> list[str]:
    text = (ROOT / "README.md").read_text().split("## What survives what", 1)[1]
    table = text.split("\n## ", 1)[0]
    events = []
    for line in table.splitlines():
        if line.startswith("| ") and not line.startswith(("| Event", "|---")):
            events.append(line.split("|")[1].strip())
    return events


def test_every_named_test_and_script_exists():
    references = [ref for _, _, backed in _rows() for ref in re.findall(r"`([^`]+)`", backed)]
    assert len(references) >= 40
    missing = []
    for ref in references:
        path, _, test = ref.partition("::")
        defined = rf"^def {re.escape(test)}\("
        if not (ROOT / path).exists() or (
            test and not re.search(defined, (ROOT / path).read_text(), re.M)
        ):
            missing.append(ref)
    assert not missing, missing


def test_every_readme_section_has_a_row():
    sections = {section for section, _, _ in _rows()}
    assert set(_readme_sections()) <= sections, set(_readme_sections()) - sections
    assert sections <= set(_readme_sections()), sections - set(_readme_sections())


def test_every_event_of_what_survives_what_is_listed():
    listed = {promise for section, promise, _ in _rows() if section == "What survives what"}
    events = _survives_events()
    assert len(events) >= 10
    missing = [e for e in events if not any(e.startswith(p) or p.startswith(e) for p in listed)]
    assert not missing, missing


def test_every_row_is_backed_or_says_why_not():
    unbacked = [
        promise for _, promise, backed in _rows() if "`" not in backed and "no test" not in backed
    ]
    assert not unbacked, unbacked


def test_every_benchmark_section_names_the_commit_it_was_measured_on():
    text = (ROOT / "BENCHMARKS.md").read_text()
    sections = [s for s in re.split(r"^## ", text, flags=re.M)[1:] if not s.startswith("Summary")]
    assert sections
    for section in sections:
        markers = re.findall(r"<!-- measured: ([0-9a-f]{7,40}); code: ([^>]+?) -->", section)
        assert len(markers) == 1, section.splitlines()[0]
        paths = markers[0][1].split()
        assert all(_source(p).exists() for p in paths), (section.splitlines()[0], paths)


def _source(path: str) -> Path:
    """``path`` in this tree; ``colabkit/...`` where the imported package is (CI's runtime legs
    test the installed wheel from a tree without colabkit/)."""
    if path.split("/", 1)[0] == "colabkit":
        import colabkit

        return Path(colabkit.__file__).parents[1] / path
    return ROOT / path

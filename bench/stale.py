"""Lists the tables of BENCHMARKS.md that are older than the code they describe.

Each measured section of BENCHMARKS.md carries one marker naming the commit its figures were
measured on and the code they describe:

    <!-- measured: 543e346; code: colabkit/training colabkit/checkpoint bench/bench_fit.py -->

For each, this prints the commits since then that changed that code (newest first), or "current".
It only reports (exit 0); a figure is re-measured by rerunning the section's command.

    python bench/stale.py [BENCHMARKS.md]
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"<!-- measured: ([0-9a-f]{7,40}); code: ([^>]+?) -->")


def sections(text: str) -> list[tuple[str, str, list[str]]]:
    """(heading, commit, code paths) for every marked section, in document order."""
    found, heading = [], None
    for line in text.splitlines():
        if line.startswith("## "):
            heading = line[3:].strip()
        match = MARKER.search(line)
        if match:
            found.append((heading or "(top)", match.group(1), match.group(2).split()))
    return found


def changes_since(commit: str, paths: list[str]) -> list[str]:
    out = subprocess.run(
        ["git", "log", "--format=%h %ad %s", "--date=short", f"{commit}..HEAD", "--", *paths],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout.splitlines()


def main(path: Path) -> int:
    for heading, commit, paths in sections(path.read_text()):
        changes = changes_since(commit, paths)
        if not changes:
            print(f"current  {heading} (measured on {commit})")
            continue
        print(f"STALE    {heading} (measured on {commit}; {len(changes)} later commits change it)")
        for change in changes[:5]:
            print(f"           {change[:96]}")
        if len(changes) > 5:
            print(f"           ... and {len(changes) - 5} more")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "BENCHMARKS.md"))

"""Checks the built release artifacts: python .ci/check_dist.py DIST_DIR.

The wheel holds colabkit/ (every module of the source tree) and its metadata only, under the
pyproject's name and colabkit.__version__; its requirements never name tensorflow and give keras
a lower bound only. The sdist holds the whole test suite. Exit 1 with one line per problem.
"""

from __future__ import annotations

import email.parser
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def main(dist: Path) -> list[str]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    version = re.search(
        r'^__version__ = "([^"]+)"', (ROOT / "colabkit/__init__.py").read_text(), re.M
    ).group(1)
    stem = re.sub(r"[-_.]+", "_", project["name"]).lower() + f"-{version}"
    problems = []

    wheels = sorted(dist.glob(f"{stem}-py3-none-any.whl"))
    sdists = sorted(dist.glob(f"{stem}.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        return [f"expected one {stem} wheel and sdist in {dist}, found {wheels + sdists}"]

    with zipfile.ZipFile(wheels[0]) as wheel:
        names = wheel.namelist()
        info = f"{stem}.dist-info/"
        stray = [n for n in names if not n.startswith(("colabkit/", info))]
        if stray:
            problems.append(f"the wheel holds more than colabkit/ and its metadata: {stray}")
        tracked = subprocess.run(
            ["git", "ls-files", "colabkit"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split()
        missing = sorted(set(tracked) - set(names))
        if missing:
            problems.append(f"the wheel lacks modules of the source tree: {missing}")
        metadata = email.parser.Parser().parsestr(wheel.read(info + "METADATA").decode())

    if metadata["Name"] != project["name"] or metadata["Version"] != version:
        problems.append(f"wheel metadata names {metadata['Name']} {metadata['Version']}")
    if metadata["Requires-Python"] != project["requires-python"]:
        problems.append(f"Requires-Python is {metadata['Requires-Python']}")
    core = [r for r in metadata.get_all("Requires-Dist") or [] if "extra ==" not in r]
    if any(r.lower().startswith(("tensorflow", "tf-", "tf_")) for r in core):
        problems.append(f"a core requirement names tensorflow: {core}")
    keras = [r for r in core if re.match(r"keras\b", r)]
    if len(keras) != 1 or set(re.findall(r"[<>=!~]=?", keras[0])) != {">="}:
        problems.append(f"keras must have a lower bound only: {keras}")

    with tarfile.open(sdists[0]) as sdist:
        members = {m.split("/", 1)[1] for m in sdist.getnames() if "/" in m}
    needed = {"tests/conftest.py", "tests/fake_drive.py", "LICENSE", "CHANGELOG.md", "README.md"}
    if not needed <= members:
        problems.append(f"the sdist lacks {sorted(needed - members)}")
    return problems


if __name__ == "__main__":
    found = main(Path(sys.argv[1]))
    for line in found:
        print(f"check_dist: {line}", file=sys.stderr)
    if not found:
        print("check_dist: wheel and sdist OK")
    sys.exit(1 if found else 0)

"""Mutation testing: each module of the recent features against its own tests (issue 28, item 3).

    python bench/mutation.py                        # every module, 90 minutes at most
    python bench/mutation.py forecast ending        # these modules only
    python bench/mutation.py --minutes 20 --jobs 1  # a tighter bound, one test process

For each module below, mutmut (3.8, the `dev` extra) makes small changes to its functions, one
at a time (a `<` for a `<=`, a string for another, a condition forced true...), and runs the
module's own tests, and only those of them that call the changed function, against each change.
A change no test notices "survived": a test is missing, or the change is equivalent (it cannot
alter behaviour); docs/mutants.md names the equivalent ones, and the few that a test kills only
outside mutmut (a warning's stacklevel: mutmut's trampolines add stack frames), and this table
counts them apart.

Each module runs in its own workspace, `.mutation/<name>/` (git-ignored): links to colabkit/ and
tests/ and a pyproject.toml made from the repository's with a `[tool.mutmut]` table naming the
module and its tests, so no module's tests or results leak into another's. mutmut copies the tree
into `.mutation/<name>/mutants/`; a run starts from a fresh one. Afterwards, from that folder,
`mutmut show NAME` shows a mutant and `mutmut browse` all of them; `survivors.txt` holds the
diff of every mutant that was not killed.

The bound: `--minutes` for the whole run (a module still running then is stopped, its table row
counts what it had checked and says how many it had not), and per mutant mutmut's own limit,
`--timeout-factor` times the clean run time of the tests it runs plus `--timeout-extra` seconds;
a mutant past it counts as killed (the tests noticed: they hung), in its own column.
Tests that start subprocesses (colabkit imported again, seconds each) are left out of the scopes
(`deselect`), and so are the status tests that train Keras (test_status_report.py kills every
mutant they kill, without training); the suite runs them as usual. mutmut forks its test
processes from a fork server (`process_isolation = "forkserver"`): forked straight from a
process that trained with TensorFlow, a test that trains again can hang.

Not a test: it prints a table and never fails on a score.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKSPACES = ROOT / ".mutation"
EQUIVALENT = ROOT / "docs" / "mutants.md"


@dataclass(frozen=True)
class Scope:
    """A module and the tests that are its own (`deselect`: node ids left out, see above)."""

    name: str
    module: str
    tests: tuple[str, ...]
    deselect: tuple[str, ...] = ()


PLAN = ("tests/test_plan.py", "tests/test_plan_behaviour.py")
ENDING = ("tests/test_ending.py", "tests/test_ending_behaviour.py")
STAGE = ("tests/test_stage_job.py", "tests/test_stage.py", "tests/test_stage_behaviour.py")
SCOPES = (
    Scope("forecast", "colabkit/forecast.py", PLAN),
    Scope(
        "validate",
        "colabkit/validate.py",
        ("tests/test_validate.py",),
        deselect=(  # stacklevels: mutmut's trampolines add frames (docs/mutants.md)
            "tests/test_validate.py::"
            "test_the_deprecation_warnings_point_at_the_line_that_uses_the_old_name",
        ),
    ),
    Scope(
        "run_state",
        "colabkit/checkpoint/run_state.py",
        ("tests/test_run_state.py",),
        deselect=("tests/test_run_state.py::test_it_is_read_without_keras",),
    ),
    Scope(
        "space",
        "colabkit/checkpoint/space.py",
        ("tests/test_checkpoint_space.py", "tests/test_drive_space.py"),
    ),
    Scope("policy", "colabkit/checkpoint/policy.py", ("tests/test_checkpoint_policy.py",)),
    Scope("chain", "colabkit/checkpoint/chain.py", ("tests/test_sessions.py",)),
    Scope("duration", "colabkit/duration.py", ("tests/test_env.py",)),
    Scope("ending", "colabkit/ending.py", ENDING),
    Scope(
        "run_status",
        "colabkit/run_status.py",
        ("tests/test_status.py", "tests/test_status_behaviour.py", "tests/test_status_report.py"),
        # they train Keras (an hour for the module's mutants on 2 busy cores); the suite runs
        # them. test_status_report.py asserts the same lines and fields on runs written without
        # training: alone it kills every mutant of run_status.py that is not equivalent
        deselect=("tests/test_status.py", "tests/test_status_behaviour.py"),
    ),
    Scope(
        "drive_mount",
        "colabkit/storage/drive_mount.py",
        (
            "tests/test_drive_mount.py",
            "tests/test_drive_mount_behaviour.py",
            "tests/test_mount_confirm.py",
            "tests/test_drive_full.py",
            "tests/test_drive_space.py",
        ),
        deselect=(  # 5 to 13 s of real Keras training a mutant; test_drive_mount_behaviour pins
            # what they pin of the store (deleted for good, emptied then deleted, Drive full)
            "tests/test_drive_full.py::test_a_12_hour_run_signed_in_never_holds_more_than_"
            "keep_plus_one_checkpoints_on_drive",
            "tests/test_drive_full.py::test_a_12_hour_run_not_signed_in_warns_before_the_"
            "trash_fills_and_trashes_only_emptied_files",
            "tests/test_drive_full.py::test_drive_full_at_the_5th_save_training_finishes_"
            "warns_by_cause_and_a_new_vm_resumes",
        ),
    ),
    Scope(
        "staging_job",
        "colabkit/staging/job.py",
        STAGE,
        deselect=(
            "tests/test_stage.py::test_a_kill_mid_file_continues_from_that_byte",
            "tests/test_stage.py::test_the_command_prints_the_local_path",
            "tests/test_stage.py::test_doctor_says_when_the_data_is_read_through_the_mount",
        ),
    ),
)


@dataclass
class Score:
    """One module's outcome. Survived: no test noticed (one that no test runs, mutmut's "no
    tests", too), less those docs/mutants.md explains: equivalent, or killed by hand (a test
    that cannot run under mutmut kills it in a plain run). Score: killed, timed out or killed by
    hand, of the mutants that are not equivalent and were run."""

    scope: Scope
    mutants: int = 0
    killed: int = 0
    timeout: int = 0
    by_hand: int = 0
    equivalent: int = 0
    survived: int = 0
    suspicious: int = 0
    not_checked: int = 0
    seconds: float = 0.0
    failed: str = ""

    @property
    def score(self) -> float | None:
        relevant = self.mutants - self.equivalent - self.not_checked
        detected = self.killed + self.timeout + self.by_hand
        return detected / relevant if relevant > 0 else None


def mutmut_config(scope: Scope, args: argparse.Namespace) -> str:
    """The `[tool.mutmut]` table for one module (TOML: JSON strings are TOML strings)."""
    selection = [*scope.tests, *(f"--deselect={test}" for test in scope.deselect)]
    return "\n".join(
        [
            "",
            "[tool.mutmut]",
            'source_paths = ["colabkit"]',
            f"only_mutate = {json.dumps([scope.module])}",
            f"pytest_add_cli_args_test_selection = {json.dumps(selection)}",
            'pytest_add_cli_args = ["-p", "no:cacheprovider", "-m", "not slow"]',
            f"timeout_multiplier = {float(args.timeout_factor)}",
            f"timeout_constant = {float(args.timeout_extra)}",
            'process_isolation = "forkserver"',
            "use_git_change_detection = false",
            "",
        ]
    )


def workspace(scope: Scope, args: argparse.Namespace) -> Path:
    """A fresh `.mutation/<name>/`: links to the code and the tests, and the config."""
    folder = WORKSPACES / scope.name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for part in ("colabkit", "tests"):
        (folder / part).symlink_to(ROOT / part, target_is_directory=True)
    config = (ROOT / "pyproject.toml").read_text()
    if "[tool.mutmut]" in config:
        raise SystemExit("pyproject.toml has a [tool.mutmut] table; this script writes its own")
    (folder / "pyproject.toml").write_text(config + mutmut_config(scope, args))
    return folder


def mutmut(*words: str) -> list[str]:
    """The mutmut command of this Python's environment (`python -m mutmut` imports it twice)."""
    beside = Path(sys.executable).with_name("mutmut")
    command = str(beside) if beside.exists() else shutil.which("mutmut")
    if command is None:
        raise SystemExit("mutmut is not installed: pip install -e '.[dev]'")
    return [command, *words]


def run_mutmut(folder: Path, jobs: int, seconds_left: float) -> str:
    """Runs mutmut in `folder` until it ends or the time is up; "" or why it did not finish.

    A mutant can turn a copy loop into one that never ends: its test writes until mutmut's
    timeout stops it (gigabytes), and pytest leaves each test's folder behind. So the tests'
    folders (and any other temporary file) go under `folder/tmp`, removed after the run, and
    no file may grow past FILE_LIMIT (a write beyond it fails with EFBIG, Python ignoring
    SIGXFSZ: the test fails).
    """
    temp = folder / "tmp"
    temp.mkdir(exist_ok=True)
    env = {**os.environ, "PYTEST_DEBUG_TEMPROOT": str(temp), "TMPDIR": str(temp)}
    try:
        with open(folder / "mutmut.log", "w") as log:
            process = subprocess.Popen(
                mutmut("run", "--max-children", str(jobs)), cwd=folder, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True, env=env,
                preexec_fn=_limit_file_size,
            )  # fmt: skip
            try:
                code = process.wait(timeout=max(seconds_left, 1))
            except subprocess.TimeoutExpired:
                stop(process)
                return "out of time"
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return "" if code == 0 else f"mutmut exited {code} (see {folder / 'mutmut.log'})"


FILE_LIMIT = 1 << 30  # the scopes' tests write 50 MB at most


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_LIMIT, FILE_LIMIT))


def stop(process: subprocess.Popen) -> None:
    """Stops mutmut and the test processes it forked (its own process group)."""
    for sent in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sent)
            process.wait(timeout=10)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def outcomes(folder: Path) -> tuple[dict[str, int], dict[str, str]]:
    """mutmut's counts (export-cicd-stats) and the status of every mutant not killed."""
    subprocess.run(mutmut("export-cicd-stats"), cwd=folder, capture_output=True, check=True)
    counts = json.loads((folder / "mutants" / "mutmut-cicd-stats.json").read_text())
    listed = subprocess.run(
        mutmut("results"), cwd=folder, capture_output=True, text=True,
        check=True,
    ).stdout  # fmt: skip
    statuses = dict(re.findall(r"^\s+(\S+): (.+)$", listed, re.M))
    return counts, statuses


def explained_mutants() -> tuple[set[str], set[str]]:
    """The mutant names docs/mutants.md explains: (those under "## Equivalent", those under
    "## Killed outside mutmut"). A mutant named under any other heading still counts as
    survived."""
    if not EQUIVALENT.exists():
        return set(), set()
    name = re.compile(r"`(colabkit\.\S+__mutmut_\d+)`")
    sections = {
        heading.strip(): set(name.findall(body))
        for heading, _, body in (
            part.partition("\n") for part in EQUIVALENT.read_text().split("\n## ")[1:]
        )
    }
    return sections.get("Equivalent", set()), sections.get("Killed outside mutmut", set())


def write_survivors(folder: Path, statuses: dict[str, str]) -> None:
    """The diff of every mutant not killed, into `survivors.txt`, for the one reading them."""
    with open(folder / "survivors.txt", "w") as out:
        for name in sorted(statuses):
            shown = subprocess.run(mutmut("show", name), cwd=folder, capture_output=True, text=True)
            out.write(f"{shown.stdout}\n")


def measure(scope: Scope, args: argparse.Namespace, seconds_left: float) -> Score:
    """Runs one module's mutants and counts them."""
    started = time.monotonic()
    folder = workspace(scope, args)
    failed = run_mutmut(folder, args.jobs, seconds_left)
    score = Score(scope, failed=failed)
    if (folder / "mutants" / scope.module).exists():
        counts, statuses = outcomes(folder)
        write_survivors(folder, statuses)
        count_into(score, counts, statuses)
    score.seconds = time.monotonic() - started
    return score


def count_into(score: Score, counts: dict[str, int], statuses: dict[str, str]) -> None:
    undetected = {name for name, status in statuses.items() if status in UNDETECTED}
    equivalent, by_hand = explained_mutants()
    left = undetected - equivalent - by_hand
    score.mutants = counts["total"]
    score.killed = counts["killed"]
    score.timeout = counts["timeout"]
    score.equivalent = len(undetected & equivalent)
    score.by_hand = len(undetected & by_hand)
    score.survived = len(left)
    score.suspicious = counts["suspicious"] + counts["segfault"]
    score.not_checked = sum(status == "not checked" for status in statuses.values())
    if left:
        print(
            f"  {score.scope.name}: survived (not equivalent, not killed by hand):", file=sys.stderr
        )
        for name in sorted(left):
            print(f"    {name}", file=sys.stderr)


UNDETECTED = ("survived", "no tests")
COLUMNS = "module | tests | mutants | killed | timeout | killed by hand | equivalent | " \
    "survived | suspicious | not run | score | wall"  # fmt: skip


def row(score: Score) -> str:
    scope = score.scope
    tests = ", ".join(Path(test).name for test in scope.tests)
    shown = "-" if score.score is None else f"{score.score:.1%}"
    cells = [
        f"`{scope.module}`", tests, score.mutants, score.killed, score.timeout, score.by_hand,
        score.equivalent, score.survived, score.suspicious, score.not_checked, shown,
        f"{score.seconds / 60:.1f} min" + (f" ({score.failed})" if score.failed else ""),
    ]  # fmt: skip
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def table(scores: list[Score]) -> str:
    header = f"| {COLUMNS} |\n|" + "---|" * len(COLUMNS.split(" | "))
    return "\n".join([header, *(row(score) for score in scores)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    names = [scope.name for scope in SCOPES]
    parser.add_argument("modules", nargs="*", help=f"some of {', '.join(names)} (default: all)")
    parser.add_argument("--minutes", type=float, default=90, help="for the whole run")
    parser.add_argument("--jobs", type=int, default=2, help="test processes at once")
    parser.add_argument("--timeout-factor", type=float, default=10)
    parser.add_argument("--timeout-extra", type=float, default=2, help="seconds")
    parser.add_argument("--json", type=Path, help="also write the counts here")
    args = parser.parse_args()
    unknown = sorted(set(args.modules) - set(names))
    if unknown:
        parser.error(f"unknown modules {unknown}; known: {', '.join(names)}")
    chosen = [scope for scope in SCOPES if not args.modules or scope.name in args.modules]
    deadline = time.monotonic() + args.minutes * 60
    scores = []
    for scope in chosen:
        left = deadline - time.monotonic()
        if left <= 0:
            scores.append(Score(scope, failed="not started: out of time"))
            continue
        print(f"{scope.name}: {scope.module} against {' '.join(scope.tests)}", flush=True)
        scores.append(measure(scope, args, left))
        print(row(scores[-1]), flush=True)
    print()
    print(table(scores))
    if args.json:
        rows = [{**vars(s), "scope": s.scope.name, "score": s.score} for s in scores]
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The ``colabkit`` command: a thin layer over the library (parse, call, print).

Library errors (:class:`~colabkit.errors.ColabkitError`) become one ``Error: ...`` line on stderr
and exit code 1; usage errors exit 2 (argparse).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from colabkit import __version__
from colabkit.errors import ColabkitError


def _cmd_doctor(args: argparse.Namespace) -> int:
    raise NotImplementedError("doctor")  # filled in by the environment work (issue 2)


def _cmd_ckpt_ls(args: argparse.Namespace) -> int:
    raise NotImplementedError("ckpt ls")  # filled in by the checkpoint work (issue 3)


def _cmd_ckpt_verify(args: argparse.Namespace) -> int:
    raise NotImplementedError("ckpt verify")


def _cmd_ckpt_prune(args: argparse.Namespace) -> int:
    raise NotImplementedError("ckpt prune")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="colabkit",
        description="Keras training that survives Google Colab.",
    )
    parser.add_argument("--version", action="version", version=f"colabkit {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    doctor = commands.add_parser(
        "doctor",
        help="Report where this runs, the accelerator, Drive and session time, with fixes.",
        description="Report where this runs (Colab, Kaggle, local), which accelerator each "
        "framework sees, Drive status and session time left, with the fix for each problem.",
    )
    doctor.add_argument("--json", action="store_true", help="print the report as JSON")
    doctor.add_argument(
        "--require-gpu", action="store_true", help="exit 1 with the fix when no GPU is usable"
    )
    doctor.set_defaults(func=_cmd_doctor)

    ckpt = commands.add_parser(
        "ckpt",
        help="List, verify or prune the checkpoints of a run.",
        description="List, verify or prune the checkpoints of a run directory.",
    )
    ckpt_commands = ckpt.add_subparsers(dest="ckpt_command", metavar="ACTION", required=True)
    ls = ckpt_commands.add_parser(
        "ls",
        help="List checkpoints: step, epoch, size, age, verified.",
        description="List the checkpoints of RUN_DIR: step, epoch, size, age, verified.",
    )
    ls.add_argument("run_dir", metavar="RUN_DIR")
    ls.add_argument("--json", action="store_true", help="print the list as JSON")
    ls.set_defaults(func=_cmd_ckpt_ls)
    verify = ckpt_commands.add_parser(
        "verify",
        help="Verify the newest checkpoint (exit 1 naming it if it is bad).",
        description="Verify the checkpoints of RUN_DIR; exit 1 naming the bad checkpoint if "
        "the newest does not verify.",
    )
    verify.add_argument("run_dir", metavar="RUN_DIR")
    verify.add_argument("--json", action="store_true", help="print the result as JSON")
    verify.set_defaults(func=_cmd_ckpt_verify)
    prune = ckpt_commands.add_parser(
        "prune",
        help="Keep the newest N verified checkpoints, delete older ones.",
        description="Delete all but the newest N checkpoints of RUN_DIR; the newest verified "
        "checkpoint is never deleted.",
    )
    prune.add_argument("run_dir", metavar="RUN_DIR")
    prune.add_argument("--keep", type=int, required=True, metavar="N", help="how many to keep")
    prune.add_argument("--json", action="store_true", help="print what was deleted as JSON")
    prune.set_defaults(func=_cmd_ckpt_prune)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ColabkitError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

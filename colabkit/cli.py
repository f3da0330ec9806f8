"""The ``colabkit`` command: a thin layer over the library (parse, call, print).

Library errors (:class:`~colabkit.errors.ColabkitError`) become one ``Error: ...`` line on stderr
and exit code 1; usage errors exit 2 (argparse).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from colabkit import __version__
from colabkit.errors import ColabkitError
from colabkit.validate import positive_int


def _cmd_doctor(args: argparse.Namespace) -> int:
    import json

    from colabkit.doctor import diagnose
    from colabkit.gpu import require_gpu

    report = diagnose(
        session_limit=args.session_limit, frameworks=args.frameworks, data=args.data or ()
    )
    if args.json:
        print(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    else:
        print(report.text())
    if args.require_gpu:
        require_gpu(report.accelerator)  # AcceleratorError: "Error: ... Fix: ..." and exit 1
    return 0


def _cmd_ckpt_ls(args: argparse.Namespace) -> int:
    import json

    from colabkit.checkpoint import inventory

    store = inventory.run_store(args.run_dir)
    statuses = inventory.inspect_store(store)
    if args.json:
        print(json.dumps([s.to_json() for s in statuses], indent=2))
    elif not statuses:
        print(inventory.nothing_found(store))
    else:
        print(inventory.format_table(statuses))
    return 0


def _cmd_ckpt_verify(args: argparse.Namespace) -> int:
    import json

    from colabkit.checkpoint import inventory

    store = inventory.run_store(args.run_dir)
    statuses = inventory.inspect_store(store)
    if args.json:
        print(json.dumps({"store": store.url, "checkpoints": [s.to_json() for s in statuses]}))
    else:
        for status in statuses:
            mark = "ok " if status.verified else "BAD"
            note = "superseded: another session's trajectory" if status.superseded else ""
            print(f"{mark} {status.name}  {status.problem or note}".rstrip())
    own = inventory.in_use(statuses)
    if not own:
        raise ColabkitError(f"{inventory.nothing_found(store)}: nothing to resume from")
    if not own[0].verified:
        good = next((s.name for s in own if s.verified), None)
        fallback = f"resume would use {good}" if good else "no checkpoint verifies"
        raise ColabkitError(f"newest checkpoint {own[0].name} does not verify ({fallback})")
    return 0


def _cmd_ckpt_prune(args: argparse.Namespace) -> int:
    import json

    from colabkit.checkpoint import inventory

    store = inventory.run_store(args.run_dir)
    statuses = inventory.inspect_store(store)
    deleted = inventory.prune(store, args.keep, statuses)
    if args.json:
        print(json.dumps({"store": store.url, "deleted": deleted}))
    elif not statuses:
        print(inventory.nothing_found(store))
    else:
        kept = len(statuses) - len(deleted)
        print(f"deleted {len(deleted)}, kept {kept} checkpoint(s) in {store.url}")
        for name in deleted:
            print(f"  deleted {name}")
    return 0


def _cmd_ckpt_purge(args: argparse.Namespace) -> int:
    import json

    from colabkit.checkpoint import inventory, space
    from colabkit.duration import format_size

    store = inventory.run_store(args.run_dir)
    purged = inventory.purge_trash(store)
    freed = sum(info.size for info in purged)
    if args.json:
        deleted = [{"name": info.name, "size": info.size} for info in purged]
        print(json.dumps({"store": store.url, "deleted": deleted, "freed": freed}))
    elif not space.on_drive(store):
        print(f"nothing to purge: {store.url} is not on Google Drive (deleting there is final)")
    else:
        print(
            f"deleted {len(purged)} file(s) of this run from Drive's trash for good, "
            f"freeing {format_size(freed)} ({store.url})"
        )
        for info in purged:
            print(f"  deleted {info.name} ({format_size(info.size)})")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    import json

    from colabkit import env, run_status

    run_dir = args.run_dir if args.run_dir is not None else env.default_run_dir("mnist")
    report = run_status.status(run_dir)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(report.text())
    return 0


@contextlib.contextmanager
def _log_to_stderr() -> Iterator[None]:
    """colabkit's INFO lines on stderr while a command runs, unless the caller configured
    logging itself; taken off again after (``main()`` called twice in one process, a notebook
    or a test, must not leave a handler on a stream that has since closed)."""
    logger = logging.getLogger("colabkit")
    if logger.handlers:
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("colabkit: %(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _cmd_stage(args: argparse.Namespace) -> int:
    from colabkit.staging import stage

    with _log_to_stderr():  # retries, "staged already"
        print(stage(args.source, args.dest))
    return 0


#: Exit status of `colabkit train` when it stopped cleanly before the end (the session limit):
#: EX_TEMPFAIL, "try again later" -- the next run continues.
EXIT_STOPPED = 75


def _cmd_train_mnist(args: argparse.Namespace) -> int:
    from colabkit import mnist

    given = {name: getattr(args, name) for name in mnist.command_line_options()}
    if given["run_dir"] is None:
        given["run_dir"] = mnist.default_run_dir()
    config = mnist.MnistConfig(**given)
    from colabkit.tf_noise import quiet_tensorflow

    try:
        with quiet_tensorflow(), _log_to_stderr():  # one line per checkpoint/resume event
            result = mnist.train(config)
    except mnist.TrainingStopped as stopped:
        print(f"colabkit: {stopped}", file=sys.stderr)
        return EXIT_STOPPED
    print(mnist.results_text(result.test_loss, result.test_accuracy), end="")
    print(f"Outputs: {result.outputs_dir}")
    return 0


def _add_train_parser(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser(
        "train",
        help="Train a built-in model resumably (re-run the same command to continue).",
        description="Train a built-in model with verified checkpoints; re-running the same "
        "command continues from the newest verified checkpoint.",
    )
    actions = train.add_subparsers(dest="train_command", metavar="MODEL", required=True)
    mnist = actions.add_parser(
        "mnist",
        help="The Keras MNIST convnet tutorial (15 epochs, batch 128, Adam).",
        description="Train the Keras MNIST convnet tutorial resumably. Writes checkpoints/ and "
        "outputs/ (results.txt, predictions.npy, mnist_model.keras, history.json, "
        "learning_curve.png) under the run directory. Re-run the same command to continue; a "
        "finished run prints its results.",
    )
    _add_mnist_arguments(mnist)
    mnist.set_defaults(func=_cmd_train_mnist)


def _add_mnist_arguments(mnist_parser: argparse.ArgumentParser) -> None:
    """The options of ``MnistConfig``'s fields, as each field declares them."""
    from colabkit import mnist

    for name, (option, default, check) in mnist.command_line_options().items():
        help_line = argparse.SUPPRESS if option.help is None else option.help
        if option.parse is None:  # a switch
            mnist_parser.add_argument(option.flag, dest=name, action="store_true", help=help_line)
            continue
        mnist_parser.add_argument(
            option.flag,
            dest=name,
            type=option_type(name, option.flag, option.parse, check),
            default=default,
            metavar=option.metavar,
            help=help_line,
        )


class BadOption(Exception):
    """A value an option's validator refused, on its way out of argparse (which would turn
    a ``ValueError`` such as ``ConfigError`` into its own usage line and lose the reason)."""

    def __init__(self, error: ColabkitError, name: str, flag: str) -> None:
        super().__init__(str(error))
        self.error, self.options = error, {name: flag}


def option_type(
    name: str, flag: str, parse: Callable[[str], Any], check: Callable[[str, Any], Any] | None
) -> Callable[[str], Any]:
    """An argparse ``type=`` from a colabkit validator (``colabkit.validate``): the text
    parsed (``int``), then checked under the argument's Python ``name``."""

    def convert(text: str) -> Any:
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"invalid {getattr(parse, '__name__', 'value')} value: {text!r}"
            ) from None
        if check is None:
            return value
        try:
            return check(name, value)
        except ColabkitError as e:
            raise BadOption(e, name, flag) from None

    return convert


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
    doctor.add_argument(
        "--session-limit",
        default="auto",
        metavar="DURATION",
        help="session limit to count time left against: 'auto' (the default) is 12h in Colab "
        "and Kaggle and none elsewhere; 24h on paid plans",
    )
    doctor.add_argument(
        "--frameworks",
        default="tensorflow,jax,torch",
        metavar="NAMES",
        help="comma-separated frameworks to ask, each in a subprocess (default "
        "tensorflow,jax,torch; 'none' for a fast report without them)",
    )
    doctor.add_argument(
        "--data",
        action="append",
        metavar="PATH",
        help="where the training data is: a finding (and the fix) if it is read through the "
        "Drive mount; may be repeated",
    )
    doctor.set_defaults(func=_cmd_doctor)

    stage = commands.add_parser(
        "stage",
        help="Copy training data from Drive or a bucket to fast local disk; print its path.",
        description="Copy a file, folder or archive (zip, tar, tar.gz: extracted) from the "
        "Drive mount, gdrive://folder/path, a bucket (gs://...) or a local path to fast local "
        "disk, verified; a second run returns at once while the source is unchanged, and an "
        "interrupted copy continues. Prints the local path.",
    )
    stage.add_argument("source", help="a path (e.g. /content/drive/MyDrive/data.zip) or URL")
    stage.add_argument(
        "--dest",
        metavar="DIR",
        help="folder to stage into (default: /content/colabkit-data in Colab, "
        "~/.cache/colabkit/data elsewhere)",
    )
    stage.set_defaults(func=_cmd_stage)

    ckpt = commands.add_parser(
        "ckpt",
        help="List, verify, prune or purge the checkpoints of a run.",
        description="List, verify, prune or purge the checkpoints of a run directory.",
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
    prune.add_argument(
        "--keep",
        type=option_type("keep", "--keep", int, positive_int),
        required=True,
        metavar="N",
        help="how many to keep",
    )
    prune.add_argument("--json", action="store_true", help="print what was deleted as JSON")
    prune.set_defaults(func=_cmd_ckpt_prune)
    purge = ckpt_commands.add_parser(
        "purge",
        help="Delete for good this run's checkpoints that sit in Drive's trash.",
        description="Delete for good the checkpoints of RUN_DIR (and their temporary files) "
        "that are in Google Drive's trash, where they count against the quota for 30 days; "
        "nothing else in the trash is touched. Needs the Drive API (a sign-in).",
    )
    purge.add_argument("run_dir", metavar="RUN_DIR")
    purge.add_argument("--json", action="store_true", help="print what was deleted as JSON")
    purge.set_defaults(func=_cmd_ckpt_purge)
    status = commands.add_parser(
        "status",
        help="Where a run is: epochs done, sessions, newest checkpoint, time to finish.",
        description="Where the run in RUN_DIR is, read from its newest durable checkpoint: "
        "epochs done of the total, sessions so far, time trained, the newest checkpoint and "
        "the training time left. Changes nothing.",
    )
    status.add_argument(
        "run_dir",
        nargs="?",
        metavar="RUN_DIR",
        help="run directory or store URL (default: where `colabkit train mnist` runs)",
    )
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.set_defaults(func=_cmd_status)
    _add_train_parser(commands)
    return parser


def _command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub)command parser that parsed ``args``: ``colabkit ckpt ls`` for ``ckpt ls``."""
    for action in parser._actions:  # argparse offers no public walk over subcommands
        if isinstance(action, argparse._SubParsersAction):
            chosen = getattr(args, action.dest, None)
            if chosen in action.choices:
                return _command(action.choices[chosen], args)
    return parser


def _options(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Python argument name -> how the command line names it (``--save-every``, ``RUN_DIR``)."""
    found: dict[str, str] = {}
    for action in parser._actions:
        if action.option_strings:
            found[action.dest] = max(action.option_strings, key=len)
        elif isinstance(action.metavar, str) and action.dest != "help":
            found[action.dest] = action.metavar
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return int(args.func(args) or 0)
    except BadOption as bad:  # nothing ran: the option's value was refused while parsing
        print(f"Error: {bad.error.for_command_line(bad.options)}", file=sys.stderr)
        return 1
    except ColabkitError as e:
        print(f"Error: {e.for_command_line(_options(_command(parser, args)))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `colabkit doctor | head`: the reader left. Quietly, and no second error at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # what a shell reports for a process killed by SIGPIPE


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

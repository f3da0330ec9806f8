"""A training job with a user's TensorBoard and CSVLogger, run as a real subprocess and killed
with SIGKILL between an epoch's end and the commit of its checkpoint (test_logs_behaviour.py).

Usage: python logs_worker.py RUN_DIR LOGS --staging DIR
           [--kill-before-logs-copy STEP] [--kill-at-commit STEP]

The model and data are test_fit's (6 steps an epoch, 3 epochs), checkpointed at each epoch's
end; the logs go to LOGS/tensorboard (update_freq="batch") and LOGS/log.csv.

--kill-before-logs-copy STEP: SIGKILL itself when the checkpoint of STEP is written to staging
    and about to be committed, before the logs are copied for it.
--kill-at-commit STEP: SIGKILL itself when the logs are copied for the checkpoint of STEP and
    its upload into the store begins (the store never gets it).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def arm(before_logs_copy: int | None, at_commit: int | None) -> None:
    from colabkit.checkpoint import checkpoint_name
    from colabkit.checkpoint.manager import CheckpointManager
    from colabkit.storage import LocalStore

    if before_logs_copy is not None:
        name = checkpoint_name(before_logs_copy)
        before_commit = CheckpointManager._before_commit

        def kill_before_logs_copy(self):
            if self._pipeline._uploading == name:  # staged; the logs copy is a commit hook
                die()
            before_commit(self)

        CheckpointManager._before_commit = kill_before_logs_copy
    if at_commit is not None:
        name = checkpoint_name(at_commit)
        put = LocalStore.put

        def kill_at_commit(self, local_path, target):
            if target == name:  # the hooks (the logs copy) have run
                die()
            return put(self, local_path, target)

        LocalStore.put = kill_at_commit


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("run_dir")
    p.add_argument("logs")
    p.add_argument("--staging", required=True)
    p.add_argument("--kill-before-logs-copy", type=int)
    p.add_argument("--kill-at-commit", type=int)
    args = p.parse_args()

    import keras
    from test_fit import fit, make_model

    arm(args.kill_before_logs_copy, args.kill_at_commit)
    logs = Path(args.logs)
    callbacks = [
        keras.callbacks.TensorBoard(str(logs / "tensorboard"), update_freq="batch"),
        keras.callbacks.CSVLogger(str(logs / "log.csv")),
    ]
    fit(make_model(), Path(args.run_dir), cache_dir=args.staging, save_every="epoch",
        callbacks=callbacks)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

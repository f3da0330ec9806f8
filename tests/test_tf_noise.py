"""TensorFlow's start-up lines are kept out of `colabkit train`; everything else passes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from colabkit.tf_noise import is_noise

NOISE = [  # as TensorFlow 2.21 (absl) and 2.18 (its own format) print them, no GPU present
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    b"I0000 00:00:1796095616.087443   22942 port.cc:153] oneDNN custom operations are on. You "
    b"may see slightly different numerical results.\n",
    b"I0000 00:00:1796095616.088876   22942 cudart_stub.cc:31] Could not find cuda drivers on "
    b"your machine, GPU will not be used.\n",
    b"To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild "
    b"TensorFlow with the appropriate compiler flags.\n",
    b"E0000 00:00:1796097523.732285   14853 cuda_platform.cc:52] failed call to cuInit: "
    b"INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n",
    b"2025-07-29 10:00:00.123456: I tensorflow/core/util/port.cc:113] oneDNN custom operations "
    b"are on.\n",
    b"2025-07-29 10:00:01.000001: E external/local_xla/xla/stream_executor/cuda/cuda_driver.cc:"
    b"152] failed call to cuInit: UNKNOWN ERROR (303)\n",
]
KEPT = [
    b"colabkit: Checkpoint ckpt-000000000004.ckpt is durable in file:///tmp/run/checkpoints\n",
    b"E0000 00:00:1796097523.732285   14853 cuda_dnn.cc:8310] Could not load cudnn: version "
    b"mismatch\n",  # an error on a machine with a GPU is news
    b"2025-07-29 10:00:01.000001: E tensorflow/core/kernels/x.cc:1] Out of memory\n",
    b"Traceback (most recent call last):\n",
]


@pytest.mark.parametrize("line", NOISE)
def test_tensorflow_start_up_lines_are_noise(line):
    assert is_noise(line)


@pytest.mark.parametrize("line", KEPT)
def test_everything_else_passes(line):
    assert not is_noise(line)


def test_the_cli_relays_stderr_without_the_noise_and_in_order(tmp_path):
    job = (
        "import os, sys\n"
        "from colabkit.tf_noise import quiet_tensorflow\n"
        "with quiet_tensorflow():\n"
        f"    os.write(2, {NOISE[1]!r})\n"
        "    print('colabkit: first', file=sys.stderr, flush=True)\n"
        f"    os.write(2, {KEPT[1]!r})\n"
        "    print('colabkit: last', file=sys.stderr, end='', flush=True)\n"
        "print(' (after)', file=sys.stderr)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    done = subprocess.run([sys.executable, "-c", job], capture_output=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == b"colabkit: first\n" + KEPT[1] + b"colabkit: last (after)\n"

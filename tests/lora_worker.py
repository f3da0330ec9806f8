"""A LoRA fine-tuning job on a real KerasHub architecture, run as a subprocess by
tests/test_keras_hub_lora.py.

Usage: python lora_worker.py RUN_DIR OUT.npz [--kill-after-step K] [--input arrays|tfdata]

--kill-after-step K: SIGKILL itself right after global training step K.
--input: the data as in-memory arrays (x a dict, y, sample_weight; the default) or as a
    ``tf.data.Dataset`` of the same samples, shuffled with a seed and batched.

The model is ``keras_hub.models.GemmaCausalLM`` on a small ``GemmaBackbone`` (random weights,
nothing downloaded) with ``backbone.enable_lora(rank=4)`` and the Gemma LoRA tutorial's compile
(AdamW without weight decay on biases and scales, from-logits loss, weighted accuracy). The
vocabulary is large and the model small, so the frozen part (the 4 MiB embedding above all)
dwarfs what training changes (the LoRA factors, their Adam slots, the dropout seed states):
the shape of a real LoRA run, where the frozen model is gigabytes and the changes megabytes.
Dropout is on (the tutorial's preset has none) so that a non-trainable variable changes too:
the seed generators' states, which a resume must restore for the same dropout masks.

It writes OUT.npz only when training returns: every model variable (``v<i>``, seed states
included), every optimizer variable (``o<i>``), the history, where it resumed, the sizes of
every checkpoint file it saw in RUN_DIR/checkpoints, and byte counts of the model's parts (see
``byte_counts``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from resume_worker import KillAfterStep  # the same SIGKILL-after-step device

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))  # gemma_lora

VOCABULARY, SEQUENCE, SAMPLES, BATCH, EPOCHS = 8192, 32, 48, 4, 2
STEPS_PER_EPOCH = SAMPLES // BATCH
SAVE_EVERY, KEEP = "4steps", 3


def build_model() -> Any:
    """The example's model and compile (examples/gemma_lora.py, the tutorial's), on a backbone
    small enough for a CPU test."""
    import keras
    import keras_hub
    from gemma_lora import lora_model

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.GemmaBackbone(
        vocabulary_size=VOCABULARY,
        num_layers=2,
        num_query_heads=2,
        num_key_value_heads=1,
        hidden_dim=128,
        intermediate_dim=256,
        head_dim=64,
        dropout=0.1,
    )
    # 100 times the tutorial's learning rate: the LoRA factors move visibly in 24 steps.
    return lora_model(backbone, learning_rate=5e-3)


def data() -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """What ``GemmaCausalLMPreprocessor`` makes of padded text, from random token ids:
    x = {"token_ids", "padding_mask"}, y = the ids shifted by one, sample_weight = y's mask."""
    from gemma_lora import random_features

    return random_features(SAMPLES, SEQUENCE, VOCABULARY, seed=7)


def tf_dataset(x: dict[str, np.ndarray], y: np.ndarray, sample_weight: np.ndarray) -> Any:
    """The same samples as a seeded, reshuffled-each-epoch ``tf.data`` pipeline."""
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((x, y, sample_weight))
    return dataset.shuffle(SAMPLES, seed=0).batch(BATCH)


def host(variable: Any) -> np.ndarray:
    import keras

    return np.array(keras.ops.convert_to_numpy(variable), copy=True)


def byte_counts(model: Any, before: list[np.ndarray]) -> dict[str, int]:
    """What a checkpoint must hold at each save, and what it could store once per run.

    ``changing``: trainable variables (the LoRA factors), optimizer variables (Adam slots,
    iteration, learning rate) and the non-trainable variables whose value training changed
    (``before`` holds ``model.variables`` as built; here the dropout seed states).
    ``frozen``: the non-trainable variables training left as they were (the base model).
    """
    trainable = sum(host(v).nbytes for v in model.trainable_variables)
    optimizer = sum(host(v).nbytes for v in model.optimizer.variables)
    changed = frozen = 0
    for variable, start in zip(model.variables, before, strict=True):
        if variable.trainable:
            continue
        value = host(variable)
        if np.array_equal(value, start):
            frozen += value.nbytes
        else:
            changed += value.nbytes
    return {
        "trainable_bytes": trainable,
        "optimizer_bytes": optimizer,
        "changed_non_trainable_bytes": changed,
        "changing_bytes": trainable + optimizer + changed,
        "frozen_bytes": frozen,
    }


class CheckpointSizes:
    """Records the size of every ``ckpt-*.ckpt`` in the store as training goes, pruned ones
    included (with keep=3 a checkpoint lives 12 steps, so a look after each step sees it)."""

    def __init__(self, folder: Path) -> None:
        import keras

        self.folder, self.sizes = folder, {}
        self.callback = keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda batch, logs: self.look()
        )

    def look(self) -> None:
        for path in self.folder.glob("ckpt-*.ckpt"):
            with contextlib.suppress(FileNotFoundError):  # pruned since the listing
                self.sizes[path.name] = path.stat().st_size


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("run_dir")
    p.add_argument("out")
    p.add_argument("--kill-after-step", type=int)
    p.add_argument("--input", choices=("arrays", "tfdata"), default="arrays")
    args = p.parse_args()

    import keras

    import colabkit

    model = build_model()
    before = [host(v) for v in model.variables]
    x, y, sample_weight = data()
    sizes = CheckpointSizes(Path(args.run_dir) / "checkpoints")
    callbacks = [sizes.callback]
    if args.kill_after_step:
        killer = KillAfterStep(args.kill_after_step)
        killer.steps_per_epoch = STEPS_PER_EPOCH
        callbacks.append(killer.callback)

    if args.input == "tfdata":
        data_args: dict[str, Any] = {"x": tf_dataset(x, y, sample_weight)}
    else:
        data_args = {"x": x, "y": y, "sample_weight": sample_weight, "batch_size": BATCH}
    result = colabkit.fit(
        model,
        **data_args,
        run_dir=args.run_dir,
        cache_dir=args.run_dir + "-cache",
        epochs=EPOCHS,
        seed=0,
        save_every=SAVE_EVERY,
        keep=KEEP,
        callbacks=callbacks,
        deterministic=True,
        session_limit=False,
        verbose=0,
    )
    sizes.look()
    counts = byte_counts(model, before)
    print(json.dumps(counts))
    arrays = {f"v{i}": host(v) for i, v in enumerate(model.variables)}
    arrays.update(
        {f"o{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(model.optimizer.variables)}
    )
    np.savez(
        args.out,
        history=json.dumps(result.history),
        resumes=json.dumps(result.resumes),
        checkpoint_sizes=json.dumps(sizes.sizes),
        counts=json.dumps(counts),
        **arrays,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

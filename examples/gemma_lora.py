"""The Gemma LoRA tutorial, resumable: fine-tune Gemma 2 2B on Dolly 15k and survive a disconnect.

This is Google's "Fine-tune Gemma models in Keras using LoRA" tutorial as a script: Gemma 2 2B
from KerasHub (``gemma2_2b_en``), LoRA of rank 4, sequences of 256 tokens, AdamW (learning rate
5e-5, weight decay 0.01, none on biases and scales), one epoch over 1000 Databricks Dolly 15k
instructions at batch size 1, with ``colabkit.fit`` in place of ``model.fit``. Run it, lose the
runtime, run it again: training continues from the newest checkpoint instead of starting over.

    python examples/gemma_lora.py                # the tutorial (needs Kaggle access to Gemma)
    python examples/gemma_lora.py --bfloat16     # frozen weights in bfloat16: fits a T4's 15 GB
    python examples/gemma_lora.py --tiny         # a small random Gemma: no download

In a Colab notebook, ``%run gemma_lora.py --bfloat16`` runs it in the notebook's own process,
where ``colabkit.setup`` can mount Drive for the checkpoints. The preset comes from Kaggle: accept
the Gemma license there and set ``KAGGLE_USERNAME`` and ``KAGGLE_KEY`` (in Colab, from the
notebook's secrets, as the tutorial does). With ``--bfloat16`` the LoRA factors stay float32
(Keras makes them so), as do AdamW's slots. ``--tiny`` runs the same code on a small Gemma of
random weights and random token ids: a quick try of the setup, and what the tests run.
"""

from __future__ import annotations

import os

# ruff: noqa: E402 (the environment is set before Keras is imported)

# As in the tutorial, before Keras is imported: JAX, allowed all the GPU's memory. And XLA's
# deterministic GPU ops (they must be set before JAX starts), so that a resumed run ends as an
# uninterrupted one would (colabkit.fit(deterministic=True) says so when they are missing).
os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "1.00")
if "--xla_gpu_deterministic_ops" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_gpu_deterministic_ops=true"
    ).strip()

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import keras_hub
import numpy as np

import colabkit

PRESET = "gemma2_2b_en"
DOLLY_URL = (
    "https://huggingface.co/datasets/databricks/databricks-dolly-15k/resolve/main/"
    "databricks-dolly-15k.jsonl"
)
TEMPLATE = "Instruction:\n{instruction}\n\nResponse:\n{response}"

#: What the model trains on: x = {"token_ids", "padding_mask"}, y = the next tokens,
#: sample_weight = 1 where y is a real token (what GemmaCausalLMPreprocessor makes of text).
Features = tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]


def load_dolly(path: str | None, limit: int = 1000) -> list[str]:
    """The tutorial's training texts: Dolly instructions without context, formatted."""
    path = path or keras.utils.get_file("databricks-dolly-15k.jsonl", DOLLY_URL)
    texts = []
    with open(path, encoding="utf-8") as file:
        for line in file:
            features = json.loads(line)
            if features["context"]:  # the tutorial leaves these out, to keep it simple
                continue
            texts.append(TEMPLATE.format(**features))
    return texts[:limit]


def tokenize(preprocessor: Any, texts: Sequence[str], sequence_length: int) -> Features:
    """Tokenized once, before training, as ``model.fit`` would batch by batch (the tutorial
    sets ``preprocessor.sequence_length = 256`` and passes the texts to ``fit``)."""
    preprocessor.sequence_length = sequence_length
    x, y, sample_weight = preprocessor(np.array(texts))
    return keras.tree.map_structure(keras.ops.convert_to_numpy, (x, y, sample_weight))


def random_features(
    samples: int, sequence_length: int, vocabulary_size: int, seed: int = 0
) -> Features:
    """Token ids of random "texts" of random lengths, shaped as ``tokenize`` shapes them."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocabulary_size, size=(samples, sequence_length + 1)).astype("int32")
    lengths = rng.integers(sequence_length // 4, sequence_length + 2, size=samples)
    mask = np.arange(sequence_length + 1)[None, :] < lengths[:, None]
    ids[~mask] = 0  # Gemma's padding id
    x = {"token_ids": ids[:, :-1], "padding_mask": mask[:, :-1]}
    return x, ids[:, 1:], mask[:, 1:].astype("float32")


def tiny_backbone(dtype: str | None = None) -> Any:
    """A Gemma of the real architecture, small enough for a CPU, random weights."""
    return keras_hub.models.GemmaBackbone(
        vocabulary_size=1024,
        num_layers=2,
        num_query_heads=2,
        num_key_value_heads=1,
        hidden_dim=64,
        intermediate_dim=128,
        head_dim=32,
        dtype=dtype,
    )


def lora_model(backbone: Any, *, learning_rate: float = 5e-5, rank: int = 4) -> Any:
    """The tutorial's LoRA model and compile, on a task that takes token ids (the texts were
    tokenized already), sharing ``backbone``: what it learns is the preset model's too."""
    gemma_lm = keras_hub.models.GemmaCausalLM(backbone=backbone, preprocessor=None)
    gemma_lm.backbone.enable_lora(rank=rank)  # freezes the backbone, adds trainable factors
    optimizer = keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=0.01)
    optimizer.exclude_from_weight_decay(var_names=["bias", "scale"])  # layer norms and biases
    gemma_lm.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        optimizer=optimizer,
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy()],
    )
    return gemma_lm


def finetune(
    gemma_lm: Any,
    features: Features,
    run_dir: str | Path,
    *,
    epochs: int = 1,
    batch_size: int = 1,
    save_every: str = "10m",
) -> keras.callbacks.History:
    """``gemma_lm.fit(data, epochs=1, batch_size=1)`` of the tutorial, resumable: the samples
    in an order that is a function of (seed, epoch), so a resume replays the same order."""
    x, y, sample_weight = features
    return colabkit.fit(
        gemma_lm,
        x,
        y,
        sample_weight=sample_weight,
        run_dir=run_dir,
        epochs=epochs,
        batch_size=batch_size,
        seed=0,
        save_every=save_every,
        keep=3,  # the frozen model is stored once per run; each checkpoint holds what changes
        deterministic=True,
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="small random Gemma, no download")
    parser.add_argument("--bfloat16", action="store_true", help="weights in bfloat16 (a T4)")
    parser.add_argument("--data", help="databricks-dolly-15k.jsonl (default: downloaded)")
    parser.add_argument("--limit", type=int, default=1000, help="training examples")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument(
        "--runs", default="auto", help="parent folder of the run (default: Drive in Colab)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # checkpoint/resume lines
    dtype = "bfloat16" if args.bfloat16 else None

    session = colabkit.setup("gemma-lora-tiny" if args.tiny else "gemma-lora", drive=args.runs)
    keras.utils.set_random_seed(0)  # the LoRA factors' (and the tiny model's) initial values
    if args.tiny:
        backbone = tiny_backbone(dtype)
        features = random_features(32, 32, backbone.vocabulary_size)
        generator = None
        batch_size, save_every = 2, "4steps"
    else:
        generator = keras_hub.models.GemmaCausalLM.from_preset(PRESET, dtype=dtype)
        features = tokenize(generator.preprocessor, load_dolly(args.data, args.limit), 256)
        backbone = generator.backbone
        batch_size, save_every = 1, "10m"

    gemma_lm = lora_model(backbone)
    gemma_lm.summary()
    history = finetune(
        gemma_lm,
        features,
        session.run_dir,
        epochs=args.epochs,
        batch_size=batch_size,
        save_every=save_every,
    )
    print(f"loss per epoch: {history.history['loss']}; resumed at: {history.resumes}")
    if generator is not None:  # the preset's task, with the fine-tuned backbone
        prompt = TEMPLATE.format(instruction="What should I do on a trip to Europe?", response="")
        print(generator.generate(prompt, max_length=256))


if __name__ == "__main__":
    main()

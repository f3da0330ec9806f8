"""examples/colab_mnist.ipynb runs top to bottom in a real Jupyter kernel and leaves its outputs.

Outside Colab: the pip cell skips itself (colabkit is installed), Drive falls back to a local
folder, and the data falls back to the offline 5,000-image sample. Parameters reach the kernel
through environment variables the notebook reads.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "colab_mnist.ipynb"


def _outputs_text(notebook) -> str:
    texts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            texts.append(
                output.get("text", "") or str(output.get("data", {}).get("text/plain", ""))
            )
    return "\n".join(texts)


@pytest.mark.slow
def test_notebook_runs_top_to_bottom_and_leaves_its_outputs(tmp_path, monkeypatch):
    drive = tmp_path / "drive"
    monkeypatch.setenv("COLABKIT_EPOCHS", "1")
    monkeypatch.setenv("COLABKIT_DATASET", "mnist-5k")
    monkeypatch.setenv("COLABKIT_DRIVE", str(drive))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    notebook = nbformat.read(NOTEBOOK, as_version=4)

    NotebookClient(notebook, timeout=300, kernel_name="python3").execute(cwd=str(tmp_path))

    outputs = drive / "mnist" / "outputs"
    names = sorted(p.name for p in outputs.iterdir())
    assert names == [
        "history.json",
        "learning_curve.png",
        "mnist_model.keras",
        "predictions.npy",
        "results.txt",
    ]
    assert json.loads((outputs / "history.json").read_text())["epochs"] == [1]
    assert (drive / "mnist" / "checkpoints").is_dir()
    text = _outputs_text(notebook)
    assert "5,000-image MNIST sample" in text and "Test accuracy:" in text
    assert "Resumed at: never (a new run)" in text

    # "Run all" again on the finished run: said as such, not "Resumed at: never"
    again = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(again, timeout=300, kernel_name="python3").execute(cwd=str(tmp_path))
    text = _outputs_text(again)
    assert "the run already finished at epoch 1/1" in text
    assert "Already finished: the run's final weights are loaded" in text
    assert "Resumed at" not in text and "Test accuracy:" in text


def test_the_first_cell_installs_colabkit_and_is_harmless_where_it_is_installed():
    first = nbformat.read(NOTEBOOK, as_version=4).cells[0]

    assert first.cell_type == "code"
    assert "%pip install -q colabkit-keras" in first.source
    assert 'if importlib.util.find_spec("colabkit") is None:' in first.source


def test_the_notebook_says_what_to_do_after_a_disconnect():
    cells = nbformat.read(NOTEBOOK, as_version=4).cells
    markdown = "\n".join(c.source for c in cells if c.cell_type == "markdown")

    assert "Runtime → Run all" in markdown
    assert all(not c.get("outputs") for c in cells if c.cell_type == "code")  # saved clean


RESUME_CELLS = [
    """\
import os, signal
import keras, numpy as np
import colabkit

class DieAt(keras.callbacks.Callback):
    \"\"\"The runtime dies (SIGKILL: nothing runs after it) at batch 3 of the second epoch.\"\"\"
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == (1, 3) and os.environ.get("DIE") == "1":
            os.kill(os.getpid(), signal.SIGKILL)

rng = np.random.default_rng(0)
x = rng.normal(size=(96, 6)).astype("float32")
y = (x[:, 0] > 0).astype("int32")
keras.utils.set_random_seed(3)
model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
                          keras.layers.Dense(2, activation="softmax")])
model.compile("adam", "sparse_categorical_crossentropy")
""",
    """\
history = colabkit.fit(model, x, y, run_dir=os.environ["RUN_DIR"], epochs=3, batch_size=16,
                       seed=5, save_every="1steps", callbacks=[DieAt()])
""",
]


@pytest.mark.slow
def test_rerunning_a_killed_runs_cell_shows_the_resume_and_the_true_epoch_and_step(
    tmp_path, monkeypatch
):
    """The runtime dies mid-epoch; the user runs the cells again: the cell's own output says
    where it resumed, and the progress bar of the resumed epoch counts on from its step."""
    import re

    from nbclient.exceptions import DeadKernelError

    monkeypatch.setenv("RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in RESUME_CELLS])
    monkeypatch.setenv("DIE", "1")
    with pytest.raises(DeadKernelError):
        NotebookClient(notebook, timeout=300, kernel_name="python3").execute(cwd=str(tmp_path))
    monkeypatch.setenv("DIE", "0")
    NotebookClient(notebook, timeout=300, kernel_name="python3").execute(cwd=str(tmp_path))

    out = "".join(o.get("text", "") for o in notebook.cells[1].outputs if o.output_type == "stream")
    out = re.sub(r"\x1b\[[0-9;]*m", "", out).replace("\r", "\n").replace("\b", "")
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    resumed = next(line for line in lines if line.startswith("colabkit: resuming from"))
    step = int(re.search(r": epoch 2/3 at step (\d)/6; session 2 of this run", resumed)[1])
    assert 1 <= step <= 3  # the newest checkpoint the kill left whole
    after = lines[lines.index("Epoch 2/3") + 1 :]
    assert after[0].startswith(f"{step + 1}/6 ")  # the bar counts on from the resumed step
    assert "Epoch 1/3" not in lines and "Epoch 3/3" in lines

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

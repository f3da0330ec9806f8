"""colabkit: Keras training that survives Google Colab.

The public API is imported lazily so that ``import colabkit`` stays light: it never imports
tensorflow or google.colab (and not even keras until training needs it).

    import colabkit
    session = colabkit.setup("mnist")           # Drive, GPU check, run directory
    history = colabkit.fit(model, x, y, run_dir=session.run_dir, epochs=15)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"  # the one source of truth: pyproject reads it

_LAZY = {
    "setup": ("colabkit.session", "setup"),
    "Session": ("colabkit.session", "Session"),
    "fit": ("colabkit.training.trainer", "fit"),
    "stage": ("colabkit.staging", "stage"),
    "status": ("colabkit.run_status", "status"),
    "callbacks": ("colabkit.callbacks", None),
    "distribute": ("colabkit.distribute", None),
    "storage": ("colabkit.storage", None),
    "errors": ("colabkit.errors", None),
    "ColabkitError": ("colabkit.errors", "ColabkitError"),
}

__all__ = [
    "ColabkitError",
    "Session",
    "__version__",
    "callbacks",
    "distribute",
    "errors",
    "fit",
    "setup",
    "stage",
    "status",
    "storage",
]

if TYPE_CHECKING:  # pragma: no cover
    from colabkit import callbacks, distribute, errors, storage
    from colabkit.errors import ColabkitError
    from colabkit.run_status import status
    from colabkit.session import Session, setup
    from colabkit.staging import stage
    from colabkit.training.trainer import fit


def __getattr__(name: str) -> Any:
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'colabkit' has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

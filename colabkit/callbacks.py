"""colabkit's Keras callbacks: ``from colabkit.callbacks import BackupAndRestore``.

A drop-in for ``from keras.callbacks import BackupAndRestore``; see
``colabkit.training.callbacks`` for what each one does.
"""

from __future__ import annotations

from colabkit.training.callbacks import BackupAndRestore, Checkpoint, SessionDeadline

__all__ = ["BackupAndRestore", "Checkpoint", "SessionDeadline"]

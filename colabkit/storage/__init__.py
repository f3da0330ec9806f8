"""Checkpoint stores: where checkpoint files live durably.

``LocalStore`` (a folder, also the Drive mount), ``DriveApiStore`` (Drive v3 API),
``MemoryStore`` (tests), and ``open_store(url_or_path)``.
"""

from __future__ import annotations

from colabkit.storage.base import ObjectInfo, Store, validate_name

__all__ = ["ObjectInfo", "Store", "validate_name"]

"""Training data copied to fast local disk before training: verified, resumable, cached.

Reading a dataset file by file through the Drive mount is the most common cause of slow Colab
training, and large copies off the mount fail midway (errno 107) or are throttled. ``stage``
copies a file, a folder or an archive once per VM to local disk and returns the local path:

    folder = colabkit.stage("/content/drive/MyDrive/data/flowers.zip")  # extracted
    train = keras.utils.image_dataset_from_directory(folder, ...)

Sources: a local path (the Drive mount included), ``gdrive://folder/path`` (the Drive API, no
mount needed), and bucket URLs through fsspec (``gs://``, ``s3://``, ``fsspec+memory://``...).
Where it goes: ``dest`` if given, else ``/content/colabkit-data`` in Colab and
``$XDG_CACHE_HOME/colabkit/data`` (``~/.cache/colabkit/data``) elsewhere; the result is
``<dest>/<name>`` (an archive's name without ``.zip``, ``.tar``, ``.tar.gz`` or ``.tgz``).

- **Verified.** Sizes always; the md5 where the source reports one (the Drive API, GCS, Azure);
  from the mount, whose reads can fail or come short, the md5 computed while copying is compared
  with a second read of the source; a local source must not change while it is copied. An
  archive is extracted only after it verified, into a temporary folder renamed into place; a
  corrupt one is refused and nothing of it is left.
- **Resumable.** A copy interrupted by an error (errno 107 and other transient ones are retried
  with backoff on the injected clock first) or a kill continues on the next call: from the
  byte where it stopped (the mount, local paths, buckets), or from the file where it stopped
  (the Drive API, whose downloads are verified whole).
- **Cached.** A call whose source did not change (sizes and mtimes, or md5s) returns at once;
  a changed source is copied again, and the old copy is replaced only once the new one is whole.
- **Honest about space.** Local free space is checked first: too little is refused in one line
  (needed, free) before anything is written.

The bookkeeping lives in ``<dest>/.colabkit-stage/``.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from colabkit.clock import SYSTEM_CLOCK, Clock
from colabkit.env import detect
from colabkit.errors import StageError, invalid_argument
from colabkit.staging.job import STATE_DIR, Job
from colabkit.staging.sources import Entry, LocalSource, data_finding, is_under, open_source

__all__ = ["STATE_DIR", "StageError", "data_finding", "stage"]

log = logging.getLogger(__name__)

COLAB_DATA_ROOT = Path("/content/colabkit-data")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")


def stage(
    source: str | os.PathLike[str],
    dest: str | os.PathLike[str] | None = None,
    *,
    credentials: Any = None,
    clock: Clock | None = None,
    progress: bool = True,
) -> Path:
    """Copies ``source`` to fast local disk, once per VM, and returns the local path.

    Args:
        source: A local file, folder or archive (the Drive mount included, e.g.
            ``/content/drive/MyDrive/data.zip``), ``gdrive://folder/path`` (the Drive API) or a
            bucket URL (``gs://bucket/data``, anything fsspec opens).
        dest: The local folder to stage into (default: ``/content/colabkit-data`` in Colab, a
            cache folder elsewhere). The result is ``dest/<name>``.
        credentials: google-auth credentials for ``gdrive://`` (default: found as for
            ``DriveApiStore``).
        clock: Where retry backoff sleeps and progress reads time (tests inject one).
        progress: Show progress for copies that take more than a few seconds.

    Returns:
        The staged file or folder (an archive: the folder it was extracted to).

    Raises:
        ConfigError: ``source`` is not a path or URL of something that exists.
        StageError: Too little local disk, a corrupt archive, or reads that kept failing (what
            was copied is kept; the same call continues it).
    """
    clock = clock or SYSTEM_CLOCK
    src = open_source(source, credentials, clock)
    archive = src.is_file and _archive_suffix(src.name)
    name = src.name[: -len(archive)] if archive else src.name
    if not name:
        raise invalid_argument("source", str(source), "a file or a folder below the root")
    root = Path(dest).expanduser() if dest is not None else _default_root()
    if root.exists() and not root.is_dir():
        raise invalid_argument("dest", str(dest), "a folder to stage into (this is a file)")
    if isinstance(src, LocalSource) and not src.is_file and is_under(root, src.path):
        raise invalid_argument("dest", str(root), f"a folder outside the source {src.path}")
    target = root / name
    job = Job(src, root, name, clock, progress)
    entries = src.entries()
    signature = _signature(src.url, entries)
    if job.is_cached(signature, target):
        log.info("%s is staged at %s already (unchanged).", src.url, target)
        return target
    job.refuse_foreign(target)
    job.start(signature, entries, extracted=bool(archive))
    if not (archive and job.partial.is_dir()):  # else: extracted whole before a kill
        copied = job.copy(entries)
        if archive:
            job.extract(copied, archive)
    job.commit(target)
    return target


def _default_root() -> Path:
    env = detect(session_limit=None)
    if env.kind == "colab":
        return COLAB_DATA_ROOT
    return env.cache_root / "data"


def _archive_suffix(name: str) -> str:
    lowered = name.lower()
    return next((s for s in ARCHIVE_SUFFIXES if lowered.endswith(s) and len(s) < len(name)), "")


def _signature(url: str, entries: Sequence[Entry]) -> str:
    digest = hashlib.sha256(url.encode())
    for e in entries:
        digest.update(f"\0{e.path}\0{e.size}\0{e.version}".encode())
    return digest.hexdigest()

"""``FsspecStore``: checkpoints in object storage (``gs://``, ``s3://``, ``az://``...) via fsspec.

For runs on several machines, where one Colab user's Drive does not fit. fsspec is imported only
when a store is made (``pip install fsspec`` plus the driver: gcsfs, s3fs, adlfs...).

How it commits: ``put`` uploads the whole file under a hidden temporary name next to the final one
(``.ckpt-...tmp-<pid>-<hex>``, which ``list`` never shows), verifies the upload, then ``fs.mv``-es
it onto the final name. On object stores ``mv`` is a server-side copy then a delete of the
temporary (S3 CopyObject, GCS rewrite, Azure copy): the final object appears whole or not at all,
and the object it replaces stays readable until then. On file systems (``file://``, SFTP) it is a
rename. A put that fails before the move leaves the previous object intact and removes its
temporary; one killed mid-way leaves a temporary that :meth:`FsspecStore.remove_leftovers` frees.

How an upload is verified, before it is committed: its size must match the local file, and its
md5 must match where it can be known:

- GCS (``md5Hash``) and Azure (``content_md5``) report the md5 of what they hold: compared.
- S3's ``ETag`` is the md5 only for single-part, non-KMS uploads: equal proves it; different proves
  nothing (multipart ``...-N``, SSE-KMS), so then the object is checked as below.
- Otherwise an object up to ``read_back_limit`` bytes (64 MiB) is read back and hashed; a larger
  one is trusted on its size (reading back 1 GB per checkpoint would double the traffic, and the
  checkpoint file carries its own sha256 manifest, checked before any resume).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import logging
import os
import posixpath
import secrets
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from colabkit.clock import SYSTEM_CLOCK, Clock
from colabkit.errors import StoreError, invalid_argument
from colabkit.storage.atomic import atomic_output, is_temporary_name
from colabkit.storage.base import CHUNK, ObjectInfo, md5_file, validate_name

logger = logging.getLogger(__name__)

# URL schemes open_store sends here, and the pip package each needs on top of fsspec. Any other
# protocol fsspec knows is reachable as "fsspec+<protocol>://..." (e.g. fsspec+memory://bucket);
# plain ftp:// is left out on purpose (clear-text passwords, no atomic replace on many servers).
DRIVERS: dict[str, str] = {
    "s3": "s3fs",
    "s3a": "s3fs",
    "gs": "gcsfs",
    "gcs": "gcsfs",
    "az": "adlfs",
    "abfs": "adlfs",
    "abfss": "adlfs",
    "oci": "ocifs",
    "oss": "ossfs",
    "hdfs": "pyarrow",
    "webhdfs": "requests",
    "sftp": "paramiko",
    "ssh": "paramiko",
    "smb": "smbprotocol",
    "webdav": "webdav4",
}
FSSPEC_PREFIX = "fsspec+"
READ_BACK_LIMIT = 64 * 1024 * 1024


def handles(scheme: str) -> bool:
    """Whether ``open_store`` should open a URL with this scheme as an :class:`FsspecStore`."""
    return scheme in DRIVERS or (scheme.startswith(FSSPEC_PREFIX) and len(scheme) > 7)


class FsspecStore:
    """A :class:`~colabkit.storage.base.Store` on any fsspec file system.

    Args:
        url_or_fs: A URL such as ``"gs://bucket/runs/mnist"`` (``"fsspec+memory://x"`` also
            works), or a ready ``fsspec.AbstractFileSystem``.
        root: With a file system: the folder or ``bucket/prefix`` of the store. Must be None
            with a URL (the URL names it).
        storage_options: With a URL: passed to the file system (credentials, endpoint...).
        read_back_limit: Uploads up to this many bytes whose md5 the server does not report are
            read back and hashed; larger ones are checked by size only.
        clock: Where :meth:`remove_leftovers` reads the time.

    Raises:
        ConfigError: a bad URL or root, or fsspec or the driver for the URL is not installed (the
            message names the pip package).
    """

    def __init__(
        self,
        url_or_fs: Any,
        root: str | None = None,
        *,
        storage_options: dict[str, Any] | None = None,
        read_back_limit: int = READ_BACK_LIMIT,
        clock: Clock | None = None,
    ) -> None:
        if isinstance(url_or_fs, str):
            if root is not None:
                raise invalid_argument("root", root, "None when a URL is given (the URL names it)")
            self.fs, path = _open_url(url_or_fs, storage_options or {})
            self.url = _reopenable(_without_password(url_or_fs))
        else:
            fsspec = _import_fsspec(None)
            if not isinstance(url_or_fs, fsspec.AbstractFileSystem):
                raise invalid_argument("url_or_fs", url_or_fs, "a URL or an fsspec file system")
            if storage_options:
                raise invalid_argument(
                    "storage_options", storage_options, "None with a ready file system"
                )
            if not isinstance(root, str):
                raise invalid_argument("root", root, "a folder or 'bucket/prefix' of the store")
            self.fs, path = url_or_fs, url_or_fs._strip_protocol(root)
            self.url = _reopenable(self.fs.unstrip_protocol(path))
        self.root = path.rstrip("/")
        if not self.root.strip("/"):
            raise invalid_argument("url", self.url, "a URL with a bucket or folder, e.g. gs://b/x")
        if (
            isinstance(read_back_limit, bool)
            or not isinstance(read_back_limit, int)
            or (read_back_limit < 0)
        ):
            raise invalid_argument("read_back_limit", read_back_limit, "an integer >= 0 (bytes)")
        self.read_back_limit = read_back_limit
        self._clock = clock or SYSTEM_CLOCK

    def __repr__(self) -> str:
        return f"FsspecStore({self.url!r})"

    def path(self, name: str) -> str:
        """The file system path of object ``name`` (validated, inside ``root``)."""
        return f"{self.root}/{validate_name(name)}"

    def put(self, local_path: str | os.PathLike[str], name: str) -> ObjectInfo:
        final = self.path(name)
        md5 = md5_file(local_path)  # FileNotFoundError before anything is uploaded
        size = os.path.getsize(local_path)
        temporary = temporary_path(final)
        with self._asking("upload", final):
            try:
                if getattr(self.fs, "auto_mkdir", True) is False:  # LocalFileSystem only
                    self.fs.makedirs(posixpath.dirname(final), exist_ok=True)
                self.fs.put_file(os.fspath(local_path), temporary)
                self._verify_upload(temporary, size, md5, source=local_path)
                self.fs.mv(temporary, final)
            except BaseException:
                with contextlib.suppress(Exception):
                    self.fs.rm_file(temporary)
                raise
            committed = self._file_info(final)
        if committed.get("size") != size:
            raise StoreError(
                f"{self.url}/{name} has {committed.get('size')} bytes after the "
                f"move, not {size}; put it again."
            )
        return ObjectInfo(name, size, md5, _modified(committed) or self._clock.time())

    def get(self, name: str, local_path: str | os.PathLike[str]) -> ObjectInfo:
        path = self.path(name)
        with self._asking("download", path):
            info = self._file_info(path)  # FileNotFoundError before the destination is touched
            with self.fs.open(path, "rb") as src, atomic_output(local_path) as out:
                size, md5 = _copy(src, out)
                reported = server_md5(info)
                if size != info["size"] or reported not in (None, md5):
                    raise StoreError(
                        f"Download of {self.url}/{name} came back different (size or md5); "
                        f"{os.fspath(local_path)!r} was left untouched. Retry."
                    )
        return ObjectInfo(name, size, md5, _modified(info) or 0.0)

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        found = []
        for rel, info in self._walk():
            if rel.startswith(prefix) and info.get("type", "file") == "file":
                size, modified = int(info.get("size") or 0), _modified(info) or 0.0
                found.append(ObjectInfo(rel, size, None, modified))
        return sorted(found, key=lambda info: info.name)

    def stat(self, name: str) -> ObjectInfo:
        """Describes ``name``; reads the whole object for its md5 where the server keeps none."""
        path = self.path(name)
        with self._asking("stat", path):
            info = self._file_info(path)
            md5 = server_md5(info)
            if md5 is None:
                with self.fs.open(path, "rb") as src:
                    md5 = _copy(src, None)[1]
        return ObjectInfo(name, int(info["size"]), md5, _modified(info) or 0.0)

    def delete(self, name: str) -> None:
        path = self.path(name)
        with self._asking("delete", path):
            self._file_info(path)  # object stores delete absent keys silently: ask first
            self.fs.rm_file(path)

    def remove_leftovers(self, older_than: float = 3600.0) -> list[str]:
        """Deletes temporaries of puts a crash interrupted; returns their names.

        Only those untouched for ``older_than`` seconds go (a put still running on another
        machine is left alone), and only those whose age is known. Each can be as big as a
        checkpoint, which costs money on a bucket.
        """
        cutoff = self._clock.time() - older_than
        removed = []
        for rel, info in self._walk(temporaries=True):
            modified = _modified(info)
            if modified is not None and modified < cutoff:
                with self._asking("delete", rel), contextlib.suppress(FileNotFoundError):
                    self.fs.rm_file(f"{self.root}/{rel}")
                    removed.append(rel)
        return removed

    def _walk(self, *, temporaries: bool = False) -> Iterator[tuple[str, dict[str, Any]]]:
        """(relative name, info) of each object below root: committed ones, or temporaries."""
        with self._asking("list", self.root):
            self.fs.invalidate_cache()  # listings cached by s3fs/gcsfs miss other machines' puts
            try:
                root_info = self.fs.info(self.root)
            except FileNotFoundError:  # nothing stored yet. Other failures raise, never "empty".
                return
            if root_info.get("type") != "directory":
                raise StoreError(f"{self.url} is a file, not a folder of checkpoints.")
            # A generic find() swallows listing errors below the root (fsspec walk's "omit").
            listing = self.fs.find(self.root, withdirs=False, detail=True)
        for full, info in listing.items():
            rel = full.rstrip("/")[len(self.root) + 1 :]
            if not full.startswith(self.root + "/") or not _is_valid(rel):
                continue  # folder markers, or names a store could not hand out
            if is_temporary_name(posixpath.basename(rel)) == temporaries:
                yield rel, info

    def _file_info(self, path: str) -> dict[str, Any]:
        self.fs.invalidate_cache(path)  # a cached listing would answer "absent" for new objects
        info = self.fs.info(path)
        if info.get("type", "file") != "file":
            raise FileNotFoundError(2, "Not a stored object", path)
        return info

    def _verify_upload(self, path: str, size: int, md5: str, *, source: object) -> None:
        info = self._file_info(path)
        reported = server_md5(info)
        if reported is None and _etag(info) != md5 and size <= self.read_back_limit:
            reported = hashlib.md5(self.fs.cat_file(path), usedforsecurity=False).hexdigest()
        if info.get("size") != size or reported not in (None, md5):
            raise StoreError(
                f"Upload of {os.fspath(source)!r} to {self.url} came back different (size or "
                "md5); the previous object is kept. Check the bucket and retry."
            )

    @contextlib.contextmanager
    def _asking(self, what: str, path: str) -> Iterator[None]:
        """Turns a driver's own exceptions (HTTP, auth...) into ``StoreError``, an ``OSError``.

        ``OSError`` (``FileNotFoundError`` included) passes as it is: it already means "absent"
        or "could not ask". Anything else means "could not ask", never "absent".
        """
        try:
            yield
        except OSError:
            raise
        except Exception as e:
            raise StoreError(
                f"Could not {what} {path!r} on {self.url}: {type(e).__name__}: {e}"
            ) from e


def temporary_path(final: str) -> str:
    """A hidden, unique sibling of ``final`` that ``is_temporary_name`` recognizes."""
    folder, base = posixpath.split(final)
    return f"{folder}/.{base}.tmp-{os.getpid()}-{secrets.token_hex(4)}"


def server_md5(info: dict[str, Any]) -> str | None:
    """The hex md5 a backend reports authoritatively (GCS ``md5Hash``, Azure ``content_md5``)."""
    encoded = info.get("md5Hash")
    if isinstance(encoded, str):
        with contextlib.suppress(binascii.Error, ValueError):
            return base64.b64decode(encoded, validate=True).hex()
    settings = info.get("content_settings")
    raw = getattr(settings, "get", lambda _: None)("content_md5")
    if isinstance(raw, (bytes, bytearray)) and len(raw) == 16:
        return bytes(raw).hex()
    return None


def _etag(info: dict[str, Any]) -> str | None:
    """S3's ETag without quotes: the md5 only for single-part, non-KMS objects."""
    etag = info.get("ETag") or info.get("etag")
    return etag.strip('"').lower() if isinstance(etag, str) else None


def _modified(info: dict[str, Any]) -> float | None:
    """Seconds since the epoch from whichever time a backend reports, None if none."""
    for key in ("mtime", "LastModified", "last_modified", "updated", "modified", "created"):
        value = info.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return None


def _is_valid(name: str) -> bool:
    try:
        validate_name(name)
    except ValueError:
        return False
    return True


def _copy(src: Any, dst: Any) -> tuple[int, str]:
    """Streams ``src`` into ``dst`` (or nowhere); returns (bytes, hex md5)."""
    digest = hashlib.md5(usedforsecurity=False)
    size = 0
    while chunk := src.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
        if dst is not None:
            dst.write(chunk)
    return size, digest.hexdigest()


def _import_fsspec(scheme: str | None) -> Any:
    try:
        import fsspec
    except ImportError:
        package = DRIVERS.get(scheme or "")
        install = f"pip install fsspec {package}" if package else "pip install fsspec"
        raise invalid_argument(
            "url", f"{scheme}://..." if scheme else "a file system", f"fsspec installed: {install}"
        ) from None
    return fsspec


def _open_url(url: str, storage_options: dict[str, Any]) -> tuple[Any, str]:
    """(file system, path) for ``url``; a one-line ``ConfigError`` if a package is missing."""
    protocol = urlsplit(url).scheme.removeprefix(FSSPEC_PREFIX)
    fsspec = _import_fsspec(protocol)
    try:
        return fsspec.core.url_to_fs(url.removeprefix(FSSPEC_PREFIX), **storage_options)
    except ImportError as e:
        package = DRIVERS.get(protocol)
        expected = (
            f"the {package} package installed for {protocol}:// URLs: pip install {package}"
            if package
            else f"a working fsspec driver for {protocol}:// ({str(e).splitlines()[0]})"
        )
        raise invalid_argument("url", _without_password(url), expected) from e
    except ValueError as e:  # e.g. an unknown protocol
        raise invalid_argument("url", _without_password(url), f"a URL fsspec can open ({e})") from e
    except Exception as e:  # drivers that connect at once (sftp, hdfs): DNS, refused, auth
        raise StoreError(f"Could not open {_without_password(url)}: {type(e).__name__}: {e}") from e


def _reopenable(url: str) -> str:
    """``url`` in the form ``open_store`` maps back to this store (``fsspec+memory://...``)."""
    scheme = urlsplit(url).scheme
    return url if scheme in DRIVERS or scheme.startswith(FSSPEC_PREFIX) else FSSPEC_PREFIX + url


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=user + netloc))

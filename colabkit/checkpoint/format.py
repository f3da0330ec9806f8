"""The checkpoint file: one zip that verifies on its own.

A checkpoint is a single file so that committing it is a single rename (and a single upload).
Inside (stored, not compressed: weights do not compress and speed matters):

- ``state.json``: global step, epoch, step in epoch and whatever the training layer adds, plus
  ``colabkit_version``, ``created`` and ``format_version``;
- ``arrays/<name>.npy``: one standard ``.npy`` member per array (``name`` may contain ``/``);
- ``manifest.json``, written last: the sha256 and size of every other member, and the dtype's
  name for an array whose dtype the ``.npy`` header cannot hold (bfloat16, float8, int4: see
  :mod:`colabkit.checkpoint.npy`).

Format 2 (written only where it matters, so that older colabkit still reads the rest) adds those
dtype names and checkpoints whose state names a *frozen* object: variables that did not change
since the run stored them once (see :mod:`colabkit.training.frozen`) are left out of the
checkpoint and read from that object, another file of the same format beside it.

A file cut short by a crash has no zip central directory and no manifest; a file with garbled
bytes fails a checksum. Either way :func:`verify` raises
:class:`~colabkit.errors.CorruptCheckpointError`, and nothing here needs keras to decide it. A
checkpoint in a newer format (a newer colabkit wrote it) raises
:class:`~colabkit.errors.UnsupportedCheckpointError` instead: it is not damaged, and resuming from
an older one in its place would lose its work.
Files are written under a hidden temporary name, fsynced and renamed (see
:mod:`colabkit.storage.atomic`), so a reader never sees a half-written checkpoint by name.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from colabkit import __version__
from colabkit.checkpoint import npy
from colabkit.checkpoint.run_state import RunState
from colabkit.errors import (
    ConfigError,
    CorruptCheckpointError,
    UnsupportedCheckpointError,
    invalid_argument,
)
from colabkit.storage.atomic import atomic_output
from colabkit.storage.base import CHUNK, validate_name

CHECKPOINT_SUFFIX = ".ckpt"
FORMAT_VERSION = 2
#: The state key naming the frozen object a checkpoint leaves variables to (format 2).
FROZEN_KEY = "frozen"
STATE_MEMBER = "state.json"
MANIFEST_MEMBER = "manifest.json"
ARRAY_PREFIX = "arrays/"
_NAME = re.compile(r"ckpt-(\d{12,})\.ckpt")
FROZEN_PREFIX = "frozen-"
_FROZEN = re.compile(r"frozen-[0-9a-f]{16}\.ckpt")
_LARGE = 1 << 30  # members this big get zip64 headers up front


@dataclass(frozen=True)
class CheckpointContents:
    """A checkpoint read back and verified.

    Attributes:
        state: The decoded ``state.json``.
        arrays: Every array, writable, by the name it was saved under.
        name: The checkpoint's file name (``ckpt-<step>.ckpt``).
    """

    state: dict
    arrays: dict[str, np.ndarray]
    name: str

    @property
    def run(self) -> RunState:
        """What ``state.json`` says about the run (see ``colabkit.checkpoint.run_state``)."""
        return RunState.read(self.state)


def checkpoint_name(step: int) -> str:
    """``ckpt-000000001234.ckpt``: zero-padded so that names sort by step."""
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise invalid_argument("step", step, "an integer >= 0 (the global step)")
    return f"ckpt-{int(step):012d}{CHECKPOINT_SUFFIX}"


def frozen_object_name(digests: Mapping[str, str]) -> str:
    """``frozen-<digest>.ckpt``: named after its contents, so the same frozen variables written
    again (a lost object rewritten from a model that matches it) get the same name."""
    digest = hashlib.sha256()
    for key in sorted(digests):
        digest.update(f"{key}\0{digests[key]}\0".encode())
    return f"{FROZEN_PREFIX}{digest.hexdigest()[:16]}{CHECKPOINT_SUFFIX}"


def is_frozen_object(name: str) -> bool:
    """Whether ``name`` is a run's frozen object (temporary files excluded)."""
    return isinstance(name, str) and _FROZEN.fullmatch(name) is not None


def frozen_object_of(state: Mapping[str, Any]) -> str | None:
    """The frozen object a checkpoint's state leaves variables to, if any."""
    record = state.get(FROZEN_KEY) if isinstance(state, Mapping) else None
    name = record.get("name") if isinstance(record, Mapping) else None
    return name if is_frozen_object(name) else None


def step_of(name: str) -> int | None:
    """The step in a checkpoint name, or None for anything else (temporary files included)."""
    match = _NAME.fullmatch(name) if isinstance(name, str) else None
    return int(match.group(1)) if match else None


def prepare_state(state: Mapping[str, Any], *, created: float | None = None) -> dict:
    """``state`` checked for JSON and completed with colabkit's own keys.

    Numpy scalars become Python numbers; anything else JSON cannot hold exactly (arrays, objects,
    non-string keys, which JSON would silently turn into strings) is refused.

    Raises:
        ConfigError: naming the first key that cannot be stored.
    """
    if not isinstance(state, Mapping):
        raise invalid_argument("state", type(state).__name__, "a dict of JSON-serialisable values")
    prepared = _jsonable(dict(state), "state")
    prepared["colabkit_version"] = __version__
    prepared["format_version"] = FORMAT_VERSION
    prepared["created"] = time.time() if created is None else float(created)
    return prepared


def check_arrays(arrays: Mapping[str, np.ndarray]) -> None:
    """Refuses array names that are not safe member names and arrays that are not plain numpy.

    Raises:
        ConfigError: naming the array.
    """
    if not isinstance(arrays, Mapping):
        raise invalid_argument("arrays", type(arrays).__name__, "a dict of name -> numpy array")
    for name, value in arrays.items():
        check_array(name, value)


def check_array(name: str, value: object) -> None:
    """Refuses one array that :func:`check_arrays` would refuse.

    Raises:
        ConfigError: naming the array, its type or dtype, and what is expected.
    """
    try:
        validate_name(name)
    except ValueError:
        raise invalid_argument(
            "arrays", name, "array names made of '/'-separated parts without '..' or '\\\\'"
        ) from None
    if not isinstance(value, (np.ndarray, np.generic)) or np.asarray(value).dtype.hasobject:
        raise invalid_argument(
            f"arrays[{name!r}]", type(value).__name__, "a numpy array of numbers or booleans"
        )
    try:
        npy.dtype_name(np.asarray(value).dtype)
    except TypeError:
        raise invalid_argument(
            f"arrays[{name!r}].dtype",
            np.asarray(value).dtype,
            "a numpy number or bool dtype, or one of ml_dtypes' (bfloat16, float8_*, int4)",
        ) from None


def write_checkpoint(
    path: str | os.PathLike[str],
    arrays: Mapping[str, np.ndarray] | Iterable[tuple[str, np.ndarray]],
    state: Mapping[str, Any],
    *,
    created: float | None = None,
) -> dict[str, str]:
    """Writes one checkpoint file atomically (temporary name, fsync, rename, folder fsync).

    Args:
        path: The final file name, normally ``<folder>/<checkpoint_name(step)>``.
        arrays: The arrays to store, not modified: a dict, or ``(name, array)`` pairs made one at
            a time (each is dropped once written, so a big frozen model never sits in memory
            twice).
        state: JSON-serialisable training state; not modified (a completed copy is stored).
        created: Creation time to record (seconds since the epoch); defaults to now.

    Returns:
        Each array's member digest by array name (see :func:`array_digest`).
    """
    whole = isinstance(arrays, Mapping)  # checked before anything is written; pairs as they come
    if whole:
        check_arrays(arrays)
    prepared = prepare_state(state, created=created)
    prepared["format_version"] = _version_needed(arrays, prepared)
    state_bytes = json.dumps(prepared, sort_keys=True).encode()
    members: dict[str, dict[str, Any]] = {}
    digests: dict[str, str] = {}
    with atomic_output(path) as out, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        members[STATE_MEMBER] = _write_member(zf, STATE_MEMBER, [state_bytes], len(state_bytes))
        for name, value in arrays.items() if whole else arrays:
            if not whole:
                check_array(name, value)
            header, data, dtype = npy.encode(np.asarray(value))
            member = f"{ARRAY_PREFIX}{name}.npy"
            entry = _write_member(zf, member, [header, data], len(header) + data.nbytes)
            if dtype is not None:
                entry["dtype"] = dtype
            members[member], digests[name] = entry, entry["sha256"]
            del value, data
        manifest = {"format_version": prepared["format_version"], "members": members}
        zf.writestr(MANIFEST_MEMBER, json.dumps(manifest, sort_keys=True, indent=1))
    return digests


def _version_needed(arrays: object, state: Mapping[str, Any]) -> int:
    """1 where format 1 holds everything (older colabkit then reads it), else 2."""
    if FROZEN_KEY in state or not isinstance(arrays, Mapping):
        return 2
    named = any(npy.dtype_name(np.asarray(a).dtype) for a in arrays.values())
    return 2 if named else 1


def array_digest(array: np.ndarray) -> str:
    """The sha256 a checkpoint's manifest records for ``array`` (its ``.npy`` bytes).

    Lets a caller tell whether an array in memory is the one a checkpoint holds without reading
    the checkpoint.
    """
    header, data, _ = npy.encode(np.asarray(array))
    digest = hashlib.sha256(header)
    view = memoryview(data)
    for start in range(0, len(view), CHUNK):
        digest.update(view[start : start + CHUNK])
    return digest.hexdigest()


def verify(path: str | os.PathLike[str]) -> dict:
    """Checks every member of a checkpoint against its manifest and returns its state.

    Raises:
        CorruptCheckpointError: truncated, garbled, incomplete or unreadable file.
        UnsupportedCheckpointError: a newer checkpoint format than this colabkit reads.
        FileNotFoundError: there is no file at ``path``.
    """
    return _read(path, load_arrays=False).state


def read_checkpoint(path: str | os.PathLike[str]) -> CheckpointContents:
    """Reads a checkpoint, checking every byte against the manifest as it goes.

    Raises:
        CorruptCheckpointError: as :func:`verify`; no partial contents are ever returned.
    """
    return _read(path, load_arrays=True)


def read_state(path: str | os.PathLike[str]) -> dict:
    """The ``state.json`` of a checkpoint without checking the rest (fast; for listings only).

    Raises:
        CorruptCheckpointError: the zip or its state cannot be read.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            return _decode_state(zf.read(STATE_MEMBER), path)
    except (FileNotFoundError, CorruptCheckpointError):
        raise
    except Exception as e:  # noqa: BLE001 -- zipfile raises many types on damaged input
        raise _corrupt(path, f"unreadable state ({type(e).__name__}: {e})") from None


def _write_member(zf: zipfile.ZipFile, name: str, parts: list, size: int) -> dict[str, Any]:
    digest = hashlib.sha256()
    with zf.open(name, "w", force_zip64=size >= _LARGE) as member:
        for part in parts:
            view = memoryview(part).cast("B")
            for start in range(0, len(view), CHUNK):
                chunk = view[start : start + CHUNK]
                digest.update(chunk)
                member.write(chunk)
    return {"sha256": digest.hexdigest(), "size": size}


def _read(path: str | os.PathLike[str], *, load_arrays: bool) -> CheckpointContents:
    name = os.path.basename(os.fspath(path))
    try:
        with zipfile.ZipFile(path) as zf:
            members = _check_manifest(zf, path)
            state = _decode_state(_read_member(zf, STATE_MEMBER, members, path, None), path)
            arrays: dict[str, np.ndarray] = {}
            for member in zf.namelist():  # the order the arrays were saved in
                if member in (STATE_MEMBER, MANIFEST_MEMBER):
                    continue
                key = member[len(ARRAY_PREFIX) : -len(".npy")]
                array = _read_member(zf, member, members, path, load_arrays)
                if load_arrays:
                    arrays[key] = _as_stored(array, members[member], path, member)
    except (FileNotFoundError, CorruptCheckpointError, UnsupportedCheckpointError):
        raise
    except Exception as e:  # noqa: BLE001 -- zipfile raises many types on damaged input
        raise _corrupt(path, f"unreadable zip ({type(e).__name__}: {e})") from None
    return CheckpointContents(state=state, arrays=arrays, name=name)


def read_arrays(path: str | os.PathLike[str], names: Iterable[str]) -> Iterator[tuple[str, Any]]:
    """Some arrays of a checkpoint, one at a time, each checked against the manifest as read.

    For the frozen object of a big model: a resume reads only the variables it needs, and never
    holds more than one of them at once.

    Raises:
        CorruptCheckpointError: as :func:`verify` (also for a name the checkpoint lacks).
    """
    try:
        with zipfile.ZipFile(path) as zf:
            members = _check_manifest(zf, path)
            for name in names:
                member = f"{ARRAY_PREFIX}{name}.npy"
                if member not in members:
                    raise _corrupt(path, f"no member {member}")
                array = _read_member(zf, member, members, path, True)
                yield name, _as_stored(array, members[member], path, member)
    except (FileNotFoundError, CorruptCheckpointError, UnsupportedCheckpointError):
        raise
    except Exception as e:  # noqa: BLE001 -- zipfile raises many types on damaged input
        raise _corrupt(path, f"unreadable zip ({type(e).__name__}: {e})") from None


def _as_stored(array: np.ndarray, entry: Mapping[str, Any], path, member: str) -> np.ndarray:
    """``array`` viewed as the dtype the manifest names for it (bfloat16 stored as uint16)."""
    name = entry.get("dtype")
    if name is None:
        return array
    try:
        dtype = npy.dtype_from_name(name)
    except TypeError as e:
        raise _corrupt(path, f"member {member}: {e}") from None
    if dtype.itemsize != array.dtype.itemsize:
        raise _corrupt(path, f"member {member}: {name} is not {array.dtype.itemsize} bytes wide")
    return array.view(dtype)


def _check_manifest(zf: zipfile.ZipFile, path: str | os.PathLike[str]) -> dict[str, dict]:
    names = zf.namelist()
    if MANIFEST_MEMBER not in names:
        raise _corrupt(path, "no manifest (the write never finished)")
    if len(names) != len(set(names)):
        raise _corrupt(path, "duplicate members")
    try:
        manifest = json.loads(zf.read(MANIFEST_MEMBER))
        version, members = manifest["format_version"], manifest["members"]
    except (ValueError, KeyError, TypeError) as e:
        raise _corrupt(path, f"unreadable manifest ({e})") from None
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise UnsupportedCheckpointError(
            f"Checkpoint {os.fspath(path)} is in checkpoint format {version}"
            f"{_written_by(zf)}; this colabkit ({__version__}) reads format {FORMAT_VERSION} and "
            "older. Upgrade it (pip install -U colabkit-keras) and run again; the checkpoint was "
            "left as it is."
        )
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _corrupt(path, f"format_version {version!r} is not a format colabkit wrote")
    listed, present = set(members), set(names) - {MANIFEST_MEMBER}
    if listed != present or STATE_MEMBER not in listed:
        raise _corrupt(path, f"members {sorted(present ^ listed)} disagree with the manifest")
    bad = [m for m in listed if m != STATE_MEMBER and not _is_array_member(m)]
    if bad:
        raise _corrupt(path, f"unexpected members {sorted(bad)}")
    return members


def _written_by(zf: zipfile.ZipFile) -> str:
    """`` (written by colabkit X)`` when a newer checkpoint's state says so, else ``""``."""
    try:
        written = json.loads(zf.read(STATE_MEMBER)).get("colabkit_version")
    except Exception:  # noqa: BLE001 -- only decoration for the message
        return ""
    return f" (written by colabkit {written})" if isinstance(written, str) else ""


def _is_array_member(member: str) -> bool:
    return member.startswith(ARRAY_PREFIX) and member.endswith(".npy")


def _read_member(zf, member, members, path, load_array):
    """Reads one member through a hashing reader; returns bytes (state), an array or None."""
    expected = members[member]
    with zf.open(member) as raw:
        reader = npy.HashingReader(raw)
        if load_array is None:
            value = reader.read()
        elif load_array:
            value = npy.decode(reader, member, limit=zf.getinfo(member).file_size)
        else:
            value = None
        reader.drain()
    if reader.size != expected.get("size") or reader.hexdigest() != expected.get("sha256"):
        raise _corrupt(path, f"member {member} fails its checksum")
    return value


def _decode_state(data: bytes, path: str | os.PathLike[str]) -> dict:
    try:
        state = json.loads(data)
    except ValueError as e:
        raise _corrupt(path, f"unreadable state.json ({e})") from None
    if not isinstance(state, dict):
        raise _corrupt(path, "state.json is not an object")
    return state


def _corrupt(path: str | os.PathLike[str], reason: str) -> CorruptCheckpointError:
    error = CorruptCheckpointError(
        f"Checkpoint {os.fspath(path)} is not usable: {reason}. It will not be loaded; "
        "resume uses the newest checkpoint that verifies."
    )
    error.reason = reason  # for a caller that names the checkpoint by where the user keeps it
    return error


def _jsonable(value: Any, where: str) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic) and not isinstance(value, (np.void, np.object_)):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_jsonable(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, Mapping):
        result = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _not_jsonable(f"{where}[{key!r}]", "a non-string key")
            result[key] = _jsonable(item, f"{where}[{key!r}]")
        return result
    raise _not_jsonable(where, f"a {type(value).__name__}")


def _not_jsonable(where: str, what: str) -> ConfigError:
    return ConfigError(
        f"Checkpoint state cannot be stored as JSON: {where} is {what}. Keep `state` to numbers, "
        "strings, lists and dicts with string keys, and pass arrays in `arrays`."
    )

"""A cache entry: a file the pipeline reuses instead of building it again (a trained
baseline's weights, the baseline's artifact), trusted only once it is verified.

Writing (`write_entry`): the file is written under a temporary name in its folder,
flushed to disk, renamed into place, and a record of its size and SHA-256 is then
written beside it the same way (`<name>.record.json`). Any crash leaves either the old
state, or an entry without a record, which is not trusted blindly.

Reading (`read_entry`): the file is read once and checked against its record; a missing
record, another size or another hash raises `Untrusted` (the message says why), and
the caller discards the entry (`discard`) and builds it again. An entry without a
record (written before records existed, or by a writer that died between the two
renames) is accepted only where the caller asks (`unrecorded=True`) and only if every
CRC-32 of its zip checks out (a `torch.save` file is a zip); that caller checks what the
file holds and then `record`s it. Untrusted bytes are never handed out.

Jobs that build the same entry at once (a parallel sweep) take turns on `exclusive`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import json
import logging
import os
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

RECORD_FORMAT = "compress.cache-record/1"


class Untrusted(Exception):
    """A cache entry that may not be used; the message says why."""


@dataclass(frozen=True)
class Entry:
    """A cache entry's bytes; `recorded` is false for an unrecorded one whose zip
    checksums passed (the caller checks its contents, then `record`s it)."""

    data: bytes
    recorded: bool = True


def record_path(path: Path) -> Path:
    """Where the record of the entry at `path` lives."""
    return path.with_name(f"{path.name}.record.json")


def write_entry(path: Path, write: Callable[[Path], object]) -> int:
    """Make the entry at `path` by calling `write` on a temporary path in the same
    folder, then move it into place with its record; return its size in bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(tmp)
        data = _durable_bytes(tmp)
        # From here until the new record lands, the entry has no record: not trusted.
        record_path(path).unlink(missing_ok=True)
        os.replace(tmp, path)
        record(path, data)
    finally:
        tmp.unlink(missing_ok=True)
    return len(data)


def record(path: Path, data: bytes) -> None:
    """Write (atomically) the record saying the entry at `path` is exactly `data`."""
    text = json.dumps(
        {"format": RECORD_FORMAT, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    )
    target = record_path(path)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        with tmp.open("w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    _sync_folder(path.parent)


def read_entry(path: Path, *, unrecorded: bool = False) -> Entry | None:
    """The entry at `path` once verified, or None when there is none.

    Raises `Untrusted` when it is truncated, altered, or has no valid record (unless
    `unrecorded` and its zip checksums pass: see the module's docstring).
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        text = record_path(path).read_text()
    except FileNotFoundError:
        if not unrecorded:
            raise Untrusted(f"no record beside it ({record_path(path).name})") from None
        problem = _zip_problem(data)
        if problem is not None:
            raise Untrusted(f"no record beside it, and {problem}") from None
        return Entry(data, recorded=False)
    _check(data, text, record_path(path).name)
    return Entry(data)


def _check(data: bytes, text: str, name: str) -> None:
    try:
        saved = json.loads(text)
        if saved.get("format") != RECORD_FORMAT:
            raise ValueError(f"format {saved.get('format')!r}, expected {RECORD_FORMAT!r}")
        size, digest = int(saved["size"]), str(saved["sha256"])
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise Untrusted(f"its record {name} is unreadable ({error})") from None
    if len(data) != size:
        raise Untrusted(f"{len(data)} bytes where its record says {size}")
    if hashlib.sha256(data).hexdigest() != digest:
        raise Untrusted("its SHA-256 differs from its record's (the file was altered)")


def discard(path: Path) -> None:
    """Remove the entry at `path` and its record."""
    path.unlink(missing_ok=True)
    record_path(path).unlink(missing_ok=True)


def _zip_problem(data: bytes) -> str | None:
    """Why `data` is not an intact zip (every member's CRC-32 checked), or None."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        return f"it is not an intact zip ({error})"
    return None if bad is None else f"its zip member {bad} fails its CRC-32"


def _durable_bytes(path: Path) -> bytes:
    """The file's bytes, after flushing them to disk."""
    with path.open("rb") as handle:
        data = handle.read()
        os.fsync(handle.fileno())
    return data


def _sync_folder(folder: Path) -> None:
    """Flush the folder's entries (the renames) to disk, where the OS allows it."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def exclusive(lock: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on `lock` (released by the OS if the process dies).

    A filesystem without locks (Lustre mounted without `flock`) gets a warning, not a
    crash: jobs may then build the same entry twice; atomic writes and records keep the
    cache whole either way.
    """
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as handle:
        try:
            if not _try_lock(handle):
                log.info("cache: another job is building this entry; waiting for %s", lock)
                fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError as error:
            if error.errno not in _NO_LOCKS:
                raise
            log.warning("cache: %s cannot be locked (%s); not waiting", lock, error)
            yield
            return
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


#: What flock raises where the filesystem does not support it.
_NO_LOCKS = (errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK)


def _try_lock(handle: IO[str]) -> bool:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True

"""Writes that SQLite refused because another job held its lock, tried again.

Parallel sweeps (joblib) write to one SQLite file from several processes. SQLite waits for
the lock (MLflow sets a busy timeout), but a transaction that must upgrade a read lock while
another process writes is refused at once with SQLITE_BUSY. Such a refusal is recognised by
the exception chain MLflow raises (`MlflowException` from SQLAlchemy's `OperationalError`
from `sqlite3.OperationalError`, whose error code is BUSY or LOCKED), not by its wording;
a tracking server that hit the same lock answers in text, so there the message decides.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds to wait before each retry (about 16 s in all, on top of SQLite's own timeout).
RETRY_SECONDS = (0.1, 0.2, 0.5, 1.0, 2.0, 4.0, 8.0)

_BUSY_CODES = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
_SERVER_MESSAGE = "database is locked"


def _chain(error: BaseException) -> Iterator[BaseException]:
    """`error` and what it was raised from or during, SQLAlchemy's wrapped `orig` included."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [error]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        todo += [current.__cause__, current.__context__]
        if isinstance(orig, BaseException):
            todo.append(orig)


def is_lock_error(error: BaseException) -> bool:
    """Whether `error` says the store was locked by another writer (worth retrying)."""
    for cause in _chain(error):
        if isinstance(cause, sqlite3.OperationalError):
            code = getattr(cause, "sqlite_errorcode", None)
            if code is not None and code & 0xFF in _BUSY_CODES:  # extended codes: low byte
                return True
    return _SERVER_MESSAGE in str(error)


def retrying(write: Callable[[], T], what: str = "write") -> T:
    """`write()`, tried again with growing waits while the store is locked by another job."""
    for wait in RETRY_SECONDS:
        try:
            return write()
        except Exception as error:
            if not is_lock_error(error):
                raise
            log.debug("mlflow %s: store locked by another job, again in %.1f s", what, wait)
            time.sleep(wait)
    return write()


class QuietLockErrors(logging.Filter):
    """Drops MLflow's own error log of a lock refusal, which `retrying` handles."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is None and record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            error = next((a for a in args if isinstance(a, BaseException)), None)
        return error is None or not is_lock_error(error)

"""Which process owns a run: host, pid and start time, recorded as tags on every run.

A later compress command on the same host reads them back to tell whether the owner still
lives (`compress.tracking.reaper`). The start time (Linux: field 22 of /proc/<pid>/stat,
clock ticks since boot) tells a reused pid from the process that opened the run, and the
pid namespace keeps a container that shares the host's name from judging the host's pids.
"""

from __future__ import annotations

import functools
import os
import socket
from dataclasses import dataclass
from pathlib import Path

HOST_TAG = "compress.host"
PID_TAG = "compress.pid"
START_TAG = "compress.process_start"
NAMESPACE_TAG = "compress.pid_namespace"

#: States of /proc/<pid>/stat in which the process has already died.
_DEAD_STATES = ("Z", "X", "x")


def process_start(pid: int) -> str | None:
    """When `pid` started (clock ticks since boot), "" where /proc is absent, None if it
    no longer runs (or is a zombie, dead but not yet waited for)."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        return "" if _signalable(pid) else None
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The name (field 2) is in parentheses and may hold spaces: fields count from its end.
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in _DEAD_STATES:
        return None
    return fields[19]  # field 22 overall: fields here start at field 3


def _signalable(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    return True


@functools.cache
def pid_namespace() -> str:
    """This process's pid namespace ("" where unknown): pids mean something only inside it."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


@dataclass(frozen=True)
class Owner:
    """The process a run belongs to, as its tags record it."""

    host: str
    pid: int
    start: str
    namespace: str

    @classmethod
    def current(cls) -> Owner:
        pid = os.getpid()
        return cls(socket.gethostname(), pid, process_start(pid) or "", pid_namespace())

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> Owner | None:
        try:
            pid = int(tags[PID_TAG])
        except (KeyError, ValueError):
            return None
        host, start = tags.get(HOST_TAG, ""), tags.get(START_TAG, "")
        return cls(host, pid, start, tags.get(NAMESPACE_TAG, ""))

    def tags(self) -> dict[str, str]:
        return {
            HOST_TAG: self.host,
            PID_TAG: str(self.pid),
            START_TAG: self.start,
            NAMESPACE_TAG: self.namespace,
        }

    def is_gone(self) -> bool:
        """Whether this owner has died, judged from the current process on the same host:
        its pid runs no more, or now belongs to a process that started at another time."""
        started = process_start(self.pid)
        if started is None:
            return True
        return bool(self.start and started and started != self.start)

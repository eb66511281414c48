"""Downloads that fail fast: torchvision and torch.hub open URLs without a timeout, so on a
machine without network a fetch can stall instead of failing into our one-line error."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator


@contextlib.contextmanager
def socket_timeout(seconds: float) -> Iterator[None]:
    """Every socket opened in the block gives up after `seconds`; the old default returns."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)

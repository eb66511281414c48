"""Fixtures shared by test modules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from compress.data import DataBundle, load_dataset
from compress.measure import torch_threads


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread: tiny models on a busy 2-core machine run faster that way
    (modules opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`)."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def data() -> DataBundle:
    """The generated `fake` dataset (no files needed)."""
    return load_dataset({"name": "fake"})

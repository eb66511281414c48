"""One job on several processes: who they are (`World`), training data-parallel
(`Replicas`), and keeping what each computes alike (`check_alike`)."""

from compress.distributed.alike import RanksDisagree, adopt_main_buffers, check_alike
from compress.distributed.replicas import Replicas, batch_norms
from compress.distributed.world import World, backend, current, join, launched, leave

__all__ = [
    "RanksDisagree",
    "Replicas",
    "World",
    "adopt_main_buffers",
    "backend",
    "batch_norms",
    "check_alike",
    "current",
    "join",
    "launched",
    "leave",
]

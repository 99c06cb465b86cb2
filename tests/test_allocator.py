"""A cell's process keeps the memory it frees: the next attack step reuses it instead of faulting in fresh pages."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT, cli_env

ALLOCATIONS = """
import resource, sys, torch
if sys.argv[1] == "keep":
    from benchmark.allocator import keep_freed_memory
    assert keep_freed_memory()
torch.empty(10 * 2**20).fill_(1)  # 40 MB: above glibc's largest adaptive mmap threshold (32 MB)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    torch.empty(10 * 2**20).fill_(1)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_activations_are_reused_not_faulted_in_again():
    faults = {mode: int(subprocess.run([sys.executable, "-c", ALLOCATIONS, mode], capture_output=True, text=True,
                                       check=True, env=cli_env(), cwd=ROOT).stdout)
              for mode in ("default", "keep")}
    # 20 x 40 MB is about 200,000 pages: by default each allocation maps and faults in fresh pages
    assert faults["default"] > 100_000 and faults["keep"] < faults["default"] / 2

"""What cells compute from their dense parent alone (its logits on the test split, its attribution maps), kept for
the process: the cells a grid worker runs share one dense model, so each such result is computed once per worker
instead of once per cell. Entries are keyed by content (the sha256 of the model's weights and of the inputs, and
the settings), so a different model, input or setting is never served another's result.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torch
import torch.nn as nn

from benchmark.cache import tensors_sha256
from benchmark.hashing import stable_hash

ENTRIES = 16  # the most recent results kept (a worker's cells use one or two dense models at a time)
_entries: OrderedDict[tuple, object] = OrderedDict()


def memoised(kind: str, model: nn.Module, inputs: dict[str, torch.Tensor], settings, compute: Callable[[], object]):
    """`compute()`'s result for (`kind`, `model`'s weights, `inputs`, `settings`): from this process's memo, or
    computed now and kept. Callers treat the result as read-only."""
    key = (kind, tensors_sha256(model.state_dict()), tensors_sha256(inputs), stable_hash(settings))
    if key in _entries:
        _entries.move_to_end(key)
        return _entries[key]
    value = _entries[key] = compute()
    while len(_entries) > ENTRIES:
        _entries.popitem(last=False)
    return value

"""What a config value may be, and the error for one that is not: the leaf every config check builds on.

`ConfigError`'s message names the key, the value and what is allowed. `Group` is the pydantic base of a config
group (unknown keys rejected, no type coercion); `number`/`whole` declare a number in a range for a group's
field. `choice`/`in_range` check one value outside a schema (e.g. a class index against the data's classes).
This module imports nothing heavy: it is what a registered method's config declaration imports.
"""
from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict
from pydantic.functional_validators import PlainValidator
from pydantic_core import PydanticCustomError


class ConfigError(ValueError):
    """A config mistake: the message names the key, the value and what is allowed."""


def choice(key: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is unknown; allowed: {sorted(allowed)}")


def in_range(key: str, value, low, high, *, high_open: bool = False) -> None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = number and low <= value and (value < high if high_open else value <= high)
    if not ok:
        raise ConfigError(f"{key}={value!r} is out of range; allowed: {low} <= {key.split('.')[-1]} "
                          f"{'<' if high_open else '<='} {high}")


class Group(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Number:
    """A finite number in a range: `whole` numbers reject fractions (1.5 and 2.0 alike), booleans are never numbers,
    NaN and infinities never lie in a range (NaN compares false with both bounds, so it is named on its own)."""

    def __init__(self, low: float, high: float, *, whole: bool = False, low_open: bool = False,
                 high_open: bool = False):
        self.low, self.high, self.whole, self.low_open, self.high_open = low, high, whole, low_open, high_open

    def allowed(self, name: str, *, kind: bool = True) -> str:
        prefix = ("a whole number " if self.whole else "a number ") if kind else ""
        return f"{prefix}{self.low} {'<' if self.low_open else '<='} {name} {'<' if self.high_open else '<='} {self.high}"

    def __call__(self, value):
        if isinstance(value, bool) or not isinstance(value, int if self.whole else (int, float)):
            raise PydanticCustomError("number_type", "not {kind}", {"kind": "a whole number" if self.whole else "a number"})
        if not math.isfinite(value):
            raise PydanticCustomError("number_type", "not {kind}", {"kind": "a finite number"})
        below = value < self.low or (self.low_open and value == self.low)
        above = value > self.high or (self.high_open and value == self.high)
        if below or above:
            raise PydanticCustomError("number_range", "out of range")
        return value


def number(low, high, **kwargs):
    spec = Number(low, high, **kwargs)
    return Annotated[int if spec.whole else float, PlainValidator(spec), spec]


def whole(low, high):
    return number(low, high, whole=True)


UNIT = number(0.0, 1.0)
COUNT = whole(1, 10_000_000)
EPOCHS = whole(0, 10_000)
LR = number(1e-12, 10.0)
BATCH = whole(1, 1_000_000)
CLASS = whole(0, 100_000)  # checked against the dataset's number of classes by benchmark/validate.py
SEED = whole(0, 2**32 - 1)
SPARSITY = number(0.0, 1.0, high_open=True)

# Keys several pruning methods share (benchmark/pruning/scored.py reads them).
SCOPE = Literal["global", "layerwise"]
SCHEDULE = Literal["oneshot", "iterative"]
ORDER = Literal["together", "last_first"]
STEPS = whole(1, 100)

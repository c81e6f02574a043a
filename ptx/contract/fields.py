"""Reading a contract document's fields: each check returns the value or raises one ContractError
naming the field (``contract field preprocessing[2].std: 0.0 must be > 0``), so a lying or damaged
artifact is refused by what was edited. Shared by the contract (schema.py) and its steps (steps.py)."""
from __future__ import annotations

import math
from typing import Mapping

from .tensors import ContractError


def fail(path: str, problem: str) -> ContractError:
    return ContractError(f"contract field {path}: {problem}")


def finite(path: str, value, *, positive: bool = False, non_negative: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise fail(path, f"{value!r} is not a finite number")
    if positive and value <= 0:
        raise fail(path, f"{value!r} must be > 0")
    if non_negative and value < 0:
        raise fail(path, f"{value!r} must be >= 0")
    return float(value)


def integer(path: str, value, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise fail(path, f"{value!r} is not an integer >= {minimum}")
    return value


def string(path: str, value, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not value and not allow_empty):
        raise fail(path, f"{value!r} is not a{'' if allow_empty else ' non-empty'} string")
    return value


def choice(path: str, enum_cls, value):
    try:
        return enum_cls(value)
    except ValueError:
        choices = ", ".join(e.value for e in enum_cls)
        raise fail(path, f"{value!r} is not one of {choices}") from None


def mapping(path: str, value) -> Mapping:
    if not isinstance(value, Mapping):
        raise fail(path, f"expected an object, got {type(value).__name__}")
    return value


def keys_of(path: str, doc: Mapping, required: set[str], optional: set[str] = frozenset()) -> None:
    missing = sorted(required - set(doc))
    if missing:
        raise fail(f"{path}.{missing[0]}" if path else missing[0], "missing")
    unknown = sorted(set(doc) - required - set(optional))
    if unknown:
        raise fail(f"{path}.{unknown[0]}" if path else unknown[0], "unknown field (made by a newer ptx?)")


def numbers(path: str, value, **checks) -> tuple[float, ...]:
    values = value if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise fail(path, "empty list")
    return tuple(finite(f"{path}[{i}]", v, **checks) for i, v in enumerate(values))

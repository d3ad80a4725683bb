"""Checks of user-given numbers, shared by the model config, the engine config and the requests.

Each returns the value or raises the caller's error type with a message that names the field,
the rule and the value. Python's numbers need care: bool is a subclass of int (True would pass
as 1), a float can be NaN (every comparison with NaN is False, so a `x <= 0` check lets it
through) or infinite, and a JSON writer may spell 2048 as 2048.0.
"""

from __future__ import annotations

import math


def is_int(value: object) -> bool:
    """A true integer: True is an int to Python, but no size, count or token id."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_real(value: object) -> bool:
    """An int or float that is not a bool (NaN and infinities included: see `as_number`)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_finite_real(value: object) -> bool:
    """A number a float holds finitely: not a bool, NaN or an infinity, and no int too large for
    a float (math.isfinite(10**400) raises OverflowError, as every float() of it would)."""
    if not is_real(value):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


# The largest count any size, budget or shape may be: beyond it numpy and torch fail with their
# own errors ("Maximum allowed dimension exceeded", an int64 overflow) instead of a message.
MAX_COUNT = 2**31 - 1


def as_int(value: object, name: str, error: type[Exception], minimum: int = 1, floats: bool = False) -> int:
    """An integer in [minimum, MAX_COUNT]; with `floats`, a whole float (2048.0, as some JSON
    writers spell it) counts too. 2.5, True, "64" never do."""
    whole = int(value) if floats and isinstance(value, float) and value.is_integer() else value
    if not is_int(whole) or whole < minimum:
        raise error(f"{name} must be an integer >= {minimum}, got {value!r}")
    if whole > MAX_COUNT:
        raise error(f"{name} must be an integer <= {MAX_COUNT:,}, got {value!r}")
    return whole


def as_flag(value: object, name: str, error: type[Exception]) -> bool:
    """True or False, nothing else: `if chat:` would read "no", 1, [0] or None as a choice, and a
    numpy bool_ is no bool (its `is True` is False)."""
    if not isinstance(value, bool):
        raise error(f"{name} must be True or False, got {value!r}")
    return value


def as_number(
    value: object, name: str, error: type[Exception], above: float = 0.0, at_most: float = math.inf
) -> float:
    """A finite number in (above, at_most]: NaN and the infinities are refused."""
    if not is_finite_real(value) or not above < value <= at_most:
        rule = f"> {above:g}" if at_most == math.inf else f"in ({above:g}, {at_most:g}]"
        raise error(f"{name} must be a finite number {rule}, got {value!r}")
    return float(value)

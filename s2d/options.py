"""Plugin options: a plugin class declares ``options()`` (names and defaults); users pass values
from a config file or ``KEY=VALUE`` flags. One rule for every kind: unknown names are an error
that lists the known ones."""

from __future__ import annotations

from typing import Any


def apply_options(obj: Any, kind: str, options: dict, error: type[Exception] = ValueError) -> None:
    """Set each declared option on ``obj`` (the given value, else the default)."""
    declared = obj.options()
    unknown = sorted(set(options) - set(declared))
    if unknown:
        raise error(f"{kind} {obj.name!r}: unknown option(s) {', '.join(unknown)}; "
                    f"options: {', '.join(sorted(declared)) or 'none'}")
    for key, default in declared.items():
        value = options.get(key, default)
        if key in options:
            value = check_type(value, default, f"{kind} {obj.name!r}: option {key!r}", error)
        setattr(obj, key, value)


def check_type(value: Any, default: Any, where: str, error: type[Exception] = ValueError) -> Any:
    """``value`` if it has the type of the option's default (an int where a float is expected is
    fine; a default of None takes anything), else ``error`` naming the option and both types."""
    import math

    if default is None or value is None and default is None:
        return value
    expected = type(default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    ok = isinstance(value, expected) and not (expected is not bool and isinstance(value, bool))
    if ok and isinstance(value, float) and not math.isfinite(value):
        raise error(f"{where} must be a finite number, got {value!r}")
    if not ok:
        raise error(f"{where} must be {expected.__name__} (like its default {default!r}), got {value!r}")
    return value

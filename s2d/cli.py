"""The `s2d` command line. Heavy libraries are imported inside commands, never here."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from s2d import __version__
from s2d.plugins import KINDS, PluginError, UnknownNameError


def _plugins(ctx: click.Context):
    from s2d.plugins import get_plugins

    root = ctx.find_root()
    if root.obj is None:
        root.obj = {}
    if "plugins" not in root.obj:
        try:
            root.obj["plugins"] = get_plugins(plugins_dir=root.params.get("plugins_dir"))
        except PluginError as exc:
            raise click.ClickException(str(exc)) from None
    return root.obj["plugins"]


def quiet_libraries(verbose: int) -> None:
    """Engine and library logs at WARNING (ERROR for the chattiest) unless -v, set before any of
    them is imported: s2d's own stage lines, progress bars and summary are what a run shows.
    vLLM's "No available shared memory broadcast block found in 60 seconds" is a WARNING that
    only means the engine was busy for a minute (a long prefill or a slow step), not a hang."""
    import logging
    import os

    if verbose:
        level = "DEBUG" if verbose > 1 else "INFO"
        os.environ.setdefault("VLLM_LOGGING_LEVEL", level)
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", level.lower())
        logging.basicConfig(level=level)
        return
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for name in ("lm_eval", "lm-eval", "datasets", "accelerate", "peft", "filelock", "torch", "vllm"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import warnings

    for module in ("transformers", "torch", "peft", "lm_eval", "vllm", "accelerate", "datasets"):
        warnings.filterwarnings("ignore", module=module)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="s2d")
@click.option("--plugins-dir", type=click.Path(file_okay=False), envvar="S2D_PLUGINS_DIR",
              help="Also load every *.py file in DIR as a plugin (unpublished experiments).")
@click.option("--verbose", "-v", count=True, help="Show engine and library logs (-vv: debug).")
@click.pass_context
def cli(ctx, plugins_dir, verbose):
    """s2d: distil System 2 methods (CoT, RaR, S2A, BSM, ...) into direct System 1 answers.

    Plugins add methods, curators, tasks, trainers and backends: see `s2d plugins`.
    """
    quiet_libraries(verbose)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def plugins(ctx, as_json):
    """List loaded plugins (built-in and installed), their hooks, and load errors."""
    rows = _plugins(ctx).plugin_rows()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        hooks = ", ".join(r["hooks"]) or "-"
        status = f"ERROR: {r['error'].splitlines()[0]}" if r["error"] else hooks
        click.echo(f"{r['name']:<24} {r['version'] or '-':<10} {r['source']:<10} {status}")


@cli.command(name="list")
@click.argument("kind", type=click.Choice(KINDS))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def list_(ctx, kind, as_json):
    """List registered methods, curators, tasks, trainers or backends."""
    rows = []
    for entry in _plugins(ctx).entries(kind):
        row = entry.row()
        if kind == "backends" and hasattr(entry.obj, "available"):
            ok, why = entry.obj.available()
            row["available"] = ok
            if not ok:
                row["why"] = why
        rows.append(row)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        extra = "" if r.get("available", True) else f"  (unavailable: {r['why']})"
        click.echo(f"{r['name']:<16} {r['plugin']:<24} {r['description']}{extra}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def env(as_json):
    """Versions of Python, torch, transformers, peft, lm-eval, vLLM and the device."""
    from s2d.backends import default_backend_name
    from s2d.envinfo import device, versions

    info = {"versions": versions(), "device": device(), "default_backend": default_backend_name()}
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    for k, v in info["versions"].items():
        click.echo(f"{k:<14} {v or '-'}")
    click.echo(f"{'device':<14} {json.dumps(info['device'])}")
    click.echo(f"{'backend':<14} {info['default_backend']} (default)")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def models(as_json):
    """Known model aliases. Any local folder, .gguf file or hub id also works as --model."""
    from s2d.models import cache_dir, model_rows

    rows = model_rows()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        mark = "*" if r["default"] else " "
        click.echo(f"{mark} {r['alias']:<16} {r['description']}")
        click.echo(f"    installed: {'yes' if r['installed'] else 'no'}  converted: {'yes' if r['cached'] else 'no'}  "
                   f"hub: {r['hub_id']}")
        click.echo(f"    source: {r['source']}")
    click.echo(f"cache: {cache_dir()} (set S2D_CACHE to move it)")


def backend_options(f):
    """Options shared by every command that generates."""
    for opt in reversed([
        click.option("--model", "-m", default=None, help="Alias, model folder, .gguf file or hub id "
                     "[default: smollm2-135m]."),
        click.option("--backend", "-b", default=None, help="Generation engine [default: vllm if it "
                     "imports, else hf]."),
        click.option("--dtype", default=None, help="auto, bfloat16, float16 or float32."),
        click.option("--batch-size", type=int, default=None, help="hf: sequences decoded together."),
        click.option("--threads", type=int, default=None, help="hf: torch CPU threads."),
        click.option("--trust-remote-code", is_flag=True, help="Allow model code from the hub (off by default)."),
        click.option("--seed", type=int, default=0, show_default=True, help="Run seed (per-request seeds derive from it)."),
    ]):
        f = opt(f)
    return f


def make_backend(ctx, backend, model, seed, dtype, batch_size, threads, trust_remote_code):
    from s2d.backends import load_backend
    from s2d.models import ModelError

    _plugins(ctx)
    try:
        return load_backend(backend, model, seed=seed, dtype=dtype, batch_size=batch_size, threads=threads,
                            trust_remote_code=trust_remote_code or None)
    except (UnknownNameError, ModelError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from None


def _check_output(out, *inputs, folders=()) -> None:
    from s2d.files import InputError, check_output

    try:
        check_output(out, *inputs, folders=folders)
    except InputError as exc:
        raise click.ClickException(str(exc)) from None


class _FiniteNonNegative(click.ParamType):
    name = "number >= 0"

    def convert(self, value, param, ctx):
        import math

        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number) or number < 0:
            self.fail(f"{value!r} is not a finite number >= 0", param, ctx)
        return number


FINITE_NON_NEGATIVE = _FiniteNonNegative()


def parse_value(text: str):
    """A KEY=VALUE option's value: JSON when it parses (numbers, true/false, lists), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_kv(items, hint: str) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=hint)
        out[key] = parse_value(value)
    return out


def parse_set(items) -> dict:
    """``--set KEY=VALUE`` (repeatable): a config line on the command line. KEY is a run setting
    (``n``, ``rounds``) or ``SETTING.KEY`` inside a mapping setting (``method_options.shots``)."""
    from s2d.distill import DEFAULTS

    out: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        top, dot, sub = key.partition(".")
        if not sep or not top or (dot and not sub):
            raise click.BadParameter(f"{item!r} is not KEY=VALUE or SETTING.KEY=VALUE", param_hint="--set")
        if top not in DEFAULTS:
            raise click.BadParameter(f"{item!r}: unknown setting {top!r}; settings: {', '.join(sorted(DEFAULTS))}",
                                     param_hint="--set")
        if dot and not isinstance(DEFAULTS[top], dict):
            raise click.BadParameter(f"{item!r}: {top!r} is not a mapping setting", param_hint="--set")
        value = parse_value(raw)
        if dot:
            out.setdefault(top, {})[sub] = value
        else:
            out[top] = value
    return out


def merge_settings(config: dict, overrides: dict) -> dict:
    """``overrides`` over ``config``; mapping settings merge one level deep."""
    out = dict(config)
    for key, value in overrides.items():
        out[key] = {**(out.get(key) or {}), **value} if isinstance(value, dict) and isinstance(out.get(key), dict) \
            else value
    return out


def with_set(cfg, set_items):
    """``--set`` as the last layer: over the config file and every other flag, mapping settings
    merged one level deep (``--set method_options.shots=4`` keeps the other method options)."""
    from s2d.distill import RunConfig

    if not set_items:
        return cfg
    return RunConfig.build(merge_settings(cfg.settings, parse_set(set_items)))


def load_config(path: str | None) -> dict:
    """A run config (YAML or JSON): method, method_options, templates, curator, curator_options, task_options."""
    if not path:
        return {}
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise click.ClickException(f"{path}: cannot read config ({exc})") from None
    if not isinstance(data, dict):
        raise click.ClickException(f"{path}: a config must be a mapping of settings")
    from s2d.distill import DEFAULTS

    allowed = set(DEFAULTS) | {"scale"}  # one list of run settings, the one `s2d distill` fills in
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise click.ClickException(f"{path}: unknown setting(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    for key in ("method_options", "templates", "curator_options", "task_options", "trainer_options"):
        if not isinstance(data.get(key, {}), dict):
            raise click.ClickException(f"{path}: {key} must be a mapping")
    return data


def method_settings(config: dict, options: dict) -> dict:
    """Method options from a config file (method_options, templates) overridden by -o KEY=VALUE."""
    merged = dict(config.get("method_options") or {})
    if config.get("templates"):
        merged["templates"] = dict(config["templates"])
    merged.update(options)
    return merged


def method_options_decorator(f):
    for opt in reversed([
        click.option("--method", default=None, help="Method (see `s2d list methods`) [default: system1]."),
        click.option("--method-option", "-o", "method_option", multiple=True, metavar="KEY=VALUE",
                     help="Method option, e.g. n=8, shots=4, respond_n=8 (repeatable)."),
        click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="YAML/JSON with method, method_options, templates (prompt overrides), task_options."),
        click.option("--task-option", "task_option", multiple=True, metavar="KEY=VALUE",
                     help="Option for the task plugin, e.g. data_dir=... or seed=1 (repeatable)."),
    ]):
        f = opt(f)
    return f


def _task(ctx, name: str, options: dict):
    from s2d.tasks.base import TaskDataError

    plugins = _plugins(ctx)
    try:
        cls = plugins.get("tasks", name).obj
    except UnknownNameError as exc:
        raise click.ClickException(str(exc)) from None
    from s2d.lmeval.tasks import task_kwargs

    try:
        return cls(**task_kwargs(cls, options))
    except (TypeError, ValueError, TaskDataError) as exc:
        raise click.ClickException(f"task {name!r}: {exc}" if not str(exc).startswith("task ") else str(exc)) from None


def _method(ctx, name: str, task, options: dict):
    from s2d.methods.base import MethodConfigError
    from s2d.traces import build_method

    _plugins(ctx)
    try:
        return build_method(name, task, **options)
    except (UnknownNameError, MethodConfigError, TypeError) as exc:
        raise click.ClickException(str(exc)) from None


def _docs(task, split: str, limit: int | None):
    from s2d.tasks.base import TaskDataError

    try:
        docs = task.docs(split)
    except (TaskDataError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    return docs if limit is None else docs[:limit]


@cli.command()
@backend_options
@method_options_decorator
@click.option("--task", "task_name", default=None, help="Run a method over a task split (writes traces).")
@click.option("--split", default="train", show_default=True, help="Task split (train is used unlabeled).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N documents of the split.")
@click.option("--perturb", is_flag=True, help="Also run every input's perturbation (for the perturb curator).")
@click.option("--cache", "cache_dir", default=None, type=click.Path(file_okay=False),
              help="Generation cache folder [default: $S2D_CACHE/generations].")
@click.option("--no-cache", is_flag=True, help="Generate everything afresh and store nothing.")
@click.option("--chunk-sequences", type=click.IntRange(min=1), default=2048, show_default=True,
              help="Sequences per engine call within a stage; a kill loses at most one chunk.")
@click.option("--input", "input_path", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Instead of --task: JSONL of raw requests, {'messages': [...]} or {'prompt': '...'} plus "
                   "optional max_new_tokens, temperature, top_p, n, stop, seed, adapter, id, first_sample.")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="Output JSONL.")
@click.option("--n", type=click.IntRange(min=1), default=None, help="Samples per input [default: 1].")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=None,
              help="[default: 256 with --input; the method's own per stage with --task]")
@click.option("--temperature", type=FINITE_NON_NEGATIVE, default=None,
              help="[default: 0 (greedy) for n=1, 0.7 for n>1]")
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="[default: 1.0, or the method's own]")
@click.option("--stop", multiple=True, help="Stop string (repeatable; --input only).")
@click.option("--adapter", type=click.Path(exists=True, file_okay=False), default=None, help="LoRA adapter folder.")
@click.option("--progress/--no-progress", default=True)
@click.pass_context
def generate(ctx, model, backend, dtype, batch_size, threads, trust_remote_code, seed, method, method_option,
             config_path, task_option, task_name, split, limit, perturb, cache_dir, no_cache, chunk_sequences,
             input_path, out_path, n,
             max_new_tokens, temperature, top_p, stop, adapter, progress):
    """Run a method over a task split and write traces (--task), or generate for raw requests (--input).

    Traces go through the generation cache: rerunning a killed run generates only what is missing."""
    if (task_name is None) == (input_path is None):
        raise click.UsageError("give exactly one of --task (run a method) or --input (raw requests)")
    if input_path:
        if method or method_option or config_path or task_option or perturb:
            raise click.UsageError("--method/-o/--config/--task-option/--perturb go with --task, not --input")
        return _generate_requests(ctx, model, backend, dtype, batch_size, threads, trust_remote_code, seed,
                                  input_path, out_path, 1 if n is None else n, 256 if max_new_tokens is None
                                  else max_new_tokens, temperature, 1.0 if top_p is None else top_p, stop,
                                  adapter, progress)
    if stop:  # a method's stages set their own stop strings; never drop a flag silently
        raise click.UsageError("--stop goes with --input; with --task each stage of the method sets its own")
    from s2d.files import write_jsonl
    from s2d.traces import generate_traces, open_cache

    config = load_config(config_path)
    method = method or config.get("method") or "system1"
    options = method_settings(config, parse_kv(method_option, "--method-option"))
    for key, value in (("n", n), ("temperature", temperature), ("top_p", top_p), ("max_new_tokens", max_new_tokens)):
        if value is not None:
            options[key] = value
    task = _task(ctx, task_name, {**(config.get("task_options") or {}), **parse_kv(task_option, "--task-option")})
    m = _method(ctx, method, task, options)
    docs = _docs(task, split, limit)
    cache = open_cache(None if no_cache else (cache_dir or True))
    _check_output(out_path, folders=[cache.dir] if cache is not None else [])
    engine = make_backend(ctx, backend, model, seed, dtype, batch_size, threads, trust_remote_code)
    start = time.perf_counter()
    from s2d.methods.base import MethodConfigError

    with engine:
        try:
            traces, stats = generate_traces(engine, task, m, docs, split=split, cache=cache, seed=seed,
                                            adapter=adapter, perturb=perturb, progress=progress,
                                            chunk_sequences=chunk_sequences)
        except (MethodConfigError, ValueError) as exc:
            raise click.ClickException(str(exc)) from None
    write_jsonl(out_path, traces)
    tokens = [s["total_tokens"] for t in traces for s in t["samples"]]
    click.echo(f"{len(traces)} inputs x {m.n} samples of {method} on {task_name}/{split}: {stats['generated']} "
               f"generated, {stats['reused']} from the cache, mean {sum(tokens) / max(len(tokens), 1):.1f} tokens "
               f"per sample, {time.perf_counter() - start:.1f} s -> {out_path}", err=True)


def _generate_requests(ctx, model, backend, dtype, batch_size, threads, trust_remote_code, seed, input_path,
                       out_path, n, max_new_tokens, temperature, top_p, stop, adapter, progress):
    from s2d.backends.base import Request
    from s2d.envinfo import versions
    from s2d.files import InputError, read_jsonl, write_jsonl

    defaults = {"n": n, "max_new_tokens": max_new_tokens, "top_p": top_p, "stop": list(stop),
                "temperature": temperature if temperature is not None else (0.0 if n == 1 else 0.7),
                "adapter": adapter}
    def parse(rec):
        req = Request.from_dict(rec, defaults)
        if req.adapter is not None and not (Path(req.adapter) / "adapter_config.json").is_file():
            raise ValueError(f"'adapter' {req.adapter!r} is not a PEFT adapter folder (no adapter_config.json)")
        return req

    try:  # validate every line before any model is loaded
        requests = read_jsonl(input_path, parse)
    except (InputError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    if not requests:
        raise click.ClickException(f"{input_path}: no requests")
    _check_output(out_path, input_path)
    engine = make_backend(ctx, backend, model, seed, dtype, batch_size, threads, trust_remote_code)
    start = time.perf_counter()
    from s2d.backends.base import PromptTooLongError

    with engine:
        try:
            outputs = engine.generate(requests, progress=progress)
        except PromptTooLongError as exc:
            raise click.ClickException(f"{input_path}: {exc}") from None
        vers = {**versions(), **engine.versions()}
    wall = time.perf_counter() - start
    from s2d.backends.base import sample_seed

    def records():
        for i, (req, outs) in enumerate(zip(requests, outputs)):
            yield {"id": req.id if req.id is not None else i, "request": req.as_dict(),
                   "completions": [c.as_dict() for c in outs],
                   "prompt_tokens": outs[0].prompt_tokens,
                   "completion_tokens": sum(c.completion_tokens for c in outs),
                   "seed": None if req.greedy else sample_seed(seed, req, i, req.first_sample), "run_seed": seed,
                   "backend": engine.name, "model": model or "smollm2-135m", "model_path": engine.model_path,
                   "versions": vers}

    write_jsonl(out_path, records())
    tokens = sum(c.completion_tokens for outs in outputs for c in outs)
    click.echo(f"{len(requests)} requests, {tokens} generated tokens in {wall:.1f} s including the engine's start "
               f"with {engine.name} -> {out_path}", err=True)


@cli.command()
@click.option("--curator", "-c", default="majority", show_default=True, help="See `s2d list curators`.")
@click.option("--traces", "traces_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Traces JSONL written by `s2d generate --task ...`.")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="Training set (TRL prompt-completion JSONL); .dropped.jsonl and .summary.json go beside it.")
@click.option("--curator-option", "curator_option", multiple=True, metavar="KEY=VALUE",
              help="Curator option, e.g. threshold=0.5 (repeatable).")
@click.option("--task-option", "task_option", multiple=True, metavar="KEY=VALUE")
@click.option("--model", "-m", default=None, help="Model for curators that ask one (usc) [default: smollm2-135m].")
@click.option("--backend", "-b", default=None)
@click.option("--dtype", default=None)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--cache", "cache_dir", default=None, type=click.Path(file_okay=False))
@click.option("--no-cache", is_flag=True)
@click.option("--progress/--no-progress", default=True)
@click.pass_context
def curate(ctx, curator, traces_path, out_path, curator_option, task_option, model, backend, dtype, seed, cache_dir,
           no_cache, progress):
    """Turn traces into a training set with an unsupervised curator; print the summary."""
    from s2d.curators.base import write_curated
    from s2d.files import InputError
    from s2d.traces import build_curator, load_traces, make_runner, open_cache

    try:
        traces = load_traces(traces_path)
    except (InputError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    if not traces:
        raise click.ClickException(f"{traces_path}: no traces")
    tasks = {t.get("task") for t in traces}
    if len(tasks) != 1 or None in tasks:
        raise click.ClickException(f"{traces_path}: traces must come from one task, found {sorted(map(str, tasks))}")
    task = _task(ctx, tasks.pop(), parse_kv(task_option, "--task-option"))
    out = Path(out_path)
    for written in (out, out.with_name(out.stem + ".dropped.jsonl"), out.with_name(out.stem + ".summary.json")):
        _check_output(written, traces_path)
    try:
        cur = build_curator(curator, task, **parse_kv(curator_option, "--curator-option"))
    except (UnknownNameError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    engine = None
    if cur.needs_model:
        engine = make_backend(ctx, backend, model, seed, dtype, None, None, False)
    try:
        runner = make_runner(engine, f"curator:{curator}", cache=open_cache(None if no_cache else (cache_dir or True)),
                             seed=seed, progress=progress) if engine else None
        decisions = cur.curate(traces, runner)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        if engine is not None:
            engine.close()
    summary = write_curated(out_path, traces, decisions, curator=curator,
                            extra={"traces": str(traces_path), "method": traces[0].get("method")})
    click.echo(json.dumps(summary, indent=2))


@cli.command()
@click.option("--data", "data_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Curated prompt-completion JSONL (from `s2d curate`).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Adapter (lora) or model (full) folder; checkpoints go under OUT/checkpoints.")
@click.option("--trainer", default="lora", show_default=True, help="See `s2d list trainers`.")
@click.option("--trainer-option", "-O", "trainer_option", multiple=True, metavar="KEY=VALUE",
              help="e.g. epochs=3 learning_rate=2e-4 rank=16 batch_size=8 (repeatable).")
@click.option("--model", "-m", default=None, help="Base model [default: smollm2-135m].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--overwrite", is_flag=True, help="Start over where OUT holds checkpoints of other data or settings.")
@click.option("--progress/--no-progress", default=True)
@click.pass_context
def train(ctx, data_path, out_dir, trainer, trainer_option, model, seed, overwrite, progress):
    """Fine-tune on a curated set; resumes from OUT's last checkpoint after a kill.

    Runs data-parallel under `accelerate launch --multi_gpu --num_processes N -m s2d.cli train ...`
    (also on CPUs, over gloo)."""
    from s2d.models import ModelError, resolve_model
    from s2d.trainers.base import TrainerError

    plugins = _plugins(ctx)
    try:
        cls = plugins.get("trainers", trainer).obj
        t = cls(**parse_kv(trainer_option, "--trainer-option"))
        t.overwrite = overwrite
        from s2d.trainers.base import load_records

        load_records(data_path)  # every line checked before the model is converted or loaded
        path = resolve_model(model)
        out = t.train(path, data_path, out_dir, seed=seed, progress=progress)
    except (UnknownNameError, TrainerError, ModelError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{trainer} -> {out}")


@cli.command()
@click.option("--task", "task_name", default=None, help="Task (see `s2d list tasks`).")
@click.option("--method", default=None, help="System 2 method to distil [default: rar2]; system1 = 'Distill System 1'.")
@click.option("--curator", default=None, help="Curator [default: majority]; none = no curation.")
@click.option("--trainer", default=None, help="Trainer [default: lora].")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Run config (YAML/JSON); flags override it.")
@click.option("--name", default=None, help="Run name [default: task-method-curator-trainer].")
@click.option("--runs-dir", default="runs/distill", show_default=True, type=click.Path(file_okay=False))
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Run folder [default: RUNS_DIR/NAME].")
@click.option("--n", type=click.IntRange(min=1), default=None, help="Samples per train input [default: 8].")
@click.option("--train-limit", type=int, default=None, help="Only the first N train inputs.")
@click.option("--eval-limit", type=int, default=None, help="Only the first N test documents.")
@click.option("--method-option", "-o", "method_option", multiple=True, metavar="KEY=VALUE")
@click.option("--curator-option", "curator_option", multiple=True, metavar="KEY=VALUE")
@click.option("--trainer-option", "-O", "trainer_option", multiple=True, metavar="KEY=VALUE")
@click.option("--task-option", "task_option", multiple=True, metavar="KEY=VALUE")
@click.option("--model", "-m", default=None, help="[default: smollm2-135m]")
@click.option("--backend", "-b", default=None, help="[default: vllm if it imports, else hf]")
@click.option("--dtype", default=None)
@click.option("--seed", type=int, default=None, help="[default: 0]")
@click.option("--scale", default=None, help="Apply the config's `scale: {NAME: overrides}` (e.g. paper).")
@click.option("--cache", "cache_dir", default=None, type=click.Path(file_okay=False),
              help="Generation cache folder [default: $S2D_CACHE/generations, shared by runs].")
@click.option("--export", "export_dir", default=None, type=click.Path(file_okay=False),
              help="Also copy the finished run, without adapter weights and traces, to this folder (for results/).")
@click.option("--set", "set_items", multiple=True, metavar="KEY=VALUE",
              help="A run setting, as in a config file: rounds=2, temperature=0, method_options.shots=4 (repeatable).")
@click.option("--progress/--no-progress", default=True)
@click.pass_context
def distill(ctx, task_name, method, curator, trainer, config_path, name, runs_dir, out_dir, n, train_limit,
            eval_limit, method_option, curator_option, trainer_option, task_option, model, backend, dtype, seed,
            scale, cache_dir, export_dir, set_items, progress):
    """Generate on the train split, curate, train, and score System 1, System 2 and the distilled
    model through lm-eval; every stage resumes after a kill. Prints a three-row summary."""
    from s2d.distill import DistillError, DistillRun, RunConfig, apply_scale, format_summary
    from s2d.lmeval.run import safe_name

    _plugins(ctx)
    try:
        config = apply_scale(load_config(config_path), scale)
    except DistillError as exc:
        raise click.ClickException(f"{config_path}: {exc}") from None
    flags = {"task": task_name, "method": method, "curator": curator, "trainer": trainer, "n": n,
             "train_limit": train_limit, "eval_limit": eval_limit, "model": model, "backend": backend, "seed": seed}
    for key, items, hint in (("method_options", method_option, "--method-option"),
                             ("curator_options", curator_option, "--curator-option"),
                             ("trainer_options", trainer_option, "--trainer-option"),
                             ("task_options", task_option, "--task-option")):
        if items:
            flags[key] = {**(config.get(key) or {}), **parse_kv(items, hint)}
    try:
        cfg = with_set(RunConfig.build(config, flags), set_items)
        for kind, key in (("tasks", "task"), ("methods", "method"), ("curators", "curator"), ("trainers", "trainer")):
            _plugins(ctx).get(kind, cfg[key])
    except (DistillError, UnknownNameError) as exc:
        raise click.ClickException(str(exc)) from None
    folder = out_dir or str(Path(runs_dir) / safe_name(name or cfg.name()))
    if export_dir:  # a refusal found now, not after the whole run
        from s2d.distill import check_export_dest

        try:
            check_export_dest(export_dir)
        except DistillError as exc:
            raise click.ClickException(str(exc)) from None
    run = DistillRun(cfg, folder, progress=progress, echo=lambda m: click.echo(m, err=True),
                     backend_options={"dtype": dtype} if dtype else None, cache=cache_dir or True)
    from s2d.files import InputError
    from s2d.methods.base import MethodConfigError
    from s2d.models import ModelError
    from s2d.tasks.base import TaskDataError
    from s2d.trainers.base import TrainerError

    try:
        summary = run.run()
    # Expected errors become one line; anything else (a bug) keeps its traceback. Settings were
    # checked before the run started (DistillRun.check), so a ValueError now is not the user's.
    except (DistillError, MethodConfigError, TrainerError, TaskDataError, ModelError, InputError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(format_summary(summary))
    click.echo(f"-> {folder}", err=True)
    if export_dir:
        from s2d.distill import export_run

        click.echo(f"-> {export_run(folder, export_dir)}", err=True)
    if summary.get("error"):
        raise click.ClickException(summary["error"])


@cli.command()
@click.argument("table", type=click.Choice(["table1", "table2", "table3", "table4"]))
@click.option("--scale", type=click.Choice(["small", "paper"]), default="small", show_default=True,
              help="small: sized for a 2-core CPU and the embedded model; paper: the paper's sizes (GPU).")
@click.option("--configs-dir", default="results/configs", show_default=True, type=click.Path(file_okay=False))
@click.option("--runs-dir", default="runs/reproduce", show_default=True, type=click.Path(file_okay=False))
@click.option("--out", "out_dir", default="results/reproduce", show_default=True, type=click.Path(file_okay=False))
@click.option("--backend", "-b", default=None)
@click.option("--model", "-m", default=None,
              help="[default: smollm2-135m] Another model gets its own run folders and table file.")
@click.option("--progress/--no-progress", default=True)
@click.pass_context
def reproduce(ctx, table, scale, configs_dir, runs_dir, out_dir, backend, model, progress):
    """Run a paper table's configs (reusing finished runs) and write it beside the paper's numbers."""
    from s2d.reproduce import run_table

    _plugins(ctx)
    try:
        path = run_table(table, scale=scale, configs_dir=configs_dir, runs_dir=runs_dir, out_dir=out_dir,
                         backend=backend, progress=progress, echo=lambda m: click.echo(m, err=True), model=model)
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(path.read_text())
    click.echo(f"-> {path}", err=True)


@cli.command(name="show-prompts")
@method_options_decorator
@click.option("--task", "task_name", required=True)
@click.option("--split", default="test", show_default=True)
@click.option("--index", type=int, default=0, show_default=True, help="Which document of the split.")
@click.pass_context
def show_prompts(ctx, method, method_option, config_path, task_option, task_name, split, index):
    """Print every rendered stage of a method for one document (nothing is generated)."""
    from s2d.methods.base import MethodConfigError, run_method
    from s2d.traces import make_runner

    config = load_config(config_path)
    method = method or config.get("method") or "system1"
    task = _task(ctx, task_name, {**(config.get("task_options") or {}), **parse_kv(task_option, "--task-option")})
    m = _method(ctx, method, task, {**method_settings(config, parse_kv(method_option, "--method-option")), "n": 1})
    docs = _docs(task, split, None)
    if not 0 <= index < len(docs):
        raise click.ClickException(f"--index {index}: {task_name}/{split} has {len(docs)} documents")
    shown = []
    runner = make_runner(None, method, record=lambda stage, prompts: shown.append((stage, prompts)))
    try:
        run_method(m, runner, [docs[index]])
    except MethodConfigError as exc:
        raise click.ClickException(str(exc)) from None
    for stage, prompts in shown:
        for j, prompt in enumerate(prompts):
            suffix = f" [{j + 1}/{len(prompts)}]" if len(prompts) > 1 else ""
            click.echo(click.style(f"=== {method} / stage {stage}{suffix} ===", bold=True))
            click.echo(prompt)
            click.echo()


@cli.command(name="eval")
@backend_options
@method_options_decorator
@click.option("--tasks", "-t", required=True, help="Comma-separated task names (see `s2d list tasks`).")
@click.option("--adapter", type=click.Path(exists=True, file_okay=False), default=None, help="LoRA adapter folder.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Evaluate the first N documents of each task.")
@click.option("--log-samples", is_flag=True, help="Keep every document's prompt, output and metrics.")
@click.option("--results-dir", default="results/eval", show_default=True, type=click.Path(file_okay=False))
@click.option("--label", default=None, help="Condition name in the records [default: method(+options)(+adapter)].")
@click.option("--cache", "cache_dir", default=None, type=click.Path(file_okay=False),
              help="Use a generation cache folder (resume a killed eval); off by default.")
@click.option("--overwrite", is_flag=True, help="Replace records made with other settings (refused by default).")
@click.option("--progress/--no-progress", default=True)
@click.pass_context
def eval_(ctx, model, backend, dtype, batch_size, threads, trust_remote_code, seed, method, method_option,
          config_path, task_option, tasks, adapter, limit, log_samples, results_dir, label, cache_dir, overwrite,
          progress):
    """Score a model (System 1, a method, or base + adapter) on s2d's tasks through lm-eval.

    Task options subset=N subset_seed=S evaluate a seeded random subset of at least N documents
    (judged pairs stay whole), the same for every condition."""
    from s2d.lmeval.run import evaluate
    from s2d.traces import open_cache

    names = [t.strip() for t in tasks.split(",") if t.strip()]
    plugins = _plugins(ctx)
    config = load_config(config_path)
    method = method or config.get("method") or "system1"
    from s2d.lmeval.tasks import check_task_plugin

    try:
        for name in names:
            plugins.get("tasks", name)
            check_task_plugin(name)
        plugins.get("methods", method)
    except (UnknownNameError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    options = {**(config.get("task_options") or {}), **parse_kv(task_option, "--task-option")}
    m_options = method_settings(config, parse_kv(method_option, "--method-option"))
    for name in names:  # check the method's options against each task before any model loads
        _method(ctx, method, _task(ctx, name, {k: v for k, v in options.items()
                                               if k not in ("subset", "subset_seed")}), m_options)
    from s2d.lmeval.run import RecordExistsError, check_record, planned_records

    try:  # a record of other settings in the way is found before any model loads
        from s2d.backends import model_path_for
        from s2d.models import ModelError

        try:
            loads = model_path_for(backend, model or "smollm2-135m")
        except ModelError as exc:
            raise click.ClickException(str(exc)) from None
        for path, identity in planned_records(results_dir=results_dir, model_ref=model or "smollm2-135m",
                                              model_path=loads, tasks=names, method=method, adapter=adapter,
                                              limit=limit, label=label, task_options=options or None,
                                              method_options=m_options or None, seed=seed):
            check_record(path, identity, overwrite)
    except RecordExistsError as exc:
        raise click.ClickException(str(exc)) from None
    engine = make_backend(ctx, backend, model, seed, dtype, batch_size, threads, trust_remote_code)
    from s2d.methods.base import MethodConfigError
    from s2d.tasks.base import TaskDataError

    with engine:
        try:
            paths = evaluate(engine, model_ref=model or "smollm2-135m", tasks=names, method=method, adapter=adapter,
                             limit=limit, seed=seed, log_samples=log_samples, results_dir=results_dir, label=label,
                             task_options=options or None, progress=progress, method_options=m_options or None,
                             cache=open_cache(cache_dir), overwrite=overwrite)
        except (TaskDataError, MethodConfigError, ValueError) as exc:
            raise click.ClickException(str(exc)) from None
    from s2d.lmeval.run import load_record, metrics_of

    for path in paths:
        rec = load_record(path)
        shown = ", ".join(f"{k}={v:.3f}" for k, v in metrics_of(rec).items())
        click.echo(f"{rec['s2d']['task']:<16} {rec['s2d']['condition']:<20} {shown}  "
                   f"tokens={rec['s2d']['mean_generated_tokens']:.1f}  -> {path}")


@cli.command()
@click.argument("results_dir", default="results/eval", type=click.Path(file_okay=False))
@click.option("--out", default=None, type=click.Path(file_okay=False), help="Where to write [default: RESULTS_DIR].")
def leaderboard(results_dir, out):
    """Markdown table and plot of every `s2d eval` record under RESULTS_DIR."""
    from s2d.lmeval.run import leaderboard as build

    try:
        table, md, png = build(results_dir, out, warn=lambda m: click.echo(m, err=True))
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(table)
    click.echo(f"-> {md}" + (f", {png}" if png else ""), err=True)


@cli.group()
def config():
    """Run settings: what a run will use."""


@config.command(name="show")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Run config (YAML/JSON).")
@click.option("--scale", default=None, help="Apply the config's `scale: {NAME: overrides}`.")
@click.option("--set", "set_items", multiple=True, metavar="KEY=VALUE", help="A setting, as in a config file.")
@click.option("--task", "task_name", default=None)
@click.option("--method", default=None)
@click.option("--json", "as_json", is_flag=True, help="JSON instead of YAML.")
def config_show(config_path, scale, set_items, task_name, method, as_json):
    """Print the effective run settings (defaults < config file < --scale < flags) as YAML: what
    `s2d distill` with the same arguments would use and save beside the run, checked the same way."""
    import yaml

    from s2d.distill import DistillError, RunConfig, apply_scale

    try:
        cfg = with_set(RunConfig.build(apply_scale(load_config(config_path), scale),
                                       {"task": task_name, "method": method}), set_items)
    except DistillError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(cfg.settings, indent=2) if as_json else
               yaml.safe_dump(cfg.settings, sort_keys=False, default_flow_style=False).rstrip())


@cli.command(name="new-plugin")
@click.argument("name")
@click.option("--kind", type=click.Choice(["method", "curator", "task", "trainer", "backend"]), default="method",
              show_default=True)
@click.option("--out-dir", default=".", show_default=True, type=click.Path(file_okay=False),
              help="Where to create the s2d-NAME folder.")
def new_plugin_cmd(name, kind, out_dir):
    """Write a ready-to-install plugin package s2d-NAME: pyproject with the entry point, the class,
    a fast test on the scripted backend and a README (`pip install -e 's2d-NAME[test]' && pytest`)."""
    from s2d.newplugin import new_plugin

    try:
        folder = new_plugin(name, kind, out_dir)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(str(folder))
    click.echo(f"-> pip install -e '{folder}[test]' && pytest {folder}", err=True)


@cli.command(name="lm-eval-tasks")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.pass_context
def lm_eval_tasks(ctx, out_dir):
    """Write lm-eval task files (YAML + utils.py) for every registered task, plugins' included, so
    stock `lm_eval --include_path OUT_DIR` runs them."""
    from s2d.lmeval.tasks import write_task_files

    _plugins(ctx)
    try:
        folders = write_task_files(out_dir)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    for folder in folders:
        click.echo(str(folder))
    click.echo(f"-> lm_eval --include_path {out_dir} --tasks {','.join(f.name for f in folders)}", err=True)


@cli.command(name="tasks-path")
def tasks_path():
    """Print the folder of s2d's lm-eval task files (for `lm_eval --include_path`)."""
    from s2d.lmeval.tasks import tasks_path as path

    click.echo(path())


def main():
    cli(prog_name="s2d")


if __name__ == "__main__":
    sys.exit(main())

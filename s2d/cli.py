"""The `s2d` command line. Heavy libraries (torch, transformers, vllm, peft, lm_eval) are imported
inside the functions that use them, never here, so `s2d --help` stays fast."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from s2d import __version__
from s2d.backends import default_backend_name, load_backend, model_path_for
from s2d.backends.base import sample_seed
from s2d.config import parse_set, resolve
from s2d.curators.base import write_curated
from s2d.distill import DistillRun, check_export_dest, check_plugins, format_summary
from s2d.envinfo import device, versions
from s2d.errors import ConfigError, InputError, PromptTooLongError, S2DError
from s2d.files import cache_dir, check_output, check_writable, default_cache_dir, local_path, read_jsonl, write_jsonl
from s2d.lmeval.run import evaluate, planned_records
from s2d.lmeval.tasks import build_task, check_task_plugin, write_task_files
from s2d.lmeval.tasks import tasks_path as lm_eval_tasks_path
from s2d.methods.base import run_method
from s2d.models import model_rows, resolve_model
from s2d.newplugin import new_plugin
from s2d.plan import calibrate as measure
from s2d.plan import format_plan, load_settings, make_plan
from s2d.plugins import KINDS, get_plugins
from s2d.report import leaderboard as write_leaderboard
from s2d.reproduce import run_table
from s2d.routing import route_run
from s2d.stages import Request
from s2d.store import RunFolder, check_record, load_record, metrics_of, record_lock, safe_name
from s2d.traces import build_curator, build_method, generate_traces, load_traces, make_runner, open_cache
from s2d.trainers.base import check_out_dir, load_records


def _plugins(ctx: click.Context):
    root = ctx.find_root()
    if root.obj is None:
        root.obj = {}
    if "plugins" not in root.obj:
        root.obj["plugins"] = get_plugins(plugins_dir=root.params.get("plugins_dir"))
    return root.obj["plugins"]


class S2DGroup(click.Group):
    """Every command's expected errors (:class:`s2d.errors.S2DError`: bad settings, files, records
    in the way) become one line and exit code 1; anything else is a bug and keeps its traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except S2DError as exc:
            raise click.ClickException(str(exc)) from None


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


@click.group(cls=S2DGroup, context_settings={"help_option_names": ["-h", "--help"]})
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
    """Engine flags shared by every command that generates (model, backend and seed are also run
    settings: a config's `model:` is honoured, a flag wins)."""
    for opt in reversed([
        click.option("--model", "-m", default=None, help="Alias, model folder, .gguf file or hub id "
                     "[default: smollm2-135m]."),
        click.option("--backend", "-b", default=None, help="Generation engine [default: vllm if it "
                     "imports, else hf]."),
        click.option("--dtype", default=None, help="auto, bfloat16, float16 or float32."),
        click.option("--batch-size", type=click.IntRange(min=1), default=None, help="hf: sequences decoded together."),
        click.option("--threads", type=click.IntRange(min=1), default=None, help="hf: torch CPU threads."),
        click.option("--trust-remote-code", is_flag=True, help="Allow model code from the hub (off by default)."),
        click.option("--seed", type=int, default=None, help="Run seed; per-request seeds derive from it [default: 0]."),
    ]):
        f = opt(f)
    return f


def settings_options(f):
    """--config, --scale and --set: the one way every command takes run settings."""
    for opt in reversed([
        click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="Run config (YAML/JSON; results/configs/README.md lists the settings)."),
        click.option("--scale", default=None, help="Apply the config's `scale: {NAME: overrides}` (e.g. paper)."),
        click.option("--set", "set_items", multiple=True, metavar="KEY=VALUE",
                     help="A setting as in a config file, over it and every flag: n=8, "
                          "method_options.shots=4, task_options.words_per_example=1 (repeatable)."),
    ]):
        f = opt(f)
    return f


def cache_options(f):
    for opt in reversed([
        click.option("--cache", "cache_dir", default=None, type=click.Path(file_okay=False),
                     help="Generation cache folder [default: $S2D_CACHE/generations]."),
        click.option("--no-cache", is_flag=True, help="Generate everything afresh and store nothing."),
    ]):
        f = opt(f)
    return f


def _cache_folder(cache_dir, no_cache) -> Path | None:
    """The generation cache a command reads and writes (None with --no-cache)."""
    return None if no_cache else Path(cache_dir) if cache_dir else default_cache_dir()


def _cache(cache_dir, no_cache):
    """The opened generation cache; a folder that cannot be written is one line now, before any
    model loads, not a traceback at the first generation."""
    folder = _cache_folder(cache_dir, no_cache)
    if folder is not None:
        check_writable(folder, f"--cache {cache_dir}" if cache_dir else
                       f"the generation cache {folder} (move it with --cache or S2D_GENERATION_CACHE)")
    return open_cache(folder)


def _read_folders(cfg, cache_dir=None, no_cache=True) -> list:
    """Folders a command reads beyond its named files, so no output may be written into them: the
    generation cache and a task's own data_dir (S2D_DATA_DIR and the s2d cache always count)."""
    return [f for f in (_cache_folder(cache_dir, no_cache), cfg["task_options"].get("data_dir")) if f]


def make_backend(ctx, cfg, dtype=None, batch_size=None, threads=None, trust_remote_code=False):
    """The engine for the settings' model, backend, seed and engine_options (parallelism, memory)."""
    _plugins(ctx)
    try:
        return load_backend(cfg["backend"], cfg["model"], seed=cfg["seed"], dtype=dtype,
                            batch_size=batch_size, threads=threads, trust_remote_code=trust_remote_code or None,
                            **cfg.engine_kwargs())
    except RuntimeError as exc:  # an engine that cannot start here says why in one line
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


def _task(ctx, name: str, options: dict):
    """Task ``name`` built once with its checked options (an error names the task and option)."""
    _plugins(ctx)
    try:
        return build_task(name, strict=True, **options)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, S2DError):
            raise
        raise ConfigError(f"task {name!r}: {exc}" if not str(exc).startswith("task ") else str(exc)) from None


def _method(ctx, name: str, task, options: dict):
    _plugins(ctx)
    try:
        return build_method(name, task, **options)
    except TypeError as exc:
        raise ConfigError(f"method {name!r}: {exc}") from None


def _check_adapter(adapter: str | None, what: str = "--adapter") -> None:
    """An adapter (the --adapter flag, or a request line's 'adapter') must be a PEFT adapter
    folder: said now, before any model loads."""
    if adapter is not None and not (Path(adapter) / "adapter_config.json").is_file():
        raise InputError(f"{what} {adapter!r} is not a PEFT adapter folder (no adapter_config.json)")


def _docs(task, split: str, limit: int | None):
    try:
        docs = task.docs(split)
    except ValueError as exc:
        if isinstance(exc, S2DError):
            raise
        raise ConfigError(str(exc)) from None
    return docs if limit is None else docs[:limit]


@cli.command()
@backend_options
@settings_options
@click.option("--task", "task_name", default=None, help="Run a method over a task split (writes traces).")
@click.option("--method", default=None, help="Method (see `s2d list methods`) [default: system1].")
@click.option("--split", default=None, help="Task split; train is used unlabeled [default: train].")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Only the first N documents of the split (the setting train_limit).")
@click.option("--perturb", is_flag=True, help="Also run every input's perturbation (for the perturb curator).")
@cache_options
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
def generate(ctx, model, backend, dtype, batch_size, threads, trust_remote_code, seed, config_path, scale, set_items,
             task_name, method, split, limit, perturb, cache_dir, no_cache, chunk_sequences, input_path, out_path, n,
             max_new_tokens, temperature, top_p, stop, adapter, progress):
    """Run a method over a task split and write traces (--task, or `task:` in --config), or
    generate for raw requests (--input).

    Traces go through the generation cache: rerunning a killed run generates only what is missing."""
    flags = {"task": task_name, "method": method, "split": split, "train_limit": limit, "n": n,
             "temperature": temperature, "top_p": top_p, "model": model, "backend": backend, "seed": seed}
    if input_path:
        if any((task_name, method, config_path, scale, set_items, perturb, split, limit, cache_dir, no_cache)):
            raise click.UsageError("--task/--method/--config/--scale/--set/--split/--limit/--perturb/--cache go "
                                   "with --task, not --input (each input line carries its own settings; raw "
                                   "requests are not cached)")
        cfg = resolve("generate", flags={"model": model, "backend": backend, "seed": seed}, require_task=False)
        return _generate_requests(ctx, cfg, dtype, batch_size, threads, trust_remote_code, input_path, out_path,
                                  1 if n is None else n, 256 if max_new_tokens is None else max_new_tokens,
                                  temperature, 1.0 if top_p is None else top_p, stop, adapter, progress)
    cfg = resolve("generate", config_path, scale=scale, flags=flags, set_items=set_items, require_task=False)
    if not cfg["task"]:
        raise click.UsageError("give --task (or `task:` in --config) to run a method, or --input for raw requests")
    if stop:  # a method's stages set their own stop strings; never drop a flag silently
        raise click.UsageError("--stop goes with --input; with --task each stage of the method sets its own")
    _check_adapter(adapter)
    options = cfg.generation_options()
    if max_new_tokens is not None:
        options["max_new_tokens"] = max_new_tokens
    task = _task(ctx, cfg["task"], cfg["task_options"])
    m = _method(ctx, cfg["method"], task, options)
    docs = _docs(task, cfg["split"], cfg["train_limit"])
    cache = _cache(cache_dir, no_cache)
    check_output(out_path, config_path, adapter, local_path(cfg["model"]),
                 folders=_read_folders(cfg, cache_dir, no_cache))
    engine = make_backend(ctx, cfg, dtype, batch_size, threads, trust_remote_code)
    start = time.perf_counter()
    with engine:
        traces, stats = generate_traces(engine, task, m, docs, split=cfg["split"], cache=cache, seed=cfg["seed"],
                                        adapter=adapter, perturb=perturb, progress=progress,
                                        chunk_sequences=chunk_sequences)
    write_jsonl(out_path, traces)
    tokens = [s["total_tokens"] for t in traces for s in t["samples"]]
    click.echo(f"{len(traces)} inputs x {m.n} samples of {cfg['method']} on {cfg['task']}/{cfg['split']}: "
               f"{stats['generated']} generated, {stats['reused']} from the cache, mean "
               f"{sum(tokens) / max(len(tokens), 1):.1f} tokens per sample, {time.perf_counter() - start:.1f} s "
               f"-> {out_path}", err=True)


def _generate_requests(ctx, cfg, dtype, batch_size, threads, trust_remote_code, input_path, out_path, n,
                       max_new_tokens, temperature, top_p, stop, adapter, progress):
    defaults = {"n": n, "max_new_tokens": max_new_tokens, "top_p": top_p, "stop": list(stop),
                "temperature": temperature if temperature is not None else (0.0 if n == 1 else 0.7),
                "adapter": adapter}

    def parse(rec):
        req = Request.from_dict(rec, defaults)
        _check_adapter(req.adapter, "'adapter'")  # an InputError is a ValueError: read_jsonl adds file:line
        return req

    requests = read_jsonl(input_path, parse)  # every line checked before any model is loaded
    if not requests:
        raise click.ClickException(f"{input_path}: no requests")
    check_output(out_path, input_path, local_path(cfg["model"]), *{r.adapter for r in requests if r.adapter})
    engine = make_backend(ctx, cfg, dtype, batch_size, threads, trust_remote_code)
    seed = cfg["seed"]
    start = time.perf_counter()
    with engine:
        try:
            outputs = engine.generate(requests, progress=progress)
        except PromptTooLongError as exc:
            raise click.ClickException(f"{input_path}: {exc}") from None
        vers = {**versions(), **engine.versions()}
    wall = time.perf_counter() - start

    def records():
        for i, (req, outs) in enumerate(zip(requests, outputs)):
            yield {"id": req.id if req.id is not None else i, "request": req.as_dict(),
                   "completions": [c.as_dict() for c in outs],
                   "prompt_tokens": outs[0].prompt_tokens,
                   "completion_tokens": sum(c.completion_tokens for c in outs),
                   "seed": None if req.greedy else sample_seed(seed, req, i, req.first_sample), "run_seed": seed,
                   "backend": engine.name, "model": cfg["model"], "model_path": engine.model_path,
                   "versions": vers}

    write_jsonl(out_path, records())
    tokens = sum(c.completion_tokens for outs in outputs for c in outs)
    click.echo(f"{len(requests)} requests, {tokens} generated tokens in {wall:.1f} s including the engine's start "
               f"with {engine.name} -> {out_path}", err=True)


@cli.command()
@settings_options
@click.option("--curator", "-c", default=None, help="See `s2d list curators` [default: majority].")
@click.option("--traces", "traces_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Traces JSONL written by `s2d generate --task ...`.")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="Training set (TRL prompt-completion JSONL); .dropped.jsonl and .summary.json go beside it.")
@click.option("--model", "-m", default=None, help="Model for curators that ask one (usc) [default: smollm2-135m].")
@click.option("--backend", "-b", default=None)
@click.option("--dtype", default=None)
@click.option("--seed", type=int, default=None, help="[default: 0]")
@cache_options
@click.option("--progress/--no-progress", default=True)
@click.pass_context
def curate(ctx, config_path, scale, set_items, curator, traces_path, out_path, model, backend, dtype, seed, cache_dir,
           no_cache, progress):
    """Turn traces into a training set with an unsupervised curator; print the summary.

    Curator options are settings: --set curator_options.threshold=0.8 (or `curator_options:` in --config)."""
    cfg = resolve("curate", config_path, scale=scale, set_items=set_items, require_task=False,
                  flags={"curator": curator, "model": model, "backend": backend, "seed": seed})
    traces = load_traces(traces_path)
    if not traces:
        raise click.ClickException(f"{traces_path}: no traces")
    tasks = {t.get("task") for t in traces}
    if len(tasks) != 1 or None in tasks:
        raise click.ClickException(f"{traces_path}: traces must come from one task, found {sorted(map(str, tasks))}")
    name = tasks.pop()
    if cfg["task"] and cfg["task"] != name:
        raise click.ClickException(f"{traces_path}: traces of task {name!r}, but the settings say {cfg['task']!r}")
    task = _task(ctx, name, cfg["task_options"])
    out = Path(out_path)
    for written in (out, out.with_name(out.stem + ".dropped.jsonl"), out.with_name(out.stem + ".summary.json")):
        check_output(written, traces_path, config_path, local_path(cfg["model"]),
                     folders=_read_folders(cfg, cache_dir, no_cache))
    _plugins(ctx)
    try:
        cur = build_curator(cfg["curator"], task, **cfg["curator_options"])
    except (TypeError, ValueError) as exc:
        if isinstance(exc, S2DError):
            raise
        prefix = f"curator {cfg['curator']!r}: "  # once: option errors carry it already
        raise click.ClickException(str(exc) if str(exc).startswith(prefix) else prefix + str(exc)) from None
    cache = _cache(cache_dir, no_cache) if cur.needs_model else None  # checked before the model loads
    engine = make_backend(ctx, cfg, dtype) if cur.needs_model else None
    try:
        runner = make_runner(engine, f"curator:{cfg['curator']}", cache=cache,
                             seed=cfg["seed"], progress=progress) if engine else None
        decisions = cur.curate(traces, runner)
    finally:
        if engine is not None:
            engine.close()
    summary = write_curated(out_path, traces, decisions, curator=cfg["curator"],
                            extra={"traces": str(traces_path), "method": traces[0].get("method")})
    click.echo(json.dumps(summary, indent=2))


@cli.command()
@settings_options
@click.option("--data", "data_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Curated prompt-completion JSONL (from `s2d curate`).")
@click.option("--out-dir", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Adapter (lora) or model (full) folder; checkpoints go under OUT_DIR/checkpoints.")
@click.option("--trainer", default=None, help="See `s2d list trainers` [default: lora].")
@click.option("--model", "-m", default=None, help="Base model [default: smollm2-135m].")
@click.option("--seed", type=int, default=None, help="[default: 0]")
@click.option("--overwrite", is_flag=True, help="Start over where OUT_DIR holds checkpoints of other data or settings.")
@click.option("--progress/--no-progress", default=True)
@click.pass_context
def train(ctx, config_path, scale, set_items, data_path, out_dir, trainer, model, seed, overwrite, progress):
    """Fine-tune on a curated set; resumes from OUT_DIR's last checkpoint after a kill.

    Trainer options are settings: --set trainer_options.epochs=3 --set trainer_options.learning_rate=2e-4.
    Runs data-parallel under `accelerate launch --multi_gpu --num_processes N -m s2d.cli train ...`
    (also on CPUs, over gloo), or FSDP / DeepSpeed with --config_file; trainer_options.batch_size
    is the batch of all N processes together (docs/scale.md)."""
    cfg = resolve("train", config_path, scale=scale, set_items=set_items, require_task=False,
                  flags={"trainer": trainer, "model": model, "seed": seed})
    t = _plugins(ctx).get("trainers", cfg["trainer"]).obj(**cfg["trainer_options"])
    t.overwrite = overwrite
    load_records(data_path)  # every line checked before the model is converted or loaded
    # For every trainer, a plugin's too, before any model is converted or loads (an alias resolves
    # into the s2d cache, which check_output guards).
    check_out_dir(cfg["model"], out_dir)
    check_output(out_dir, data_path, config_path, flag="--out-dir", folder=True)
    model_path = resolve_model(cfg["model"])
    out = t.train(model_path, data_path, out_dir, seed=cfg["seed"], progress=progress)
    click.echo(f"{cfg['trainer']} -> {out}")


@cli.command()
@settings_options
@click.option("--task", "task_name", default=None, help="Task (see `s2d list tasks`).")
@click.option("--method", default=None, help="System 2 method to distil [default: rar2]; system1 = 'Distill System 1'.")
@click.option("--curator", default=None, help="Curator [default: majority]; none = no curation.")
@click.option("--trainer", default=None, help="Trainer [default: lora].")
@click.option("--name", default=None, help="Run name [default: task-method-curator-trainer].")
@click.option("--runs-dir", default="runs/distill", show_default=True, type=click.Path(file_okay=False))
@click.option("--out-dir", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Run folder: new, empty, or one of this run's [default: RUNS_DIR/NAME]. One run at a time.")
@click.option("--n", type=click.IntRange(min=1), default=None, help="Samples per train input [default: 8].")
@click.option("--train-limit", type=click.IntRange(min=1), default=None, help="Only the first N train inputs.")
@click.option("--eval-limit", type=click.IntRange(min=1), default=None, help="Only the first N test documents.")
@click.option("--model", "-m", default=None, help="[default: smollm2-135m]")
@click.option("--backend", "-b", default=None, help="[default: vllm if it imports, else hf]")
@click.option("--dtype", default=None)
@click.option("--seed", type=int, default=None, help="[default: 0]")
@cache_options
@click.option("--export", "export_dir", default=None, type=click.Path(file_okay=False),
              help="Copy the finished run (without weights and traces) to this folder, e.g. under results/.")
@click.option("--progress/--no-progress", default=True)
@click.pass_context
def distill(ctx, config_path, scale, set_items, task_name, method, curator, trainer, name, runs_dir, out_dir, n,
            train_limit, eval_limit, model, backend, dtype, seed, cache_dir, no_cache, export_dir, progress):
    """Generate on the train split, curate, train, and score System 1, System 2 and the distilled
    model through lm-eval; every stage resumes after a kill. Prints a three-row summary."""
    plugins = _plugins(ctx)
    cfg = resolve("distill", config_path, scale=scale, set_items=set_items, flags={
        "task": task_name, "method": method, "curator": curator, "trainer": trainer, "n": n,
        "train_limit": train_limit, "eval_limit": eval_limit, "model": model, "backend": backend, "seed": seed})
    for kind, key in (("tasks", "task"), ("methods", "method"), ("curators", "curator"), ("trainers", "trainer")):
        plugins.get(kind, cfg[key])
    folder = out_dir or str(Path(runs_dir) / safe_name(name or cfg.name()))
    # Refusals found now, not after the whole run: a run folder that is or holds an input (or the
    # model), or holds something other than an s2d run; an export that is or holds the run folder.
    read_folders = _read_folders(cfg, cache_dir, no_cache)
    # A run's own config.yaml may be its --config: claim never rewrites a claimed folder's files.
    own_config = config_path and Path(config_path).resolve() == (Path(folder) / "config.yaml").resolve()
    # The run folder is never replaced, so it may hold its own generation cache (`--cache RUN/cache`).
    check_output(folder, None if own_config else config_path, folders=read_folders, flag="--out-dir", folder=True,
                 may_hold=[_cache_folder(cache_dir, no_cache)])
    check_out_dir(cfg["model"], folder)
    RunFolder(folder, cfg.settings).saved()
    if export_dir:
        check_export_dest(export_dir, folder, inputs=[config_path], folders=read_folders)
    run = DistillRun(cfg, folder, progress=progress, echo=lambda m: click.echo(m, err=True),
                     backend_options={"dtype": dtype} if dtype else None, cache=_cache(cache_dir, no_cache))
    # Expected errors (S2DError) become one line; anything else (a bug) keeps its traceback.
    # Settings were checked before the run started (DistillRun.check). The run folder is locked from
    # its claim through the export: a second run into it fails at once, naming this one.
    summary = run.run(export=export_dir)
    click.echo(format_summary(summary))
    click.echo(f"-> {folder}", err=True)
    if export_dir:
        click.echo(f"-> {export_dir}", err=True)
    if summary.get("error"):
        raise click.ClickException(summary["error"])


@cli.command()
@settings_options
@click.option("--model", "-m", default=None, help="[default: smollm2-135m]")
@click.option("--backend", "-b", default=None, help="[default: vllm if it imports, else hf]")
@click.option("--dtype", default=None, help="The engine's dtype: part of the throughput table's key [default: auto].")
@click.option("--throughput", "throughput_path", default=None, type=click.Path(dir_okay=False),
              help="Throughput table JSON (yours, for your GPUs) [default: $S2D_CACHE/throughput.json].")
@click.option("--records", "records_dir", default=None, type=click.Path(file_okay=False),
              help="Committed records whose mean lengths estimate generated tokens [default: results].")
@click.option("--calibrate", is_flag=True, help="Measure this machine's throughput for the model, backend and "
              "trainer (about a minute) and write it into the table.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def plan(ctx, config_path, scale, set_items, model, backend, dtype, throughput_path, records_dir, calibrate, as_json):
    """What `s2d distill` with these settings will cost, per round and stage, with no model loaded:
    engine requests and samples, prompt and generated tokens (with the source of each estimate),
    training examples x epochs, eval documents, and the time from a throughput table (docs/plan.md)."""
    plugins = _plugins(ctx)
    flags = {"model": model, "backend": backend}
    if calibrate:  # needs no task: the calibration brings its own prompts and records
        cfg = resolve("distill", config_path, scale=scale, set_items=set_items, flags=flags, require_task=False)
        plugins.get("trainers", cfg["trainer"])
        entry = measure(cfg, dtype=dtype, path=throughput_path, echo=lambda m: click.echo(m, err=True))
        click.echo(json.dumps(entry, indent=2))
        return
    cfg = load_settings(plugins, config_path, scale, set_items, flags)  # checked as `s2d distill` checks them
    result = make_plan(cfg, dtype=dtype, throughput=throughput_path, records=records_dir)
    click.echo(json.dumps(result, indent=2) if as_json else format_plan(result))


@cli.command()
@click.argument("table", type=click.Choice(["table1", "table2", "table3", "table4"]))
@click.option("--scale", type=click.Choice(["small", "paper"]), default="small", show_default=True,
              help="small: sized for a 2-core CPU and the embedded model; paper: the paper's sizes (GPU).")
@click.option("--set", "set_items", multiple=True, metavar="KEY=VALUE",
              help="A setting over every run of the table (e.g. eval_limit=50); named in the run folders.")
@click.option("--configs-dir", default="results/configs", show_default=True, type=click.Path(file_okay=False))
@click.option("--runs-dir", default="runs/reproduce", show_default=True, type=click.Path(file_okay=False))
@click.option("--out-dir", "out_dir", default="results/reproduce", show_default=True, type=click.Path(file_okay=False))
@click.option("--backend", "-b", default=None)
@click.option("--model", "-m", default=None,
              help="[default: smollm2-135m] Another model gets its own run folders and table file.")
@click.option("--progress/--no-progress", default=True)
@click.pass_context
def reproduce(ctx, table, scale, set_items, configs_dir, runs_dir, out_dir, backend, model, progress):
    """Run a paper table's configs (reusing finished runs) and write it beside the paper's numbers."""
    _plugins(ctx)
    try:
        path = run_table(table, scale=scale, configs_dir=configs_dir, runs_dir=runs_dir, out_dir=out_dir,
                         backend=backend, progress=progress, echo=lambda m: click.echo(m, err=True), model=model,
                         settings=parse_set(set_items))
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(path.read_text())
    click.echo(f"-> {path}", err=True)


@cli.command(name="show-prompts")
@settings_options
@click.option("--task", "task_name", default=None, help="Task [default: the config's].")
@click.option("--method", default=None, help="Method [default: system1].")
@click.option("--split", default="test", show_default=True)
@click.option("--index", type=click.IntRange(min=0), default=0, show_default=True, help="Which document of the split.")
@click.pass_context
def show_prompts(ctx, config_path, scale, set_items, task_name, method, split, index):
    """Print every rendered stage of a method for one document (nothing is generated)."""
    cfg = resolve("show-prompts", config_path, scale=scale, set_items=set_items,
                  flags={"task": task_name, "method": method})
    task = _task(ctx, cfg["task"], cfg["task_options"])
    m = _method(ctx, cfg["method"], task, {**cfg.eval_method_options(), "n": 1})
    docs = _docs(task, split, None)
    if index >= len(docs):
        raise click.ClickException(f"--index {index}: {cfg['task']}/{split} has {len(docs)} documents")
    shown = []
    runner = make_runner(None, cfg["method"], record=lambda stage, prompts: shown.append((stage, prompts)))
    run_method(m, runner, [docs[index]])
    for stage, prompts in shown:
        for j, prompt in enumerate(prompts):
            suffix = f" [{j + 1}/{len(prompts)}]" if len(prompts) > 1 else ""
            click.echo(click.style(f"=== {cfg['method']} / stage {stage}{suffix} ===", bold=True))
            click.echo(prompt)
            click.echo()


@cli.command(name="eval")
@backend_options
@settings_options
@click.option("--task", "-t", "task_name", default=None,
              help="Task names, comma-separated (see `s2d list tasks`) [default: the config's].")
@click.option("--method", default=None, help="Method (see `s2d list methods`) [default: system1].")
@click.option("--adapter", type=click.Path(exists=True, file_okay=False), default=None, help="LoRA adapter folder.")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Evaluate the first N documents of each task (the setting eval_limit).")
@click.option("--log-samples", is_flag=True, help="Keep every document's prompt, output and metrics.")
@click.option("--out-dir", "out_dir", default="results/eval", show_default=True, type=click.Path(file_okay=False),
              help="Where the records go.")
@click.option("--label", default=None, help="Condition name in the records [default: method(+options)(+adapter)].")
@cache_options
@click.option("--overwrite", is_flag=True, help="Replace records made with other settings (refused by default).")
@click.option("--progress/--no-progress", default=True)
@click.pass_context
def eval_(ctx, model, backend, dtype, batch_size, threads, trust_remote_code, seed, config_path, scale, set_items,
          task_name, method, adapter, limit, log_samples, out_dir, label, cache_dir, no_cache, overwrite, progress):
    """Score a model (System 1, a method, or base + adapter) on s2d's tasks through lm-eval.

    With a run's --config, the method is scored as that run's System 2 row (its method options and
    eval_method_options, its task_options and eval_task_options, eval_limit). Task options
    subset=N subset_seed=S (--set task_options.subset=300) evaluate a seeded random subset of at
    least N documents (judged pairs stay whole), the same for every condition."""
    from contextlib import ExitStack

    cfg = resolve("eval", config_path, scale=scale, set_items=set_items, require_task=False, flags={
        "task": task_name, "method": method, "eval_limit": limit, "model": model, "backend": backend, "seed": seed})
    names = cfg.tasks()
    if not names:
        raise click.UsageError("give --task NAME[,NAME...] (or `task:` in --config)")
    _check_adapter(adapter)
    plugins = _plugins(ctx)
    for name in names:
        plugins.get("tasks", name)
        check_task_plugin(name)
    options, m_options = cfg.eval_task_options(), cfg.eval_method_options()
    for name in names:  # the method's options checked against each task (built once) before any model loads
        _method(ctx, cfg["method"], _task(ctx, name, options), m_options)  # build_task leaves subset* to lm-eval
    loads = model_path_for(cfg["backend"], cfg["model"])
    planned = planned_records(results_dir=out_dir, model_ref=cfg["model"], model_path=loads, tasks=names,
                              method=cfg["method"], adapter=adapter, limit=cfg["eval_limit"], label=label,
                              task_options=options or None, method_options=m_options or None, seed=cfg["seed"])
    for path, _ in planned:  # never written over (or into) what the run reads; a writable folder: found now
        for written in (path, path.with_suffix(".samples.jsonl")) if log_samples else (path,):
            check_output(written, config_path, adapter, local_path(loads),
                         folders=_read_folders(cfg, cache_dir, no_cache), flag=f"--out-dir {out_dir}: the record")
    cache = _cache(cache_dir, no_cache)
    with ExitStack() as held:
        for path, identity in planned:
            # Held from the check through the record's write: a second eval of it fails at once.
            held.enter_context(record_lock(path))
            check_record(path, identity, overwrite)  # a record of other settings in the way: found now
        engine = make_backend(ctx, cfg, dtype, batch_size, threads, trust_remote_code)
        with engine:
            paths = evaluate(engine, model_ref=cfg["model"], tasks=names, method=cfg["method"], adapter=adapter,
                             limit=cfg["eval_limit"], seed=cfg["seed"], log_samples=log_samples, results_dir=out_dir,
                             label=label, task_options=options or None, progress=progress,
                             method_options=m_options or None, cache=cache, overwrite=overwrite,
                             warn=lambda m: click.echo(m, err=True))
    for path in paths:
        rec = load_record(path)
        shown = ", ".join(f"{k}={v:.3f}" for k, v in metrics_of(rec).items())
        click.echo(f"{rec['s2d']['task']:<16} {rec['s2d']['condition']:<20} {shown}  "
                   f"tokens={rec['s2d']['mean_generated_tokens']:.1f}  -> {path}")


@cli.command()
@click.argument("results_dir", default="results/eval", type=click.Path(file_okay=False))
@click.option("--out-dir", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Where to write [default: RESULTS_DIR].")
def leaderboard(results_dir, out_dir):
    """Markdown table and plot of every `s2d eval` record under RESULTS_DIR."""
    check_writable(out_dir or results_dir, f"--out-dir {out_dir}" if out_dir else f"RESULTS_DIR {results_dir}")
    try:
        table, md, png = write_leaderboard(results_dir, out_dir, warn=lambda m: click.echo(m, err=True))
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(table)
    click.echo(f"-> {md}" + (f", {png}" if png else ""), err=True)


@cli.command()
@click.argument("run_folder", type=click.Path(exists=True, file_okay=False))
@click.option("--confidence", type=click.Choice(["logprob", "agreement"]), default="logprob", show_default=True,
              help="logprob: the direct answer's mean token log-probability; agreement: the share of --samples "
                   "sampled answers that agree with it.")
@click.option("--samples", type=click.IntRange(min=1), default=4, show_default=True,
              help="Samples for --confidence agreement.")
@click.option("--tune-split", default="validation", show_default=True, help="The split the threshold is picked on.")
@click.option("--tolerance", type=click.FloatRange(0, 1), default=0.01, show_default=True,
              help="Pick the cheapest threshold within this much accuracy of the best.")
@click.option("--round", "round_", type=click.IntRange(min=1), default=None, help="The run's round [default: last].")
@click.option("--backend", "-b", default=None, help="[default: the run's]")
@click.option("--out-dir", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Where to write [default: RUN_FOLDER/route-CONFIDENCE].")
@cache_options
@click.option("--progress/--no-progress", default=True)
def route(run_folder, confidence, samples, tune_split, tolerance, round_, backend, out_dir, cache_dir, no_cache,
          progress):
    """System 1 first, System 2 when unsure: sweep confidence thresholds for a distilled run on the
    validation split, draw the accuracy/cost curve on the test split and score the chosen threshold
    there through lm-eval (`s2d eval --method route`)."""
    out = Path(out_dir) if out_dir else Path(run_folder) / f"route-{confidence}"
    result = route_run(run_folder, out_dir=out, tune_split=tune_split, confidence=confidence, samples=samples,
                       tolerance=tolerance, backend=backend, round_=round_, cache=_cache(cache_dir, no_cache),
                       progress=progress, echo=lambda m: click.echo(m, err=True))
    click.echo((out / "routing.md").read_text())
    click.echo(f"-> {out / 'routing.json'}, {out / 'routing.png'}; {result['seconds']:.0f} s", err=True)


@cli.group()
def config():
    """Run settings: what a run will use."""


@config.command(name="show")
@settings_options
@click.option("--for", "command", type=click.Choice(["distill", "generate", "eval", "curate", "train",
                                                     "show-prompts"]), default="distill", show_default=True,
              help="The command whose defaults apply (generate and eval: system1, one sample).")
@click.option("--task", "task_name", default=None)
@click.option("--method", default=None)
@click.option("--json", "as_json", is_flag=True, help="JSON instead of YAML.")
@click.pass_context
def config_show(ctx, config_path, scale, set_items, command, task_name, method, as_json):
    """Print the effective run settings (defaults < config file < --scale < flags < --set) as YAML:
    what the command with the same arguments would use (`s2d distill` saves it beside the run).
    The plugins' options are checked as the command would check them (no data read, no model)."""
    import yaml

    cfg = resolve(command, config_path, scale=scale, set_items=set_items, require_task=command == "distill",
                  flags={"task": task_name, "method": method})
    _plugins(ctx)
    check_plugins(cfg)
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
    check_writable(out_dir, f"--out-dir {out_dir}")
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
    check_writable(out_dir, f"OUT_DIR {out_dir}")
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
    click.echo(lm_eval_tasks_path())


def main():
    cli(prog_name="s2d")


if __name__ == "__main__":
    sys.exit(main())

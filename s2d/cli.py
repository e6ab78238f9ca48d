"""The `s2d` command line: the top layer. Each command parses its flags, turns them into run settings
(:func:`run_settings`, the one place flags become settings) and makes one call into the layer below
(s2d.distill, s2d.stage_runs, s2d.lmeval.run, s2d.routing, s2d.sweep, ...), then prints the result.
Flags several commands share are declared once (:data:`FLAGS`, :func:`flag`).

Heavy libraries (torch, transformers, vllm, peft, lm_eval) are imported inside the functions that
use them, never here, so `s2d --help` stays fast."""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path

import click

from s2d import __version__
from s2d.backends import default_backend_name, load_backend
from s2d.config import RunConfig, parse_set, resolve, settings_help
from s2d.distill import check_plugins, distill_settings, format_summary
from s2d.envinfo import device, versions
from s2d.errors import RunsFailed, S2DError
from s2d.files import cache_dir, check_writable, default_cache_dir
from s2d.lmeval.run import evaluate_settings
from s2d.lmeval.tasks import tasks_path as lm_eval_tasks_path
from s2d.lmeval.tasks import write_task_files
from s2d.models import model_rows
from s2d.newplugin import new_plugin
from s2d.plan import calibrate as measure
from s2d.plan import format_plan, load_settings, make_plan
from s2d.plugins import KINDS, get_plugins
from s2d.report import leaderboard as write_leaderboard
from s2d.reproduce import run_table
from s2d.routing import route_run
from s2d.stage_runs import curate_file, generate_for_task, stage_prompts, train_file
from s2d.store import load_record, metrics_of, safe_name
from s2d.sweep import check_plan, describe, load_plan, run_plan, select, write_report
from s2d.traces import generate_requests, open_cache


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


# -- flags, declared once ---------------------------------------------------------------------------
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

# Each shared flag: its declarations (the click parameter's name where it differs) and attributes.
# A command may add a short name or say more in its own help (`flag("task", "-t", help=...)`).
FLAGS: dict[str, tuple[tuple[str, ...], dict]] = {
    "config": (("--config", "config_path"), dict(
        type=click.Path(exists=True, dir_okay=False), default=None,
        help="Run config (YAML/JSON; experiments/configs/README.md lists the settings).")),
    "scale": (("--scale",), dict(default=None, help="Apply the config's `scale: {NAME: overrides}` (e.g. paper).")),
    "set": (("--set", "set_items"), dict(
        multiple=True, metavar="KEY=VALUE",
        help="A setting as in a config file, over it and every flag: n=8, method_options.shots=4, "
             "task_options.words_per_example=1 (repeatable).")),
    "task": (("--task", "task_name"), dict(default=None, help="Task (see `s2d list tasks`).")),
    "method": (("--method",), dict(default=None, help="Method (see `s2d list methods`) [default: system1].")),
    "curator": (("--curator",), dict(default=None, help="Curator [default: majority]; none = no curation.")),
    "trainer": (("--trainer",), dict(default=None, help="Trainer [default: lora].")),
    "split": (("--split",), dict(default=None)),
    "limit": (("--limit",), dict(type=click.IntRange(min=1), default=None)),
    "n": (("--n",), dict(type=click.IntRange(min=1), default=None)),
    "model": (("--model", "-m"), dict(default=None, help="[default: smollm2-135m]")),
    "backend": (("--backend", "-b"), dict(default=None, help="[default: vllm if it imports, else hf]")),
    "dtype": (("--dtype",), dict(default=None)),
    "batch_size": (("--batch-size",), dict(type=click.IntRange(min=1), default=None,
                                           help="hf: sequences decoded together.")),
    "threads": (("--threads",), dict(type=click.IntRange(min=1), default=None, help="hf: torch CPU threads.")),
    "trust_remote_code": (("--trust-remote-code",), dict(is_flag=True,
                                                         help="Allow model code from the hub (off by default).")),
    "seed": (("--seed",), dict(type=int, default=None, help="[default: 0]")),
    "adapter": (("--adapter",), dict(type=click.Path(exists=True, file_okay=False), default=None,
                                     help="LoRA adapter folder.")),
    "cache": (("--cache", "cache_dir"), dict(default=None, type=click.Path(file_okay=False),
                                             help="Generation cache folder [default: $S2D_CACHE/generations].")),
    "no_cache": (("--no-cache",), dict(is_flag=True, help="Generate everything afresh and store nothing.")),
    "progress": (("--progress/--no-progress",), dict(default=True)),
    "json": (("--json", "as_json"), dict(is_flag=True, help="Machine-readable output.")),
}


def flag(name: str, *more: str, **changes):
    """The click option of the shared flag ``name``; ``more``: extra names (``-t``), ``changes``:
    attributes this command gives it otherwise (its own help text, default)."""
    decls, attrs = FLAGS[name]
    return click.option(decls[0], *more, *decls[1:], **{**attrs, **changes})


def flags(*options):
    """One decorator applying ``options`` in the order given (the order `--help` lists them)."""
    def apply(f):
        for opt in reversed(options):
            f = opt(f)
        return f
    return apply


# Engine flags shared by every command that generates (model, backend and seed are also run
# settings: a config's `model:` is honoured, a flag wins).
backend_options = flags(
    flag("model", help="Alias, model folder, .gguf file or hub id [default: smollm2-135m]."),
    flag("backend", help="Generation engine [default: vllm if it imports, else hf]."),
    flag("dtype", help="auto, bfloat16, float16 or float32."),
    flag("batch_size"), flag("threads"), flag("trust_remote_code"),
    flag("seed", help="Run seed; per-request seeds derive from it [default: 0]."),
)
# --config, --scale and --set: the one way every command takes run settings.
settings_options = flags(flag("config"), flag("scale"), flag("set"))
cache_options = flags(flag("cache"), flag("no_cache"))

# -- flags -> settings: the one place ---------------------------------------------------------------
# The flags that are run settings: click parameter -> setting. `--limit` limits what the command
# itself reads: the train split for `generate`, the test documents for `eval`.
FLAG_SETTINGS = {"task_name": "task", "method": "method", "curator": "curator", "trainer": "trainer",
                 "split": "split", "n": "n", "train_limit": "train_limit", "eval_limit": "eval_limit",
                 "temperature": "temperature", "top_p": "top_p", "model": "model", "backend": "backend",
                 "seed": "seed"}
LIMIT_SETTING = {"generate": "train_limit", "eval": "eval_limit"}
# Commands whose settings must name a task (`s2d config show --for` says which command it shows).
NEEDS_TASK = ("distill", "show-prompts")


def flag_settings(params: dict, command: str, only=None) -> dict:
    """The run settings a command's parsed flags (``params``) set; ``None``: not given. ``only``:
    just these settings."""
    found = {setting: params[name] for name, setting in FLAG_SETTINGS.items() if name in params}
    if "limit" in params:
        found[LIMIT_SETTING[command]] = params["limit"]
    return {k: v for k, v in found.items() if only is None or k in only}


def run_settings(ctx: click.Context, command: str | None = None, *, require_task: bool | None = None,
                 only=None) -> RunConfig:
    """The run settings of the command being run (or of ``command``): its defaults < --config <
    --scale < its flags < --set, every flag mapped by :func:`flag_settings`. Loads the plugins
    first (--plugins-dir), so the layers below find them."""
    _plugins(ctx)
    params = ctx.params
    command = command or ctx.command.name
    return resolve(command, params.get("config_path"), scale=params.get("scale"),
                   set_items=params.get("set_items") or (), flags=flag_settings(params, command, only),
                   require_task=command in NEEDS_TASK if require_task is None else require_task)


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


def _echo_err(message: str) -> None:
    click.echo(message, err=True)


# -- the commands -----------------------------------------------------------------------------------
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
    if threading.current_thread() is threading.main_thread():  # CliRunner may run us elsewhere
        signal.signal(signal.SIGTERM, _terminate)


def _terminate(signum, frame):
    """SIGTERM (`kill`, `timeout`, a scheduler's job end) stops s2d as Ctrl-C does: the `finally`
    blocks run and close the vLLM engine. Without this its EngineCore and worker processes, which
    do not watch their parent, outlive s2d and keep its memory and cores, slowing the resumed run."""
    raise SystemExit(128 + signum)


@cli.command()
@flag("json")
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
@flag("json")
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
@flag("json")
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
@flag("json")
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


@cli.command()
@backend_options
@settings_options
@flag("task", help="Run a method over a task split (writes traces).")
@flag("method")
@flag("split", help="Task split; train is used unlabeled [default: train].")
@flag("limit", help="Only the first N documents of the split (the setting train_limit).")
@click.option("--perturb", is_flag=True, help="Also run every input's perturbation (for the perturb curator).")
@cache_options
@click.option("--chunk-sequences", type=click.IntRange(min=1), default=2048, show_default=True,
              help="Sequences per engine call within a stage; a kill loses at most one chunk.")
@click.option("--input", "input_path", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Instead of --task: JSONL of raw requests, {'messages': [...]} or {'prompt': '...'} plus "
                   "optional max_new_tokens, temperature, top_p, n, stop, seed, adapter, id, first_sample.")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="Output JSONL.")
@flag("n", help="Samples per input [default: 1].")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=None,
              help="[default: 256 with --input; the method's own per stage with --task]")
@click.option("--temperature", type=FINITE_NON_NEGATIVE, default=None,
              help="[default: 0 (greedy) for n=1, 0.7 for n>1]")
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="[default: 1.0, or the method's own]")
@click.option("--stop", multiple=True, help="Stop string (repeatable; --input only).")
@flag("adapter")
@flag("progress")
@click.pass_context
def generate(ctx, model, backend, dtype, batch_size, threads, trust_remote_code, seed, config_path, scale, set_items,
             task_name, method, split, limit, perturb, cache_dir, no_cache, chunk_sequences, input_path, out_path, n,
             max_new_tokens, temperature, top_p, stop, adapter, progress):
    """Run a method over a task split and write traces (--task, or `task:` in --config), or
    generate for raw requests (--input).

    Traces go through the generation cache: rerunning a killed run generates only what is missing."""
    if input_path:
        if any((task_name, method, config_path, scale, set_items, perturb, split, limit, cache_dir, no_cache)):
            raise click.UsageError("--task/--method/--config/--scale/--set/--split/--limit/--perturb/--cache go "
                                   "with --task, not --input (each input line carries its own settings; raw "
                                   "requests are not cached)")
        cfg = run_settings(ctx, only=("model", "backend", "seed"))
        generate_requests(input_path, out_path, model=cfg["model"], seed=cfg["seed"],
                          engine=lambda: make_backend(ctx, cfg, dtype, batch_size, threads, trust_remote_code),
                          n=1 if n is None else n, max_new_tokens=256 if max_new_tokens is None else max_new_tokens,
                          temperature=temperature, top_p=1.0 if top_p is None else top_p, stop=stop,
                          adapter=adapter, progress=progress, echo=_echo_err)
        return
    cfg = run_settings(ctx)
    if not cfg["task"]:
        raise click.UsageError("give --task (or `task:` in --config) to run a method, or --input for raw requests")
    if stop:  # a method's stages set their own stop strings; never drop a flag silently
        raise click.UsageError("--stop goes with --input; with --task each stage of the method sets its own")
    generate_for_task(cfg, lambda: make_backend(ctx, cfg, dtype, batch_size, threads, trust_remote_code),
                      out_path=out_path, inputs=[config_path], adapter=adapter, max_new_tokens=max_new_tokens,
                      perturb=perturb, chunk_sequences=chunk_sequences, folders=_read_folders(cfg, cache_dir, no_cache),
                      open_cache=lambda: _cache(cache_dir, no_cache), progress=progress, echo=_echo_err)


@cli.command()
@settings_options
@flag("curator", "-c", help="See `s2d list curators` [default: majority].")
@click.option("--traces", "traces_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Traces JSONL written by `s2d generate --task ...`.")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="Training set (TRL prompt-completion JSONL); .dropped.jsonl and .summary.json go beside it.")
@flag("model", help="Model for curators that ask one (usc) [default: smollm2-135m].")
@flag("backend", help=None)
@flag("dtype")
@flag("seed")
@cache_options
@flag("progress")
@click.pass_context
def curate(ctx, config_path, scale, set_items, curator, traces_path, out_path, model, backend, dtype, seed, cache_dir,
           no_cache, progress):
    """Turn traces into a training set with an unsupervised curator; print the summary.

    Curator options are settings: --set curator_options.threshold=0.8 (or `curator_options:` in --config)."""
    cfg = run_settings(ctx)
    summary = curate_file(cfg, lambda: make_backend(ctx, cfg, dtype), traces_path=traces_path, out_path=out_path,
                          inputs=[config_path], folders=_read_folders(cfg, cache_dir, no_cache),
                          open_cache=lambda: _cache(cache_dir, no_cache), progress=progress)
    click.echo(json.dumps(summary, indent=2))


@cli.command()
@settings_options
@click.option("--data", "data_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Curated prompt-completion JSONL (from `s2d curate`).")
@click.option("--out-dir", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Adapter (lora) or model (full) folder; checkpoints go under OUT_DIR/checkpoints.")
@flag("trainer", help="See `s2d list trainers` [default: lora].")
@flag("model", help="Base model [default: smollm2-135m].")
@flag("seed")
@click.option("--overwrite", is_flag=True, help="Start over where OUT_DIR holds checkpoints of other data or settings.")
@flag("progress")
@click.pass_context
def train(ctx, config_path, scale, set_items, data_path, out_dir, trainer, model, seed, overwrite, progress):
    """Fine-tune on a curated set; resumes from OUT_DIR's last checkpoint after a kill.

    Trainer options are settings: --set trainer_options.epochs=3 --set trainer_options.learning_rate=2e-4.
    Runs data-parallel under `accelerate launch --multi_gpu --num_processes N -m s2d.cli train ...`
    (also on CPUs, over gloo), or FSDP / DeepSpeed with --config_file; trainer_options.batch_size
    is the batch of all N processes together (docs/scale.md)."""
    cfg = run_settings(ctx)
    out = train_file(cfg, data_path=data_path, out_dir=out_dir, inputs=[config_path], overwrite=overwrite,
                     progress=progress)
    click.echo(f"{cfg['trainer']} -> {out}")


@cli.command()
@settings_options
@flag("task")
@flag("method", help="System 2 method to distil [default: rar2]; system1 = 'Distill System 1'.")
@flag("curator")
@flag("trainer")
@click.option("--name", default=None, help="Run name [default: task-method-curator-trainer].")
@click.option("--runs-dir", default="runs/distill", show_default=True, type=click.Path(file_okay=False))
@click.option("--out-dir", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Run folder: new, empty, or one of this run's [default: RUNS_DIR/NAME]. One run at a time.")
@flag("n", help="Samples per train input [default: 8].")
@click.option("--train-limit", type=click.IntRange(min=1), default=None, help="Only the first N train inputs.")
@click.option("--eval-limit", type=click.IntRange(min=1), default=None, help="Only the first N test documents.")
@flag("model")
@flag("backend")
@flag("dtype")
@flag("seed")
@cache_options
@click.option("--export", "export_dir", default=None, type=click.Path(file_okay=False),
              help="Copy the finished run (without weights and traces) to this folder, e.g. under results/.")
@flag("progress")
@click.pass_context
def distill(ctx, config_path, scale, set_items, task_name, method, curator, trainer, name, runs_dir, out_dir, n,
            train_limit, eval_limit, model, backend, dtype, seed, cache_dir, no_cache, export_dir, progress):
    """Generate on the train split, curate, train, and score System 1, System 2 and the distilled
    model through lm-eval; every stage resumes after a kill. Prints a three-row summary."""
    cfg = run_settings(ctx)
    folder = out_dir or str(Path(runs_dir) / safe_name(name or cfg.name()))
    # Expected errors (S2DError) become one line; anything else (a bug) keeps its traceback.
    summary = distill_settings(cfg, folder, config_path=config_path, export_dir=export_dir,
                               folders=_read_folders(cfg, cache_dir, no_cache),
                               cache_folder=_cache_folder(cache_dir, no_cache),
                               open_cache=lambda: _cache(cache_dir, no_cache), progress=progress, echo=_echo_err,
                               backend_options={"dtype": dtype} if dtype else None)
    click.echo(format_summary(summary))
    click.echo(f"-> {folder}", err=True)
    if export_dir:
        click.echo(f"-> {export_dir}", err=True)
    if summary.get("error"):
        raise click.ClickException(summary["error"])


@cli.command()
@settings_options
@flag("model")
@flag("backend")
@flag("dtype", help="The engine's dtype: part of the throughput table's key [default: auto].")
@click.option("--throughput", "throughput_path", default=None, type=click.Path(dir_okay=False),
              help="Throughput table JSON (yours, for your GPUs) [default: $S2D_CACHE/throughput.json].")
@click.option("--records", "records_dir", default=None, type=click.Path(file_okay=False),
              help="Committed records whose mean lengths estimate generated tokens [default: results].")
@click.option("--calibrate", is_flag=True, help="Measure this machine's throughput for the model, backend and "
              "trainer (about a minute) and write it into the table.")
@flag("json")
@click.pass_context
def plan(ctx, config_path, scale, set_items, model, backend, dtype, throughput_path, records_dir, calibrate, as_json):
    """What `s2d distill` with these settings will cost, per round and stage, with no model loaded:
    engine requests and samples, prompt and generated tokens (with the source of each estimate),
    training examples x epochs, eval documents, and the time from a throughput table (docs/plan.md)."""
    plugins = _plugins(ctx)
    if calibrate:  # needs no task: the calibration brings its own prompts and records
        cfg = run_settings(ctx, "distill", require_task=False)
        plugins.get("trainers", cfg["trainer"])
        entry = measure(cfg, dtype=dtype, path=throughput_path, echo=_echo_err)
        click.echo(json.dumps(entry, indent=2))
        return
    # checked as `s2d distill` checks them
    cfg = load_settings(plugins, config_path, scale, set_items, flag_settings(ctx.params, "distill"))
    result = make_plan(cfg, dtype=dtype, throughput=throughput_path, records=records_dir)
    click.echo(json.dumps(result, indent=2) if as_json else format_plan(result))


@cli.command()
@click.argument("table", type=click.Choice(["table1", "table2", "table3", "table4"]))
@click.option("--scale", type=click.Choice(["small", "paper"]), default="small", show_default=True,
              help="small: sized for a 2-core CPU and the embedded model; paper: the paper's sizes (GPU).")
@flag("set", help="A setting over every run of the table (e.g. eval_limit=50); named in the run folders.")
@click.option("--configs-dir", default="experiments/configs", show_default=True, type=click.Path(file_okay=False))
@click.option("--runs-dir", default="runs/reproduce", show_default=True, type=click.Path(file_okay=False))
@click.option("--out-dir", "out_dir", default="results/reproduce", show_default=True, type=click.Path(file_okay=False))
@click.option("--only", multiple=True, metavar="RUN",
              help="Run only these run folders (repeatable or comma-separated); the table takes the "
                   "other runs' rows from their finished folders or exports.")
@click.option("--report-only", is_flag=True,
              help="Run nothing: write the table from the finished run folders or exports.")
@flag("backend", help=None)
@flag("model", help="[default: smollm2-135m] Another model gets its own run folders and table file.")
@flag("progress")
@click.pass_context
def reproduce(ctx, table, scale, set_items, configs_dir, runs_dir, out_dir, only, report_only, backend, model,
              progress):
    """Run a paper table's configs (reusing finished runs) and write it beside the paper's numbers."""
    _plugins(ctx)
    failed = None
    try:
        path = run_table(table, scale=scale, configs_dir=configs_dir, runs_dir=runs_dir, out_dir=out_dir,
                         backend=backend, progress=progress, echo=_echo_err, model=model,
                         settings=parse_set(set_items),
                         only=[name.strip() for item in only for name in item.split(",") if name.strip()],
                         report_only=report_only)
    except RunsFailed as exc:  # the table is written: show it, then the failures
        path, failed = exc.path, exc
    click.echo(path.read_text())
    click.echo(f"-> {path}", err=True)
    if failed:
        raise click.ClickException(str(failed))


@cli.command(name="show-prompts")
@settings_options
@flag("task", help="Task [default: the config's].")
@flag("method", help="Method [default: system1].")
@click.option("--split", "shown_split", default="test", show_default=True)  # not the setting `split`
@click.option("--index", type=click.IntRange(min=0), default=0, show_default=True, help="Which document of the split.")
@click.pass_context
def show_prompts(ctx, config_path, scale, set_items, task_name, method, shown_split, index):
    """Print every rendered stage of a method for one document (nothing is generated)."""
    cfg = run_settings(ctx)
    for stage, prompts in stage_prompts(cfg, shown_split, index):
        for j, prompt in enumerate(prompts):
            suffix = f" [{j + 1}/{len(prompts)}]" if len(prompts) > 1 else ""
            click.echo(click.style(f"=== {cfg['method']} / stage {stage}{suffix} ===", bold=True))
            click.echo(prompt)
            click.echo()


@cli.command(name="eval")
@backend_options
@settings_options
@flag("task", "-t", help="Task names, comma-separated (see `s2d list tasks`) [default: the config's].")
@flag("method")
@flag("adapter")
@flag("limit", help="Evaluate the first N documents of each task (the setting eval_limit).")
@click.option("--log-samples", is_flag=True, help="Keep every document's prompt, output and metrics.")
@click.option("--out-dir", "out_dir", default="results/eval", show_default=True, type=click.Path(file_okay=False),
              help="Where the records go.")
@click.option("--label", default=None, help="Condition name in the records [default: method(+options)(+adapter)].")
@cache_options
@click.option("--overwrite", is_flag=True, help="Replace records made with other settings (refused by default).")
@flag("progress")
@click.pass_context
def eval_(ctx, model, backend, dtype, batch_size, threads, trust_remote_code, seed, config_path, scale, set_items,
          task_name, method, adapter, limit, log_samples, out_dir, label, cache_dir, no_cache, overwrite, progress):
    """Score a model (System 1, a method, or base + adapter) on s2d's tasks through lm-eval.

    With a run's --config, the method is scored as that run's System 2 row (its method options and
    eval_method_options, its task_options and eval_task_options, eval_limit). Task options
    subset=N subset_seed=S (--set task_options.subset=300) evaluate a seeded random subset of at
    least N documents (judged pairs stay whole), the same for every condition."""
    cfg = run_settings(ctx)
    if not cfg.tasks():
        raise click.UsageError("give --task NAME[,NAME...] (or `task:` in --config)")
    paths = evaluate_settings(cfg, lambda: make_backend(ctx, cfg, dtype, batch_size, threads, trust_remote_code),
                              adapter=adapter, log_samples=log_samples, results_dir=out_dir, label=label,
                              overwrite=overwrite, inputs=[config_path, adapter],
                              folders=_read_folders(cfg, cache_dir, no_cache),
                              open_cache=lambda: _cache(cache_dir, no_cache), progress=progress, warn=_echo_err)
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
        table, md, png = write_leaderboard(results_dir, out_dir, warn=_echo_err)
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
@flag("backend", help="[default: the run's]")
@click.option("--out-dir", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Where to write [default: RUN_FOLDER/route-CONFIDENCE].")
@cache_options
@flag("progress")
def route(run_folder, confidence, samples, tune_split, tolerance, round_, backend, out_dir, cache_dir, no_cache,
          progress):
    """System 1 first, System 2 when unsure: sweep confidence thresholds for a distilled run on the
    validation split, draw the accuracy/cost curve on the test split and score the chosen threshold
    there through lm-eval (`s2d eval --method route`)."""
    out = Path(out_dir) if out_dir else Path(run_folder) / f"route-{confidence}"
    result = route_run(run_folder, out_dir=out, tune_split=tune_split, confidence=confidence, samples=samples,
                       tolerance=tolerance, backend=backend, round_=round_, cache=_cache(cache_dir, no_cache),
                       progress=progress, echo=_echo_err)
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
@flag("task", help=None)
@flag("method", help=None)
@flag("json", help="JSON instead of YAML.")
@click.option("--help-settings", is_flag=True, help="Describe every run setting (type, range, default, help) and exit.")
@click.pass_context
def config_show(ctx, config_path, scale, set_items, command, task_name, method, as_json, help_settings):
    """Print the effective run settings (defaults < config file < --scale < flags < --set) as YAML:
    what the command with the same arguments would use (`s2d distill` saves it beside the run).
    The plugins' options are checked as the command would check them (no data read, no model)."""
    import yaml

    if help_settings:
        click.echo(settings_help())
        return
    cfg = run_settings(ctx, command, require_task=command == "distill")
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


@cli.command()
@click.argument("plan_path", metavar="PLAN.yaml", type=click.Path(exists=True, dir_okay=False))
@click.option("--only", multiple=True, metavar="NAME",
              help="Run only these runs (repeatable or comma-separated); the report still lists every run.")
@click.option("--dry-run", is_flag=True, help="Check the plan and list its runs, settings, folders and states.")
@click.option("--report-only", is_flag=True, help="Write the report from the finished run folders; run nothing.")
@click.option("--runs-dir", default=None, type=click.Path(file_okay=False),
              help="Where the run folders are [default: the plan's runs_dir, else runs/sweep/PLAN].")
@flag("model", help="A model for every run; it names their folders and the report.")
@flag("set", help="A setting over every run (e.g. eval_limit=50); it names their folders and the report.")
@flag("dtype")
@cache_options
@flag("progress")
@click.pass_context
def sweep(ctx, plan_path, only, dry_run, report_only, runs_dir, model, set_items, dtype, cache_dir, no_cache, progress):
    """Run a plan of runs over a base config (docs/sweep.md), reusing finished run folders, and
    write its report table beside them. The whole plan is checked before the first run."""
    _plugins(ctx)
    plan = load_plan(plan_path, runs_dir=runs_dir, model=model, set_layer=parse_set(set_items))
    runs = select(plan, only)
    failed = {}
    if not report_only:
        check_plan(plan)
    if dry_run:
        click.echo(describe(plan))
        return
    if not report_only:
        failed = run_plan(plan, runs, progress=progress, echo=_echo_err,
                          cache=_cache(cache_dir, no_cache), backend_options={"dtype": dtype} if dtype else None)
    text, path = write_report(plan)
    click.echo(text, nl=False)
    click.echo(f"-> {path}", err=True)
    if failed:
        raise click.ClickException(f"{len(failed)} run(s) failed: "
                                   + "; ".join(f"{name}: {why}" for name, why in failed.items()))


def main():
    cli(prog_name="s2d")


if __name__ == "__main__":
    sys.exit(main())

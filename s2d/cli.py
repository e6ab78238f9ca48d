"""The `s2d` command line. Heavy libraries are imported inside commands, never here."""

from __future__ import annotations

import json
import sys
import time

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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="s2d")
@click.option("--plugins-dir", type=click.Path(file_okay=False), envvar="S2D_PLUGINS_DIR",
              help="Also load every *.py file in DIR as a plugin (unpublished experiments).")
@click.pass_context
def cli(ctx, plugins_dir):
    """s2d: distil System 2 methods (CoT, RaR, S2A, BSM, ...) into direct System 1 answers.

    Plugins add methods, curators, tasks, trainers and backends: see `s2d plugins`.
    """


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
        click.echo(f"    hub: {r['hub_id']}  cached: {r['cached']}  source: {r['source']}")
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


@cli.command()
@backend_options
@click.option("--input", "input_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="JSONL: one request per line, {'messages': [...]} or {'prompt': '...'} plus optional "
                   "max_new_tokens, temperature, top_p, n, stop, seed, adapter, id.")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="Output JSONL.")
@click.option("--n", type=int, default=1, show_default=True, help="Samples per request.")
@click.option("--max-new-tokens", type=int, default=256, show_default=True)
@click.option("--temperature", type=float, default=None, help="[default: 0 (greedy) for n=1, 0.7 for n>1]")
@click.option("--top-p", type=float, default=1.0, show_default=True)
@click.option("--stop", multiple=True, help="Stop string (repeatable).")
@click.option("--adapter", type=click.Path(exists=True, file_okay=False), default=None, help="LoRA adapter folder.")
@click.option("--progress/--no-progress", default=True)
@click.pass_context
def generate(ctx, model, backend, dtype, batch_size, threads, trust_remote_code, seed, input_path, out_path, n,
             max_new_tokens, temperature, top_p, stop, adapter, progress):
    """Batched generation over a JSONL of requests; per-line fields override the options."""
    from s2d.backends.base import Request
    from s2d.envinfo import versions
    from s2d.files import InputError, read_jsonl, write_jsonl

    defaults = {"n": n, "max_new_tokens": max_new_tokens, "top_p": top_p, "stop": list(stop),
                "temperature": temperature if temperature is not None else (0.0 if n == 1 else 0.7),
                "adapter": adapter}
    try:  # validate every line before any model is loaded
        requests = read_jsonl(input_path, lambda rec: Request.from_dict(rec, defaults))
    except (InputError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    if not requests:
        raise click.ClickException(f"{input_path}: no requests")
    engine = make_backend(ctx, backend, model, seed, dtype, batch_size, threads, trust_remote_code)
    start = time.perf_counter()
    with engine:
        outputs = engine.generate(requests, progress=progress)
        vers = {**versions(), **engine.versions()}
    wall = time.perf_counter() - start
    from s2d.backends.base import sample_seed

    def records():
        for i, (req, outs) in enumerate(zip(requests, outputs)):
            yield {"id": req.id if req.id is not None else i, "request": req.as_dict(),
                   "completions": [c.as_dict() for c in outs],
                   "prompt_tokens": outs[0].prompt_tokens,
                   "completion_tokens": sum(c.completion_tokens for c in outs),
                   "seed": None if req.greedy else sample_seed(seed, req, i, 0), "run_seed": seed,
                   "backend": engine.name, "model": model or "smollm2-135m", "model_path": engine.model_path,
                   "versions": vers}

    write_jsonl(out_path, records())
    tokens = sum(c.completion_tokens for outs in outputs for c in outs)
    click.echo(f"{len(requests)} requests, {tokens} generated tokens in {wall:.1f} s including the engine's start "
               f"with {engine.name} -> {out_path}", err=True)


@cli.command(name="eval")
@backend_options
@click.option("--tasks", "-t", required=True, help="Comma-separated task names (see `s2d list tasks`).")
@click.option("--method", default="system1", show_default=True, help="Method that answers (see `s2d list methods`).")
@click.option("--adapter", type=click.Path(exists=True, file_okay=False), default=None, help="LoRA adapter folder.")
@click.option("--limit", type=int, default=None, help="Evaluate the first N documents of each task.")
@click.option("--log-samples", is_flag=True, help="Keep every document's prompt, output and metrics.")
@click.option("--results-dir", default="results/eval", show_default=True, type=click.Path(file_okay=False))
@click.option("--label", default=None, help="Condition name in the records [default: method(+adapter)].")
@click.option("--task-option", "task_options", multiple=True, metavar="KEY=VALUE",
              help="Option for the task plugins, e.g. data_dir=... or seed=1 (repeatable).")
@click.option("--progress/--no-progress", default=True)
@click.pass_context
def eval_(ctx, model, backend, dtype, batch_size, threads, trust_remote_code, seed, tasks, method, adapter, limit,
          log_samples, results_dir, label, task_options, progress):
    """Score a model (System 1, a method, or base + adapter) on s2d's tasks through lm-eval."""
    from s2d.lmeval.run import evaluate

    names = [t.strip() for t in tasks.split(",") if t.strip()]
    plugins = _plugins(ctx)
    try:
        for name in names:
            plugins.get("tasks", name)
    except UnknownNameError as exc:
        raise click.ClickException(str(exc)) from None
    options = {}
    for item in task_options:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--task-option")
        options[key] = int(value) if value.lstrip("-").isdigit() else value
    engine = make_backend(ctx, backend, model, seed, dtype, batch_size, threads, trust_remote_code)
    from s2d.tasks.base import TaskDataError

    with engine:
        try:
            paths = evaluate(engine, model_ref=model or "smollm2-135m", tasks=names, method=method, adapter=adapter,
                             limit=limit, seed=seed, log_samples=log_samples, results_dir=results_dir, label=label,
                             task_options=options or None, progress=progress)
        except (TaskDataError, ValueError) as exc:
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
        table, md, png = build(results_dir, out)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(table)
    click.echo(f"-> {md}" + (f", {png}" if png else ""), err=True)


@cli.command(name="tasks-path")
def tasks_path():
    """Print the folder of s2d's lm-eval task files (for `lm_eval --include_path`)."""
    from s2d.lmeval.tasks import tasks_path as path

    click.echo(path())


def main():
    cli(prog_name="s2d")


if __name__ == "__main__":
    sys.exit(main())

"""One stage of a distillation run on its own: the work behind `s2d generate --task`, `s2d curate`,
`s2d train` and `s2d show-prompts` (`s2d distill` runs the stages together, s2d.distill).

Each function takes the resolved run settings and checks everything a user can get wrong (options,
inputs, outputs that would overwrite an input) before it starts an engine or loads a model; the
engine and the generation cache come from the callables ``open_engine`` and ``open_cache``, called
only once those checks pass.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

from s2d.config import RunConfig
from s2d.curators.base import task_judge, write_curated
from s2d.errors import InputError
from s2d.files import check_output, local_path, write_jsonl
from s2d.lmeval.tasks import build_task
from s2d.methods.base import run_method
from s2d.models import resolve_model
from s2d.plugins import build
from s2d.traces import (build_curator, build_method, check_adapter, generate_traces, load_traces, make_runner,
                        task_docs)
from s2d.trainers.base import check_out_dir, load_records

StrPath = str | os.PathLike


def generate_for_task(cfg: RunConfig, open_engine: Callable[[], Any], *, out_path: StrPath, inputs=(),
                      adapter: str | None = None, max_new_tokens: int | None = None, perturb: bool = False,
                      chunk_sequences: int = 2048, folders=(), open_cache: Callable[[], Any] = lambda: None,
                      progress: bool = True, echo: Callable[[str], None] = print) -> list[dict]:
    """`s2d generate --task`: the settings' method over their task's split (``train_limit``
    documents) and, with ``perturb``, each input's perturbation, written as traces to ``out_path``
    through the generation cache. ``inputs``: files the run reads besides the model and adapter."""
    check_adapter(adapter)
    options = cfg.generation_options()
    if max_new_tokens is not None:
        options["max_new_tokens"] = max_new_tokens
    task = build_task(cfg["task"], strict=True, **cfg["task_options"])
    method = build_method(cfg["method"], task, **options)
    docs = task_docs(task, cfg["split"], cfg["train_limit"])
    cache = open_cache()
    check_output(out_path, *inputs, adapter, local_path(cfg["model"]), folders=folders)
    engine = open_engine()
    start = time.perf_counter()
    with engine:
        traces, stats = generate_traces(engine, task, method, docs, split=cfg["split"], cache=cache,
                                        seed=cfg["seed"], adapter=adapter, perturb=perturb, progress=progress,
                                        chunk_sequences=chunk_sequences)
    write_jsonl(out_path, traces)
    tokens = [s["total_tokens"] for t in traces for s in t["samples"]]
    echo(f"{len(traces)} inputs x {method.n} samples of {cfg['method']} on {cfg['task']}/{cfg['split']}: "
         f"{stats['generated']} generated, {stats['reused']} from the cache, mean "
         f"{sum(tokens) / max(len(tokens), 1):.1f} tokens per sample, {time.perf_counter() - start:.1f} s "
         f"-> {out_path}")
    return traces


def curate_file(cfg: RunConfig, open_engine: Callable[[], Any], *, traces_path: StrPath, out_path: StrPath, inputs=(),
                folders=(), open_cache: Callable[[], Any] = lambda: None, progress: bool = True) -> dict:
    """`s2d curate`: the traces of one task (the settings' task, if they name one) curated by the
    settings' curator into a training set at ``out_path`` (with .dropped.jsonl and .summary.json
    beside it); returns the summary. A curator that asks a model gets ``open_engine()``."""
    traces = load_traces(traces_path)
    if not traces:
        raise InputError(f"{traces_path}: no traces")
    tasks = {t.get("task") for t in traces}
    if len(tasks) != 1 or None in tasks:
        raise InputError(f"{traces_path}: traces must come from one task, found {sorted(map(str, tasks))}")
    name = tasks.pop()
    if cfg["task"] and cfg["task"] != name:
        raise InputError(f"{traces_path}: traces of task {name!r}, but the settings say {cfg['task']!r}")
    task = build_task(name, strict=True, **cfg["task_options"])
    out = Path(out_path)
    for written in (out, out.with_name(out.stem + ".dropped.jsonl"), out.with_name(out.stem + ".summary.json")):
        check_output(written, traces_path, *inputs, local_path(cfg["model"]), folders=folders)
    curator = build_curator(cfg["curator"], task, **cfg["curator_options"])
    cache = open_cache() if curator.needs_model else None  # checked before the model loads
    engine = open_engine() if curator.needs_model else None
    try:
        runner = make_runner(engine, f"curator:{cfg['curator']}", cache=cache,
                             seed=cfg["seed"], progress=progress) if engine else None
        decisions = curator.curate(traces, runner)
    finally:
        if engine is not None:
            engine.close()
    return write_curated(out_path, traces, decisions, curator=cfg["curator"], judge=task_judge(task),
                         extra={"traces": str(traces_path), "method": traces[0].get("method")})


def train_file(cfg: RunConfig, *, data_path: StrPath, out_dir: StrPath, inputs=(), overwrite: bool = False,
               progress: bool = True) -> Any:
    """`s2d train`: the settings' trainer (with its options) fine-tunes their model on a curated set;
    returns what the trainer wrote. The data, and an output folder that would be or hold the model
    or an input, are checked for every trainer (a plugin's too) before any model is converted or loads."""
    trainer = build("trainers", cfg["trainer"], cfg["trainer_options"])
    trainer.overwrite = overwrite
    load_records(data_path)  # every line checked before the model is converted or loaded
    # An alias resolves into the s2d cache, which check_output guards.
    check_out_dir(cfg["model"], out_dir)
    check_output(out_dir, data_path, *inputs, flag="--out-dir", folder=True)
    return trainer.train(resolve_model(cfg["model"]), data_path, out_dir, seed=cfg["seed"], progress=progress)


def stage_prompts(cfg: RunConfig, split: str, index: int) -> list[tuple[str, list[str]]]:
    """`s2d show-prompts`: (stage, rendered prompts) of the settings' method (as scored, one sample)
    on document ``index`` of the task's ``split``; nothing is generated."""
    task = build_task(cfg["task"], strict=True, **cfg["task_options"])
    method = build_method(cfg["method"], task, **{**cfg.eval_method_options(), "n": 1})
    docs = task_docs(task, split)
    if index >= len(docs):
        raise InputError(f"--index {index}: {cfg['task']}/{split} has {len(docs)} documents")
    shown: list[tuple[str, list[str]]] = []
    runner = make_runner(None, cfg["method"], record=lambda stage, prompts: shown.append((stage, prompts)))
    run_method(method, runner, [docs[index]])
    return shown

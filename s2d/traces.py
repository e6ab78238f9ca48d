"""Run a method over a task split and write traces; build methods, curators and stage runners.

The glue the CLI, the lm-eval model and the distill loop share, so that each of them runs methods
the same way (same cache keys, same trace format).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable

from s2d.backends.base import sample_seed
from s2d.cache import GenerationCache
from s2d.envinfo import versions
from s2d.errors import ConfigError, InputError, PromptTooLongError, S2DError
from s2d.files import check_output, default_cache_dir, local_path, read_jsonl, write_jsonl
from s2d.methods.base import Method, run_method
from s2d.plugins import build, get_plugins
from s2d.stages import Request, StageRunner
from s2d.store import weights_identity


def model_identity(backend) -> str:
    """What names the weights in cache keys: engine, the weights' content hash (a hub id or the
    scripted backend's name where there is no folder) and dtype. Not the path: a folder trained
    into again holds other weights, and must not get the old weights' samples back."""
    return f"{backend.name}:{weights_identity(backend.model_path)}:{getattr(backend, 'dtype', None)}"


def open_cache(cache: str | os.PathLike | bool | None):
    """``None``/``False``: no cache; ``True``: the default folder; an open cache: itself; else that folder."""
    if cache is None or cache is False:
        return None
    if isinstance(cache, GenerationCache):  # the CLI opens it once; a second open would take it as a path
        return cache
    return GenerationCache(default_cache_dir() if cache is True else cache)


def build_method(name: str, task, **options: Any) -> Method:
    return build("methods", name, options, task)


def resolved_method_options(name: str, options: dict | None) -> dict:
    """A method's options as a run uses them: its declared defaults, then the given values. Records
    and run folders store this, so a default changed later cannot make them claim the new value."""
    cls = get_plugins().get("methods", name).obj
    resolved = {**cls.options(), **(options or {})}
    if isinstance(cls, type) and issubclass(cls, Method):
        # Each stage's decoding (caps, temperature, top-p) as the run resolves it, so a raised cap
        # or a new wording's decoding is a change of settings, never silently the same record.
        probe = cls.__new__(cls)
        try:
            Method.__init__(probe, None, **(options or {}))
            resolved["decoding"] = probe.decoding()
        except Exception:  # a bad option fails where the method is built, with its own message; a plugin
            resolved["decoding"] = "unresolved"  # whose decoding needs its own __init__ says so here
    return json.loads(json.dumps(resolved, sort_keys=True, default=str))


def build_curator(name: str, task, **options: Any):
    return build("curators", name, options, task)


def make_runner(backend, method: str, *, cache=None, seed: int = 0, adapter: str | None = None,
                progress: bool = True, defaults: dict | None = None, record=None,
                chunk_sequences: int = 2048) -> StageRunner:
    return StageRunner(backend, method=method, model_id=model_identity(backend) if backend else "none",
                       cache=cache, seed=seed, adapter=adapter, adapter_id=weights_identity(adapter), progress=progress, defaults=defaults, record=record,
                       chunk_sequences=chunk_sequences)


def generate_traces(backend, task, method: Method, docs: list[dict], *, split: str, cache=None, seed: int = 0,
                    adapter: str | None = None, perturb: bool = False, progress: bool = True,
                    chunk_sequences: int = 2048) -> tuple[list[dict], dict]:
    """Run ``method`` on ``docs`` (and their perturbations) and return (traces, stats)."""
    runner = make_runner(backend, method.name, cache=cache, seed=seed, adapter=adapter, progress=progress,
                         chunk_sequences=chunk_sequences)
    inputs = list(docs)
    if perturb:
        variants = [task.perturb(d) for d in docs]
        if any(v is None for v in variants):
            raise ConfigError(f"task {task.name!r} defines no input perturbation; drop --perturb")
        inputs += variants
    samples = run_method(method, runner, inputs)
    traces = []
    for i, doc in enumerate(docs):
        trace = {"id": str(doc["id"]), "task": task.name, "method": method.name, "split": split,
                 "model": runner.model_id,  # the weights' content hash that keyed these samples
                 "wording": getattr(method, "wording", None),
                 "decoding": method.decoding() if hasattr(method, "decoding") else None,  # per stage, as keyed
                 "prompt": [{"role": "user", "content": task.system1_prompt(doc)}], "samples": samples[i]}
        if perturb:
            p = inputs[len(docs) + i]
            trace["perturbed"] = {"id": str(p["id"]), "prompt": [{"role": "user", "content": task.system1_prompt(p)}],
                                  "samples": samples[len(docs) + i]}
        if isinstance(doc.get("answer"), str):
            trace["reference"] = doc["answer"]  # analysis only (target accuracy); curators never read it
        traces.append(trace)
    return traces, {"generated": runner.generated, "reused": runner.reused}


def load_traces(path: str | os.PathLike) -> list[dict]:
    """Read a traces JSONL, checking each line has what curators need (errors name file:line)."""
    seen: set[str] = set()

    def check(rec):
        if not isinstance(rec, dict):
            raise ValueError("a trace must be a JSON object")
        for key in ("id", "prompt", "samples"):
            if key not in rec:
                raise ValueError(f"trace has no {key!r} field (write traces with `s2d generate --task ...`)")
        if not isinstance(rec["id"], (str, int)) or isinstance(rec["id"], bool):
            raise ValueError(f"'id' must be a string, got {rec['id']!r}")
        if not isinstance(rec["prompt"], list) or not all(isinstance(m, dict) and isinstance(m.get("content"), str)
                                                          for m in rec["prompt"]):
            raise ValueError("'prompt' must be a list of chat messages {'role', 'content'}")
        if not isinstance(rec["samples"], list):
            raise ValueError(f"'samples' must be a list, got {type(rec['samples']).__name__}")
        for j, s in enumerate(rec["samples"]):
            if not isinstance(s, dict) or "response" not in s or "answer" not in s:
                raise ValueError(f"sample {j} needs 'response' and 'answer'")
            if not isinstance(s["response"], str) or not (s["answer"] is None or isinstance(s["answer"], str)):
                raise ValueError(f"sample {j}: 'response' must be a string and 'answer' a string or null")
        rec["id"] = str(rec["id"])
        if rec["id"] in seen:  # curators pair decisions to traces by id: a repeat would swap samples
            raise ValueError(f"duplicate trace id {rec['id']!r} (an earlier line has it); one trace per input")
        seen.add(rec["id"])
        return rec

    return read_jsonl(path, check)


def task_docs(task, split: str, limit: int | None = None) -> list[dict]:
    """The first ``limit`` documents of ``task``'s ``split`` (all with None); a split the task
    cannot give is a ConfigError."""
    try:
        docs = task.docs(split)
    except ValueError as exc:
        if isinstance(exc, S2DError):
            raise
        raise ConfigError(str(exc)) from None
    return docs if limit is None else docs[:limit]


def check_adapter(adapter: str | None, what: str = "--adapter") -> None:
    """An adapter (the --adapter flag, or a request line's 'adapter') must be a PEFT adapter
    folder: said now, before any model loads."""
    if adapter is not None and not (Path(adapter) / "adapter_config.json").is_file():
        raise InputError(f"{what} {adapter!r} is not a PEFT adapter folder (no adapter_config.json)")


def generate_requests(input_path: str | os.PathLike, out_path: str | os.PathLike, *, model: str, seed: int,
                      engine: Callable[[], Any], n: int = 1, max_new_tokens: int = 256,
                      temperature: float | None = None, top_p: float = 1.0, stop=(), adapter: str | None = None,
                      progress: bool = True, echo: Callable[[str], None] = print) -> None:
    """`s2d generate --input`: raw requests (JSONL of {'messages': [...]} or {'prompt': '...'} plus
    optional per-line settings; the arguments are their defaults) generated by the engine that
    ``engine()`` starts, once every line and the output are checked, and written to ``out_path``
    with their completions, seeds and versions. Raw requests are not cached."""
    defaults = {"n": n, "max_new_tokens": max_new_tokens, "top_p": top_p, "stop": list(stop),
                "temperature": temperature if temperature is not None else (0.0 if n == 1 else 0.7),
                "adapter": adapter}

    def parse(rec):
        req = Request.from_dict(rec, defaults)
        check_adapter(req.adapter, "'adapter'")  # an InputError is a ValueError: read_jsonl adds file:line
        return req

    requests = read_jsonl(input_path, parse)  # every line checked before any model is loaded
    if not requests:
        raise InputError(f"{input_path}: no requests")
    check_output(out_path, input_path, local_path(model), *{r.adapter for r in requests if r.adapter})
    backend = engine()
    start = time.perf_counter()
    with backend:
        try:
            outputs = backend.generate(requests, progress=progress)
        except PromptTooLongError as exc:
            raise PromptTooLongError(f"{input_path}: {exc}") from None
        vers = {**versions(), **backend.versions()}
    wall = time.perf_counter() - start

    def records():
        for i, (req, outs) in enumerate(zip(requests, outputs)):
            yield {"id": req.id if req.id is not None else i, "request": req.as_dict(),
                   "completions": [c.as_dict() for c in outs],
                   "prompt_tokens": outs[0].prompt_tokens,
                   "completion_tokens": sum(c.completion_tokens for c in outs),
                   "seed": None if req.greedy else sample_seed(seed, req, i, req.first_sample), "run_seed": seed,
                   "backend": backend.name, "model": model, "model_path": backend.model_path,
                   "versions": vers}

    write_jsonl(out_path, records())
    tokens = sum(c.completion_tokens for outs in outputs for c in outs)
    echo(f"{len(requests)} requests, {tokens} generated tokens in {wall:.1f} s including the engine's start "
         f"with {backend.name} -> {out_path}")

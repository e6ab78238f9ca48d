"""`s2d eval`: run lm-eval programmatically over s2d's task files and write one record per
(task, condition). Reading, checking and locking a record is :mod:`s2d.store`'s; the leaderboard
over records is :mod:`s2d.report`'s."""

from __future__ import annotations

import hashlib
import json
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable

from s2d.backends import model_path_for
from s2d.config import RunConfig
from s2d.envinfo import git_commit, quiet_git_hash, versions
from s2d.errors import ConfigError, InputError, S2DError
from s2d.files import check_output, local_path, portable_path, write_json, write_jsonl
from s2d.lmeval.model import lm_class
from s2d.lmeval.tasks import build_task, check_task_plugin, lm_eval_name, lm_eval_spec, tasks_path
from s2d.methods.base import cap_shares
from s2d.models import ALIASES
from s2d.plugins import get_plugins
from s2d.store import check_record, record_lock, safe_name, weights_fingerprint, weights_identity
from s2d.traces import build_method, check_adapter, resolved_method_options


def condition_name(method: str, adapter: str | None, label: str | None = None,
                   method_options: dict | None = None) -> str:
    """``method[+key=value...][+adapter-NAME]``; long option values (templates) become a short hash."""
    if label:
        return safe_name(label)
    name = method
    for key, value in sorted((method_options or {}).items()):
        text = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)
        if len(text) > 24:
            text = hashlib.sha256(text.encode()).hexdigest()[:8]
        name += f"+{key}={text}"
    return safe_name(name + (f"+adapter-{local_name(adapter)}" if adapter else ""))


def local_name(path: str) -> str:
    """A local model or adapter folder's name in records: the folder's name and the first 8 hex
    digits of its weights' hash, so two runs' `adapter/` (or `merged/`) folders never share a record."""
    return f"{Path(path).resolve().name}-{weights_fingerprint(path)[:8]}"


def record_path(results_dir: str | Path, model_ref: str, task: str, condition: str) -> Path:
    """Where `s2d eval` writes a (model, task, condition) record: an alias keeps its name, a hub id
    becomes org_name, a local folder its name plus its weights' hash."""
    model_dir = safe_name(local_name(model_ref) if model_ref not in ALIASES and Path(model_ref).exists() else model_ref)
    return Path(results_dir) / model_dir / safe_name(task) / f"{safe_name(condition)}.json"


def record_identity(*, model_ref: str, model_path: str | None, method: str, method_options: dict | None,
                    adapter: str | None, limit: int | None, task_options: dict | None, seed: int) -> dict:
    """What decides a record's numbers: the weights the engine loads (their content hash), the
    condition (with the method's defaults, ``method_resolved``) and the documents."""
    return json.loads(json.dumps({
        "model": model_ref, "model_weights": weights_identity(model_path),
        "method": method, "method_options": method_options or {},
        "method_resolved": resolved_method_options(method, method_options), "adapter": weights_identity(adapter),
        "limit": limit, "task_options": task_options or {}, "seed": seed}, sort_keys=True, default=str))


def planned_records(*, results_dir, model_ref, model_path, tasks, method, adapter, limit, label, task_options,
                    method_options, seed) -> list[tuple[Path, dict]]:
    """(record path, identity) for each task, known before any model loads."""
    condition = condition_name(method, adapter, label, method_options)
    if (task_options or {}).get("subset") and not label:  # a subset is a different condition: never overwrite
        condition += f"+subset={task_options['subset']}" + (
            f"-seed{task_options['subset_seed']}" if task_options.get("subset_seed") else "")
    if limit is not None and not label:  # so are the first N documents
        condition += f"+limit={limit}"
    identity = record_identity(model_ref=model_ref, model_path=model_path, method=method,
                               method_options=method_options, adapter=adapter, limit=limit, task_options=task_options,
                               seed=seed)
    return [(record_path(results_dir, model_ref, task, condition), identity) for task in tasks]


def evaluate_settings(cfg: RunConfig, open_engine: Callable[[], Any], *, adapter: str | None = None,
                      log_samples: bool = False, results_dir: str | Path = "results/eval", label: str | None = None,
                      overwrite: bool = False, inputs=(), folders=(), open_cache: Callable[[], Any] = lambda: None,
                      progress: bool = True, warn: Callable[[str], None] | None = None) -> list[Path]:
    """`s2d eval`: the condition the settings name (model, method and options, task options,
    eval_limit, seed) scored on each of their tasks. Everything a user can get wrong is found before
    ``open_engine()`` starts the engine: the adapter, every task plugin, the method's options against
    each task, each planned record's path (never one of the ``inputs`` or inside the ``folders`` the
    run reads; a writable folder), the generation cache ``open_cache()`` opens, and a record of other
    settings in the way (``overwrite`` replaces it). Each record is locked from its check through its
    write, so a second eval of it fails at once. Returns the record paths."""
    names = cfg.tasks()
    check_adapter(adapter)
    for name in names:
        get_plugins().get("tasks", name)
        check_task_plugin(name)
    options, m_options = cfg.eval_task_options(), cfg.eval_method_options()
    for name in names:  # the method's options checked against each task (built once) before any model loads
        task = build_task(name, strict=True, **options)  # subset* is lm-eval's
        build_method(cfg["method"], task, **m_options)
        check_test_docs(task, name)
    loads = model_path_for(cfg["backend"], cfg["model"])
    planned = planned_records(results_dir=results_dir, model_ref=cfg["model"], model_path=loads, tasks=names,
                              method=cfg["method"], adapter=adapter, limit=cfg["eval_limit"], label=label,
                              task_options=options or None, method_options=m_options or None, seed=cfg["seed"])
    for path, _ in planned:  # never written over (or into) what the run reads; a writable folder: found now
        for written in (path, path.with_suffix(".samples.jsonl")) if log_samples else (path,):
            check_output(written, *inputs, local_path(loads), folders=folders,
                         flag=f"--out-dir {results_dir}: the record")
    cache = open_cache()
    with ExitStack() as held:
        for path, identity in planned:
            # Held from the check through the record's write: a second eval of it fails at once.
            held.enter_context(record_lock(path))
            check_record(path, identity, overwrite)  # a record of other settings in the way: found now
        with open_engine() as engine:
            return evaluate(engine, model_ref=cfg["model"], tasks=names, method=cfg["method"], adapter=adapter,
                            limit=cfg["eval_limit"], seed=cfg["seed"], log_samples=log_samples,
                            results_dir=results_dir, label=label, task_options=options or None, progress=progress,
                            method_options=m_options or None, cache=cache, overwrite=overwrite, warn=warn)


def check_test_docs(task, name: str) -> None:
    """The test split builds from the data (files there, sizes possible), checked before any model
    loads: lm-eval builds it only after, where a task's ValueError ended s2d in a traceback."""
    try:
        task.docs("test")
    except S2DError:
        raise
    except (ValueError, OSError, KeyError) as exc:
        raise InputError(f"task {name!r}: its test documents cannot be built: {exc}") from None


def task_manager(metadata: dict | None = None):
    from lm_eval.tasks import TaskManager

    # include_defaults=False: indexing lm-eval's ~14k built-in tasks costs 8-15 s and we need none.
    return TaskManager(include_path=tasks_path(), include_defaults=False, metadata=metadata)


def task_source(path: str, run_root: str | Path | None) -> str | None:
    """Where a record says its task YAML came from: s2d's own task files as ``tasks/<task>/<file>``
    wherever s2d is installed (a wheel, an editable install serving another checkout), others as
    :func:`portable_path` gives them."""
    try:
        return "tasks/" + Path(path).resolve().relative_to(Path(tasks_path()).resolve()).as_posix()
    except ValueError:
        return portable_path(path, run_root)


def evaluate(backend, *, model_ref: str, tasks: list[str], method: str = "system1", adapter: str | None = None,
             limit: int | None = None, seed: int = 0, log_samples: bool = False, results_dir: str = "results/eval",
             label: str | None = None, task_options: dict | None = None, progress: bool = True,
             method_options: dict | None = None, cache=None, overwrite: bool = False,
             warn: Callable[[str], None] | None = None) -> list[Path]:
    """Evaluate one condition (method + adapter) on each task; return the record paths. A record of
    other settings already at a path is an error (``overwrite`` replaces it)."""
    import lm_eval

    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise ConfigError(f"limit must be a positive integer, got {limit!r}")
    plan = planned_records(results_dir=results_dir, model_ref=model_ref, model_path=backend.model_path, tasks=tasks,
                           method=method, adapter=adapter,
                           limit=limit, label=label, task_options=task_options, method_options=method_options,
                           seed=seed)
    for path, identity in plan:
        check_record(path, identity, overwrite)
    tm = task_manager(task_options)
    run_root = Path(results_dir).parent  # a distill run's folder holds eval/: paths inside it are relative
    written = []
    for task, (out, identity) in zip(tasks, plan):
        condition = out.stem
        lm = lm_class()(backend, method=method, adapter=adapter, progress=progress, method_options=method_options,
                   task_options=task_options, cache=cache, seed=seed)
        start = time.perf_counter()
        lm_task = lm_eval_name(task)
        with quiet_git_hash():  # lm-eval's own `git describe` prints "fatal: ..." outside a checkout
            res = lm_eval.simple_evaluate(
                model=lm, tasks=[lm_eval_spec(task)], task_manager=tm, limit=limit, log_samples=log_samples,
                bootstrap_iters=0, random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
                fewshot_random_seed=seed)
        wall = time.perf_counter() - start
        usage = lm.usage
        n = max(len(usage), 1)
        stage_tokens: dict[str, float] = {}
        for u in usage:
            for k, v in u["stages"].items():
                stage_tokens[k] = stage_tokens.get(k, 0) + v / n
        caps = cap_summary(usage)
        record: dict[str, Any] = {
            "s2d": {
                "task": task, "lm_eval_task": lm_task, "condition": condition, "identity": identity,
                "method": method, "method_options": method_options or {},
                "adapter": portable_path(adapter, run_root), "model": model_ref,
                "model_path": portable_path(backend.model_path, run_root), "backend": backend.name, "seed": seed,
                "limit": limit,
                "generation": {"dtype": getattr(backend, "dtype", None), "chat_template": True,
                               "task_options": task_options or {}},
                "n_examples": len(usage),
                "mean_generated_tokens": sum(u["generated_tokens"] for u in usage) / n,
                "mean_generated_tokens_by_stage": stage_tokens,
                "mean_prompt_tokens": sum(u["prompt_tokens"] for u in usage) / n,
                # Responses cut by the token cap: a cut answer measures the cap, not the model.
                **caps,
                "method_stats": {k: v / n_ for k, (v, n_) in lm.method_stats.items() if n_},
                "wall_seconds": wall, "samples_generated": lm.cache_stats["generated"],
                "samples_from_cache": lm.cache_stats["reused"], "versions": {**versions(), **backend.versions()},
                "git_commit": git_commit(Path(__file__).parent), "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
            },
            "lm_eval": {k: res[k] for k in ("results", "configs", "versions", "n-shot", "higher_is_better",
                                            "n-samples") if k in res},
        }
        for cfg in record["lm_eval"].get("configs", {}).values():  # lm-eval records its YAML's absolute path
            for holder in (cfg, cfg.get("metadata") if isinstance(cfg, dict) else None):
                if isinstance(holder, dict) and isinstance(holder.get("config_source"), str):
                    holder["config_source"] = task_source(holder["config_source"], run_root)
        write_json(out, json.loads(json.dumps(record, default=str)))
        if log_samples:
            samples = res.get("samples", {}).get(lm_task, [])
            by_doc = {u["doc_id"]: u for u in usage}
            write_jsonl(out.with_suffix(".samples.jsonl"), (
                json.loads(json.dumps(sample_line(s, by_doc.get(s["doc_id"]), res["results"][lm_task]),
                                      default=str))
                for s in samples))
        written.append(out)
        if warn is not None:
            for stage, share in caps["cap_hit_share_by_stage"].items():
                if share > CAP_WARN_SHARE:
                    warn(f"s2d: warning: {100 * share:.1f}% of the {stage!r} responses of {out} ended at the "
                         f"token cap (finish_reason length); raise method_options.stage_options.{stage}."
                         f"max_new_tokens (or the task's max_gen_toks for System 1)")
    return written


CAP_WARN_SHARE = 0.05  # `s2d eval` warns above this share of a stage's responses cut by the cap


def cap_summary(usage: list[dict]) -> dict:
    """The cap-hit fields of a record: per stage, the share of generated steps that ended at the
    token cap; overall, the share of documents whose scored response had any stage cut."""
    totals: dict[str, list[int]] = {}
    for u in usage:
        for stage, (hit, steps) in (u.get("cap_hits") or {}).items():
            row = totals.setdefault(stage, [0, 0])
            row[0] += hit
            row[1] += steps
    return {"cap_hit_share": sum(bool(u.get("cut")) for u in usage) / max(len(usage), 1),
            "cap_hit_share_by_stage": cap_shares(totals),
            "cap_hits_by_stage": {k: {"hit": hit, "steps": steps} for k, (hit, steps) in totals.items()}}


def sample_line(sample: dict, usage: dict | None, results: dict) -> dict:
    """One --log-samples line: the document, the rendered prompt, every stage's text, the response
    lm-eval scored, the parsed answer, the reference and the document's metrics."""
    # lm-eval names aggregated metrics "exact_match,none" (metric, filter); a sample holds "exact_match".
    names = {key.split(",")[0] for key in results if key != "alias" and not key.split(",")[0].endswith("_stderr")}
    usage = dict(usage or {})
    steps = usage.pop("steps", [])
    return {"doc_id": sample["doc_id"], "doc": sample["doc"], "prompt": steps[0]["prompt"] if steps else None,
            "stages": steps, "response": sample["resps"][0][0], "answer": usage.pop("answer", None),
            "reference": sample.get("target"), "metrics": {m: sample[m] for m in sorted(names) if m in sample},
            "usage": usage}

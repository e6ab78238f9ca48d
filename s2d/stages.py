"""The stage runner: a method's stages as batched engine calls, and the chains they grow.

A method never talks to the engine per example. Its ``run`` calls ``runner.stage(name, chains,
prompts)`` once per stage with the prompts of *every* live chain; the :class:`StageRunner` turns
that into one batched backend call of :class:`Request` objects (split only into large chunks, so a
kill loses at most one chunk), reads and writes the generation cache, and counts tokens. A *chain*
is one sample's path through the stages (see :mod:`s2d.methods.base`). :class:`Request` and
:class:`Completion` are what every backend takes and returns (:mod:`s2d.backends.base`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

from s2d.cache import cache_key
from s2d.store import weights_identity

# Fields a request may carry; anything else in an input record is an error (caught early).
REQUEST_FIELDS = ("messages", "prompt", "max_new_tokens", "temperature", "top_p", "n", "stop", "seed",
                  "adapter", "id", "first_sample", "logprobs")


@dataclass
class Request:
    """One generation request: chat ``messages`` (rendered with the model's chat template) or raw
    ``prompt`` text, plus sampling settings. ``seed=None`` means "derive from the run seed".

    Samples are seeded by index: the request returns samples ``first_sample .. first_sample + n - 1``,
    and sample ``j`` is the same text whether it was asked for alone or among others (the generation
    cache relies on this to add samples later). ``logprobs``: also return each completion's
    log-probability (the sum over its generated tokens, under the model's unprocessed distribution)."""

    messages: list[dict] | None = None
    prompt: str | None = None
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    n: int = 1
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    adapter: str | None = None
    id: str | None = None
    first_sample: int = 0
    logprobs: bool = False

    def __post_init__(self):
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("a request needs exactly one of 'messages' or 'prompt'")
        if self.messages is not None:
            if not isinstance(self.messages, list) or not all(
                    isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                    for m in self.messages) or not self.messages:
                raise ValueError("'messages' must be a non-empty list of {'role': str, 'content': str}")
        elif not isinstance(self.prompt, str):
            raise ValueError("'prompt' must be a string")
        if not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"'n' must be a positive integer, got {self.n!r}")
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"'max_new_tokens' must be a positive integer, got {self.max_new_tokens!r}")
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)) \
                or not math.isfinite(self.temperature) or self.temperature < 0:
            raise ValueError(f"'temperature' must be a finite number >= 0, got {self.temperature!r}")
        if isinstance(self.top_p, bool) or not isinstance(self.top_p, (int, float)) or not 0 < self.top_p <= 1:
            raise ValueError(f"'top_p' must be in (0, 1], got {self.top_p!r}")
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        if not isinstance(self.stop, list) or not all(isinstance(s, str) and s for s in self.stop):
            raise ValueError("'stop' must be a list of non-empty strings")
        if not isinstance(self.first_sample, int) or self.first_sample < 0:
            raise ValueError(f"'first_sample' must be an integer >= 0, got {self.first_sample!r}")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)):
            raise ValueError(f"'seed' must be an integer, got {self.seed!r}")
        if not isinstance(self.logprobs, bool):
            raise ValueError(f"'logprobs' must be true or false, got {self.logprobs!r}")

    @classmethod
    def from_dict(cls, record: dict, defaults: dict | None = None) -> "Request":
        if not isinstance(record, dict):
            raise ValueError(f"expected a JSON object, got {type(record).__name__}")
        unknown = sorted(set(record) - set(REQUEST_FIELDS))
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(REQUEST_FIELDS)}")
        merged = {**(defaults or {}), **record}
        return cls(**merged)

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None and not (k == "logprobs" and v is False)}

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (EOS or a stop string) or "length"
    logprob: float | None = None  # the generated tokens' summed log-probability, when asked for

    def as_dict(self) -> dict:
        out = asdict(self)
        if out["logprob"] is None:
            del out["logprob"]
        return out

    @property
    def mean_logprob(self) -> float | None:
        """The mean log-probability per generated token (a cheap confidence)."""
        if self.logprob is None:
            return None
        return self.logprob / max(1, self.completion_tokens)


@dataclass
class Step:
    stage: str
    prompt: str
    text: str
    tokens: int
    prompt_tokens: int
    finish_reason: str
    logprob: float | None = None  # summed over the generated tokens, when the stage asked for it

    def as_dict(self) -> dict:
        out = dataclasses.asdict(self)
        if out["logprob"] is None:
            del out["logprob"]
        return out

    @property
    def mean_logprob(self) -> float | None:
        return None if self.logprob is None else self.logprob / max(1, self.tokens)


@dataclass
class Chain:
    """One sample's path through a method's stages."""

    doc: int  # index of the input in the batch
    steps: list[Step] = field(default_factory=list)
    state: dict = field(default_factory=dict)  # method-private values carried between stages
    index: int = 0  # which sample of its input this chain is (it picks the sample seeds of later stages)

    def then(self, *steps: Step, index: int | None = None, **state) -> "Chain":
        return Chain(self.doc, self.steps + list(steps), {**self.state, **state},
                     self.index if index is None else index)

    def text(self, stage: str) -> str:
        """The text of the last step of ``stage`` on this chain."""
        return next(s.text for s in reversed(self.steps) if s.stage == stage)

    @property
    def response(self) -> str:
        return self.steps[-1].text if self.steps else ""

    def tokens(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.steps:
            out[s.stage] = out.get(s.stage, 0) + s.tokens
        return out


class StageRunner:
    """Runs one stage for many chains as one batched backend call, through the cache if given.

    ``model_id`` names the weights for cache keys; ``defaults`` fill a stage's unset sampling values
    (the lm-eval model passes the task's ``max_gen_toks`` and ``until`` here for System 1).
    """

    def __init__(self, backend, *, method: str, model_id: str, cache=None, seed: int = 0,
                 adapter: str | None = None, chunk_sequences: int = 2048, progress: bool = True,
                 defaults: dict | None = None, record: Callable[[str, list[str]], None] | None = None,
                 adapter_id: str | None = None):
        self.backend, self.method, self.model_id, self.cache = backend, method, model_id, cache
        self.seed, self.adapter, self.chunk_sequences, self.progress = seed, adapter, chunk_sequences, progress
        # The adapter's name in cache keys (its content hash, see traces.model_identity); the path otherwise.
        self.adapter_id = adapter_id if adapter_id is not None else adapter
        self.defaults = defaults or {}
        self.record = record  # show-prompts: called with (stage, prompts) and nothing is generated
        self.generated = 0  # samples generated by the engine (not from the cache)
        self.reused = 0

    def stage(self, name: str, chains: Sequence[Chain], prompts: Sequence[str | list[dict]], *, n: int = 1,
              max_new_tokens: int | None = None, temperature: float | None = None, top_p: float = 1.0,
              stop: Sequence[str] | None = None, logprobs: bool = False,
              adapter: str | None | type[Ellipsis] = ...) -> list[list[Chain]]:
        """Run ``prompts[i]`` (a user message, or a list of chat messages) ``n`` times for
        ``chains[i]``; return, per chain, its ``n`` continuations. ``logprobs``: each step also
        records its text's log-probability. ``adapter``: this stage's LoRA adapter instead of the
        runner's (None: the base weights), for methods that use two models (``route``).

        Chain ``c`` draws samples ``c.index * n .. c.index * n + n - 1`` of its prompt, so two chains
        that reach the same prompt (two rephrasings that happen to agree) still sample independently,
        while the same prompt at the same sample index (both orders of a judged pair at the branch
        stage) is generated once."""
        if len(chains) != len(prompts):
            raise ValueError(f"stage {name!r}: {len(chains)} chains but {len(prompts)} prompts")
        messages = [[{"role": "user", "content": p}] if isinstance(p, str) else list(p) for p in prompts]
        if self.record is not None:
            self.record(name, [m[-1]["content"] if len(m) == 1 else _show(m) for m in messages])
            outs = [[Completion(f"<{name} output>", 0, 0, "stop")] * n for _ in prompts]
        else:
            sampling = {
                "max_new_tokens": int(max_new_tokens or self.defaults.get("max_new_tokens") or 256),
                "temperature": float(0.0 if temperature is None else temperature),
                "top_p": float(top_p) if temperature else 1.0,
                "stop": [s for s in (stop if stop is not None else self.defaults.get("stop") or []) if s],
            }
            if logprobs:  # only then, so the keys of every other stage stay what they were
                sampling["logprobs"] = True
            outs = self._generate(name, messages, [c.index * n for c in chains], n, sampling,
                                  self.adapter if adapter is ... else adapter)
        result = []
        for chain, msgs, samples in zip(chains, messages, outs):
            shown = msgs[-1]["content"] if len(msgs) == 1 else _show(msgs)
            result.append([chain.then(Step(name, shown, c.text, c.completion_tokens, c.prompt_tokens,
                                           c.finish_reason, c.logprob), index=chain.index * n + k)
                           for k, c in enumerate(samples)])
        return result

    def _generate(self, stage: str, messages: list[list[dict]], firsts: list[int], n: int,
                  sampling: dict, adapter: str | None) -> list[list[Completion]]:
        adapter_id = self.adapter_id if adapter == self.adapter else weights_identity(adapter)
        keys = []
        for msgs, first in zip(messages, firsts):
            base = {"model": self.model_id, "adapter": adapter_id, "method": self.method, "stage": stage,
                    "messages": msgs, "sampling": sampling, "seed": self.seed}
            keys.append([cache_key({**base, "sample": j}) for j in range(first, first + n)])
        stored = self.cache.get_many([k for ks in keys for k in ks]) if self.cache is not None else {}
        found: list[list[dict | None]] = [[stored.get(k) for k in ks] for ks in keys]
        # Unique missing (prompt, first missing sample) requests; duplicates are generated once.
        todo: dict[str, tuple[int, int]] = {}
        for i, row in enumerate(found):
            missing = [j for j, rec in enumerate(row) if rec is None]
            if missing and keys[i][missing[0]] not in todo:
                todo[keys[i][missing[0]]] = (i, missing[0])
        self.reused += sum(rec is not None for row in found for rec in row)
        requests = []
        for key, (i, j0) in todo.items():
            # The prompt's seed comes from its content (sample 0's key), never from its position.
            prompt_seed = int(cache_key({"model": self.model_id, "adapter": adapter_id, "method": self.method,
                                         "stage": stage, "messages": messages[i], "sampling": sampling,
                                         "seed": self.seed, "sample": 0})[:8], 16) ^ self.seed
            requests.append((i, Request(messages=messages[i], n=n - j0, first_sample=firsts[i] + j0,
                                        adapter=adapter, seed=prompt_seed, id=key, **sampling)))
        # One batched call per stage, cut into large chunks so a kill loses at most one chunk.
        for chunk in _chunks(requests, self.chunk_sequences):
            # The bar is named by the stage ("cot/reason"), and counts samples.
            outs = self.backend.generate([r for _, r in chunk],
                                         progress=f"{self.method}/{stage}" if self.progress else False)
            new = []
            for (i, req), samples in zip(chunk, outs):
                for j, c in enumerate(samples, req.first_sample - firsts[i]):
                    rec = {"key": keys[i][j], "stage": stage, "method": self.method, "sample": firsts[i] + j,
                           **c.as_dict()}
                    new.append(rec)
            self.generated += len(new)
            if self.cache is not None:
                self.cache.put(new)
            by_key = {r["key"]: r for r in new}
            for row, ks in zip(found, keys):
                for j, k in enumerate(ks):
                    if row[j] is None and k in by_key:
                        row[j] = by_key[k]
        return [[Completion(r["text"], r["prompt_tokens"], r["completion_tokens"], r["finish_reason"],
                            r.get("logprob")) for r in row] for row in found]  # type: ignore[index]


def _chunks(items: list, max_sequences: int) -> list[list]:
    chunks, current, size = [], [], 0
    for item in items:
        if current and size + item[1].n > max_sequences:
            chunks.append(current)
            current, size = [], 0
        current.append(item)
        size += item[1].n
    if current:
        chunks.append(current)
    return chunks


def _show(messages: list[dict]) -> str:
    return "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in messages)


def start(docs: Sequence[dict]) -> list[Chain]:
    return [Chain(i) for i in range(len(docs))]


def flatten(groups: list[list[Chain]]) -> list[Chain]:
    return [c for g in groups for c in g]

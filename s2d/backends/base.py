"""The one contract every generation backend implements.

A backend takes a whole batch of :class:`Request` objects (one stage of a method over all inputs)
and returns, per request, ``request.n`` :class:`Completion` objects. Batching, padding, KV-cache
reuse and scheduling are the backend's business; callers never loop per example.
"""

from __future__ import annotations

import math

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from s2d.errors import S2DError

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


def sample_seed(run_seed: int, request: Request, index: int, sample: int) -> int:
    """The seed of one sample: the request's own seed, else one derived from the run seed and the
    request's identity, never from its position in a batch (so batching does not change outputs)."""
    base = request.seed
    if base is None:
        key = f"{run_seed}\x00{request.id if request.id is not None else index}"
        base = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little")
    return (base + sample * 1_000_003) % (2**31 - 1)


class Backend:
    """Base class for generation backends.

    Subclasses set ``name`` and a docstring, take ``(model_path, **options)`` and implement
    :meth:`generate`. Import heavy engines inside ``__init__``/``generate``, never at module import.
    """

    name: str = ""

    def __init__(self, model_path: str, *, seed: int = 0, dtype: str = "auto", **options: Any):
        self.model_path = model_path
        self.seed = seed
        self.dtype = dtype
        self.options = options

    @classmethod
    def available(cls) -> tuple[bool, str]:
        """Whether the engine can run here, and why not (shown by ``s2d list backends``)."""
        return True, ""

    def generate(self, requests: Sequence[Request], *, progress: bool | str = True) -> list[list[Completion]]:
        """Per request, its ``n`` completions. ``progress``: show a bar (a str names it: the stage)."""
        raise NotImplementedError

    def versions(self) -> dict:
        return {}

    def close(self) -> None:
        """Free the engine (GPU memory, worker processes)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU does bf16 matmuls natively (AVX-512 BF16 or AMX). Without them torch emulates
    bf16 and is ~300x slower than fp32: measured 0.28 against 103 GFLOP/s on an AVX2-only EPYC."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_dtype() -> str:
    """The ``auto`` dtype on a CPU: bf16 only where the CPU computes it natively."""
    return "bfloat16" if cpu_has_fast_bf16() else "float32"


class PromptTooLongError(S2DError, ValueError):
    """A prompt (plus its token budget) that does not fit the model's context."""


def check_context(prompts: Sequence[list[int]], requests: Sequence[Request], context: int | None) -> None:
    """Refuse, before generating anything, a prompt longer than the context (a model fed past its
    context writes garbage, or the engine fails mid-run); names the request and its id."""
    if not context:
        return
    for i, (ids, r) in enumerate(zip(prompts, requests), 1):
        if len(ids) + 1 > context:
            raise PromptTooLongError(
                f"request {i}{f' (id {r.id!r})' if r.id and len(str(r.id)) < 40 else ''}: the prompt has {len(ids)} "
                f"tokens, more than the model's context of {context}; shorten it")


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut ``text`` before the earliest stop string; return (text, whether a stop string was hit)."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)

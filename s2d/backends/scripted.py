"""The `scripted` backend: no model, answers from a script. For dry runs and fast logic tests.

Without a script it echoes the last user message (or the raw prompt). With ``script=FILE`` (a JSON
object mapping a substring of the prompt to a reply, or to a list of replies cycled over samples),
the first key found in the prompt decides the reply; ``"*"`` is the fallback. A reply may be
``{"text": ..., "logprob": ...}`` to script the log-probability a request with ``logprobs`` gets
(else -0.1 per word).
"""

from __future__ import annotations

import json
from typing import Any, Callable, Sequence

from s2d.backends.base import Backend, Completion, Request, cut_at_stop
from s2d.hookspecs import hookimpl


class ScriptedBackend(Backend):
    """No model: echoes the prompt, or replies from a JSON script (dry runs, tests)."""

    name = "scripted"

    def __init__(self, model_path: str = "scripted", *, script: str | dict | Callable | None = None, **options: Any):
        super().__init__(model_path, **options)
        if isinstance(script, str):
            with open(script) as f:
                script = json.load(f)
        self.script = script
        self.calls: list[list[Request]] = []  # one entry per generate() call: tests check batching

    def _reply(self, request: Request, text: str, sample: int) -> str:
        if callable(self.script):
            return self.script(request, sample)
        if isinstance(self.script, dict):
            for key in [k for k in self.script if k != "*"] + ["*"]:
                if key in self.script and (key == "*" or key in text):
                    value = self.script[key]
                    return value[sample % len(value)] if isinstance(value, list) else value
        return text

    def generate(self, requests: Sequence[Request], *, progress: bool = True) -> list[list[Completion]]:
        self.calls.append(list(requests))
        results = []
        for r in requests:
            text = r.prompt if r.prompt is not None else next(
                (m["content"] for m in reversed(r.messages) if m["role"] == "user"), "")
            n_prompt = len(text.split())
            outs = []
            for s in range(r.n):
                # Sample k of a request is sample first_sample + k of its prompt (see Request).
                reply = self._reply(r, text, r.first_sample + s)
                logprob = reply.get("logprob") if isinstance(reply, dict) else None
                reply, hit = cut_at_stop(reply["text"] if isinstance(reply, dict) else reply, r.stop)
                words = reply.split()
                finish = "stop" if hit or len(words) <= r.max_new_tokens else "length"
                reply = reply if len(words) <= r.max_new_tokens else " ".join(words[: r.max_new_tokens])
                tokens = min(len(words), r.max_new_tokens)
                if r.logprobs and logprob is None:
                    logprob = -0.1 * tokens
                outs.append(Completion(reply, n_prompt, tokens, finish,
                                       float(logprob) if r.logprobs else None))
            results.append(outs)
        return results


@hookimpl
def register_backends(register):
    register(ScriptedBackend)

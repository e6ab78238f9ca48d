"""SIGTERM (`kill`, `timeout`, a scheduler ending a job) stops s2d with its vLLM engine. vLLM's
EngineCore does not watch its parent: before s2d turned SIGTERM into a normal exit, the engine and
its worker outlived a killed run and kept its memory and cores, slowing the resumed run."""

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.vllm,
              pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm does not import here")]


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` now (children, their children, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:80]
    except OSError:
        return "?"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads processes from /proc")
def test_sigterm_stops_s2d_and_its_vllm_engine(model_path, tiny_data, tmp_path):
    cmd = [sys.executable, "-m", "s2d.cli", "eval", "--model", "smollm2-135m", "--backend", "vllm",
           "--task", "last_letter", "--method", "cot", "--set", "task_options.size=20",
           "--set", "method_options.n=32", "--no-cache", "--no-progress", "--out-dir", str(tmp_path / "out")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own group, so the cleanup below cannot hit pytest
    engine: list[int] = []
    below: list[int] = []
    try:
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None and not engine:
            engine = [p for p in descendants(proc.pid) if "VLLM" in name(p) or "EngineCore" in name(p)]
            time.sleep(0.5)
        assert engine, "the engine never started: " + (proc.stderr.read() if proc.poll() is not None else "")
        time.sleep(15)  # generating now
        assert proc.poll() is None, "the eval ended before it could be stopped"
        below = descendants(proc.pid)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=180)
        deadline = time.time() + 60
        while time.time() < deadline and any(running(p) for p in below):
            time.sleep(0.5)
        left = [f"{p} {name(p)}" for p in below if running(p)]
        assert not left, f"processes outlived s2d after SIGTERM: {left}"
        assert proc.returncode != 0  # stopped, not finished
        assert not list((tmp_path / "out").rglob("*.json")), "a stopped eval wrote a record"
    finally:
        for pid in [proc.pid, *descendants(proc.pid), *engine, *below]:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        proc.wait()

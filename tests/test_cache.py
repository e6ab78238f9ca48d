"""The generation cache: content keys, torn lines, and a real kill mid-stage followed by a resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from s2d.backends.scripted import ScriptedBackend
from s2d.cache import GenerationCache
from s2d.files import InputError
from s2d.plugins import get_plugins
from s2d.traces import build_method, generate_traces


def test_torn_last_line_is_discarded_and_appends_continue(tmp_path):
    c = GenerationCache(tmp_path)
    c.put([{"key": "a", "text": "x"}, {"key": "b", "text": "y"}])
    with open(c.path, "ab") as f:
        f.write(b'{"key": "c", "te')  # a kill in the middle of a write
    c2 = GenerationCache(tmp_path)
    assert len(c2) == 2 and "c" not in c2 and c2.discarded_torn_line
    c2.put([{"key": "c", "text": "z"}])
    assert [json.loads(x)["key"] for x in c.path.read_text().splitlines()] == ["a", "b", "c"]
    assert GenerationCache(tmp_path).get("c")["text"] == "z"


def test_corrupt_middle_line_is_an_error_naming_the_line(tmp_path):
    c = GenerationCache(tmp_path)
    c.put([{"key": "a", "text": "x"}])
    with open(c.path, "a") as f:
        f.write("garbage\n" + json.dumps({"key": "b"}) + "\n")
    with pytest.raises(InputError, match=r"generations.jsonl:2"):
        len(GenerationCache(tmp_path))


def test_reruns_reuse_samples_and_batch_layout_is_not_in_the_key(tiny_data, tmp_path):
    t = get_plugins().get("tasks", "coin_flip").obj(train_size=6)
    docs = t.docs("train")
    cache = GenerationCache(tmp_path)
    script = lambda r, s: f"{r.messages[-1]['content'][:40]} #{r.first_sample + s}"  # noqa: E731
    first, stats = generate_traces(ScriptedBackend(script=script), t, build_method("rar2", t, n=2), docs[:3],
                                   split="train", cache=cache)
    assert stats == {"generated": 12, "reused": 0}
    # More inputs and more samples: only the new ones are generated; old samples are not redone.
    backend = ScriptedBackend(script=script)
    again, stats = generate_traces(backend, t, build_method("rar2", t, n=3), docs, split="train",
                                   cache=GenerationCache(tmp_path), chunk_sequences=2)
    assert stats["reused"] == 3 * 2 * 2  # rephrase and respond of the first 3 inputs' samples 0-1
    assert stats["generated"] == 3 * 3 * 2 + 3 * 1 * 2
    rephrase = [r for call in backend.calls for r in call if "Rewrite this" in r.messages[-1]["content"]]
    assert sorted((r.first_sample, r.n) for r in rephrase) == [(0, 3)] * 3 + [(2, 1)] * 3  # only sample 2 added
    respond = [r for call in backend.calls for r in call if "Rewrite this" not in r.messages[-1]["content"]]
    assert sorted(r.first_sample for r in respond) == [0] * 3 + [1] * 3 + [2] * 6  # each chain its own sample
    assert [s["response"] for s in again[0]["samples"][:2]] == [s["response"] for s in first[0]["samples"]]


@pytest.mark.slow
def test_kill_mid_stage_then_resume_matches_an_uninterrupted_run(tiny_data, tmp_path, model_path):
    """The real model: kill `s2d generate` during a stage, rerun, compare with a clean run."""
    args = ["generate", "--task", "last_letter", "--task-option", "size=4", "--split", "train", "--method", "rar2",
            "--n", "2", "-o", "max_new_tokens=12", "--backend", "hf", "--chunk-sequences", "2", "--no-progress"]

    def s2d(*extra, cache, wait=True):
        cmd = [sys.executable, "-m", "s2d.cli", *args, "--cache", str(cache), *extra]
        env = {**os.environ, "S2D_LOAD_PLUGINS": ""}
        if wait:
            return subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)

    s2d("--out", str(tmp_path / "clean.jsonl"), cache=tmp_path / "clean-cache")
    store = tmp_path / "killed-cache" / "generations.jsonl"
    proc = s2d("--out", str(tmp_path / "resumed.jsonl"), cache=tmp_path / "killed-cache", wait=False)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if store.exists() and 2 <= len(store.read_bytes().splitlines()) < 12:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed: " + proc.stderr.read()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = len([x for x in store.read_text().splitlines() if x.endswith("}")])
    total = len((tmp_path / "clean-cache" / "generations.jsonl").read_text().splitlines())
    assert total == 16 and 0 < before < total  # 4 inputs x 2 samples x 2 stages
    done = s2d("--out", str(tmp_path / "resumed.jsonl"), cache=tmp_path / "killed-cache")
    assert f"{total - before} generated, {before} from the cache" in done.stderr
    clean = Path(tmp_path / "clean.jsonl").read_text()
    assert Path(tmp_path / "resumed.jsonl").read_text() == clean
    assert len(store.read_text().splitlines()) == total  # nothing generated twice


def test_weights_trained_again_into_the_same_folder_get_new_samples(tmp_path, monkeypatch):
    """The cache names a model folder (and an adapter) by its files' content, not its path."""
    from s2d.traces import make_runner, model_identity
    from s2d.methods.base import Chain

    monkeypatch.setenv("S2D_CACHE", str(tmp_path / "s2d"))
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"weights v1")
    cache = GenerationCache(tmp_path / "cache")

    def sample(adapter=None):
        runner = make_runner(ScriptedBackend(str(folder), script={"*": "out"}), "cot", cache=cache, adapter=adapter)
        runner.stage("reason", [Chain(0)], ["Q?"], n=2)
        return runner.generated, runner.reused, model_identity(runner.backend)

    first = sample()
    assert first[:2] == (2, 0) and "sha256:" in first[2] and str(folder) not in first[2]
    assert sample()[:2] == (0, 2)  # same weights: from the cache
    time.sleep(0.01)
    (folder / "model.safetensors").write_bytes(b"weights v2")  # trained again, same path
    again = sample()
    assert again[:2] == (2, 0) and again[2] != first[2]
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"lora v1")
    assert sample(str(adapter))[:2] == (2, 0)
    assert sample(str(adapter))[:2] == (0, 2)
    (adapter / "adapter_model.safetensors").write_bytes(b"lora v2")
    assert sample(str(adapter))[:2] == (2, 0)

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


def rows(cache_dir) -> int:
    """Samples stored in a cache folder (read by another connection, as a third process would)."""
    import sqlite3

    path = Path(cache_dir) / "generations.sqlite"
    if not path.exists():
        return 0
    with sqlite3.connect(path, timeout=60) as db:
        # The writer creates the file before its table: a reader between the two sees no table yet.
        if not db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='samples'").fetchone():
            return 0
        return db.execute("SELECT COUNT(*) FROM samples").fetchone()[0]


def test_put_get_and_a_sample_stored_once(tmp_path):
    c = GenerationCache(tmp_path)
    c.put([{"key": "a", "text": "x"}, {"key": "b", "text": "y"}])
    c.put([{"key": "a", "text": "other"}])  # two runs made the same sample: the first one stays
    again = GenerationCache(tmp_path)
    assert len(again) == 2 and "a" in again and "c" not in again
    assert again.get("a")["text"] == "x" and again.get("c") is None
    assert again.get_many(["b", "a", "zz", "a"]) == {"a": {"key": "a", "text": "x"}, "b": {"key": "b", "text": "y"}}


def test_a_legacy_jsonl_cache_is_imported_once_torn_tail_dropped(tmp_path):
    legacy = tmp_path / "generations.jsonl"
    legacy.write_text(json.dumps({"key": "a", "text": "x"}) + "\n" + json.dumps({"key": "b", "text": "y"}) + "\n"
                      + '{"key": "c", "te')  # a kill in the middle of a write
    c = GenerationCache(tmp_path)
    assert len(c) == 2 and c.get("b")["text"] == "y" and "c" not in c and c.imported == 2
    assert not legacy.exists() and (tmp_path / "generations.jsonl.imported").is_file()  # kept, never deleted
    assert GenerationCache(tmp_path).imported == 0 and len(GenerationCache(tmp_path)) == 2
    legacy.write_text(json.dumps({"key": "d", "text": "w"}) + "\n")  # an older s2d appended again
    assert len(GenerationCache(tmp_path)) == 3 and (tmp_path / "generations.jsonl.imported.1").is_file()
    assert (tmp_path / "generations.jsonl.imported").is_file()


def test_a_corrupt_legacy_line_is_an_error_naming_the_line(tmp_path):
    (tmp_path / "generations.jsonl").write_text(json.dumps({"key": "a"}) + "\ngarbage\n" + json.dumps({"key": "b"}) + "\n")
    with pytest.raises(InputError, match=r"generations.jsonl:2"):
        len(GenerationCache(tmp_path))
    assert (tmp_path / "generations.jsonl").is_file()  # nothing imported, nothing moved


def test_a_file_that_is_not_a_cache_is_a_clear_error(tmp_path):
    (tmp_path / "generations.sqlite").write_text("this is not sqlite" * 100)
    with pytest.raises(InputError, match="not a usable generation cache"):
        len(GenerationCache(tmp_path))


WRITER = r"""
import sys
from s2d.cache import GenerationCache
c = GenerationCache(sys.argv[1])
tag = sys.argv[2]
for i in range(0, 1000, 10):
    c.put([{"key": f"{tag}-{j}", "text": tag * 4000} for j in range(i, i + 10)] + [{"key": f"shared-{i}", "text": tag}])
"""


def test_two_processes_writing_at_once_lose_nothing(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), tag]) for tag in ("p", "q")]
    while any(p.poll() is None for p in procs):
        len(GenerationCache(tmp_path))  # a third process opening the cache while both write
        time.sleep(0.002)
    assert all(p.returncode == 0 for p in procs)
    third = GenerationCache(tmp_path)
    assert len(third) == 2000 + 100  # every sample present once, the shared ones once
    assert all(f"{t}-{i}" in third for t in "pq" for i in (0, 499, 999))


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
    args = ["generate", "--task", "last_letter", "--set", "task_options.size=4", "--split", "train", "--method", "rar2",
            "--n", "2", "--set", "method_options.max_new_tokens=12", "--backend", "hf", "--chunk-sequences", "2", "--no-progress"]

    def s2d(*extra, cache, wait=True):
        cmd = [sys.executable, "-m", "s2d.cli", *args, "--cache", str(cache), *extra]
        env = {**os.environ, "S2D_LOAD_PLUGINS": ""}
        if wait:
            return subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)

    s2d("--out", str(tmp_path / "clean.jsonl"), cache=tmp_path / "clean-cache")
    store = tmp_path / "killed-cache"
    proc = s2d("--out", str(tmp_path / "resumed.jsonl"), cache=tmp_path / "killed-cache", wait=False)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if 2 <= rows(store) < 12:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed: " + proc.stderr.read()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = rows(store)
    total = rows(tmp_path / "clean-cache")
    # One row per (stage, prompt, sample index): 4 inputs x 2 samples x 2 stages, less the respond
    # prompts two inputs share at one index (12-token rephrasings can be the same preamble); the
    # cache keys a request by what decides its output, so those are generated once.
    keys = {(step["stage"], step["prompt"], k) for line in Path(tmp_path / "clean.jsonl").read_text().splitlines()
            for k, sample in enumerate(json.loads(line)["samples"]) for step in sample["stages"]}
    assert total == len(keys) and 8 < total <= 16 and 0 < before < total
    done = s2d("--out", str(tmp_path / "resumed.jsonl"), cache=tmp_path / "killed-cache")
    assert f"{total - before} generated, {before} from the cache" in done.stderr
    clean = Path(tmp_path / "clean.jsonl").read_text()
    assert Path(tmp_path / "resumed.jsonl").read_text() == clean
    assert rows(store) == total  # nothing generated twice


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


def test_a_failed_legacy_import_is_not_skipped_on_the_next_call(tmp_path):
    (tmp_path / "generations.jsonl").write_text(json.dumps({"key": "a"}) + "\ngarbage\n" + json.dumps({"key": "b"}) + "\n")
    c = GenerationCache(tmp_path)
    for _ in range(2):
        with pytest.raises(InputError, match="generations.jsonl:2"):
            c.get("a")

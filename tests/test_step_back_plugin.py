"""A real third-party method plugin: pip-install plugins/s2d-step-back and use it from the CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PLUGIN = Path(__file__).parent.parent / "plugins" / "s2d-step-back"


@pytest.fixture(scope="module")
def step_back_installed(tmp_path_factory):
    # A non-editable install from a copy, as a user would: the build leaves nothing in the repo.
    import shutil

    src = tmp_path_factory.mktemp("plugin") / "s2d-step-back"
    shutil.copytree(PLUGIN, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    from conftest import pip_installed

    with pip_installed(tmp_path_factory.mktemp("site"), src):
        yield


def s2d(*args):
    res = subprocess.run([sys.executable, "-m", "s2d.cli", *args], capture_output=True, text=True,
                         env={**os.environ, "S2D_LOAD_PLUGINS": "step_back"})
    assert res.returncode == 0, res.stdout + res.stderr
    return res


def test_listed_with_its_distribution(step_back_installed, tiny_data):
    out = s2d("list", "methods").stdout
    assert any(line.split()[:2] == ["step-back", "step_back"] for line in out.splitlines())
    plugins = json.loads(s2d("plugins", "--json").stdout)
    row = next(p for p in plugins if p["name"] == "step_back")
    assert row["version"] == "0.1.0" and row["source"] == "entrypoint"
    shown = s2d("show-prompts", "--method", "step-back", "--task", "coin_flip", "--split", "train").stdout
    assert "stage abstract" in shown and "stage answer" in shown


@pytest.mark.slow
def test_eval_and_generate_with_the_plugin(step_back_installed, tiny_data, tmp_path, model_path):
    res = s2d("eval", "--method", "step-back", "--task", "gsm8k", "--limit", "5", "--backend", "hf",
              "--set", "method_options.max_new_tokens=16", "--out-dir", str(tmp_path / "eval"), "--no-progress")
    [record] = (tmp_path / "eval").rglob("step-back+max_new_tokens=16+limit=5.json")
    rec = json.loads(record.read_text())
    assert rec["s2d"]["method"] == "step-back" and rec["s2d"]["n_examples"] == 5
    assert set(rec["s2d"]["mean_generated_tokens_by_stage"]) == {"abstract", "answer"}
    assert "exact_match,none" in rec["lm_eval"]["results"]["s2d_gsm8k"], res.stdout
    out = tmp_path / "traces.jsonl"
    s2d("generate", "--method", "step-back", "--task", "gsm8k", "--split", "train", "--limit", "3", "--n", "2",
        "--backend", "hf", "--set", "method_options.max_new_tokens=16", "--cache", str(tmp_path / "cache"), "--out", str(out),
        "--no-progress")
    traces = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(traces) == 3 and all(len(t["samples"]) == 2 for t in traces)
    assert [s["stage"] for s in traces[0]["samples"][0]["stages"]] == ["abstract", "answer"]

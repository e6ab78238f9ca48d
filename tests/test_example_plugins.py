"""The example plugins of every kind that ship in plugins/, each pip-installed as a user would and
run through the real commands: a task scored by `s2d eval` and by stock `lm_eval`, a curator."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PLUGINS = Path(__file__).parent.parent / "plugins"


from conftest import pip_installed  # noqa: E402  (tests/ is on sys.path)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A non-editable install of both example plugins from copies (nothing built in the repo)."""
    sources = []
    for name in ["s2d-reverse-word", "s2d-unanimous"]:
        src = tmp_path_factory.mktemp("plugin") / name
        shutil.copytree(PLUGINS / name, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
        sources.append(src)
    with pip_installed(tmp_path_factory.mktemp("site"), *sources):
        yield


def run(*args, ok=True):
    res = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                         env={**os.environ, "S2D_LOAD_PLUGINS": "reverse_word,unanimous"})
    if ok:
        assert res.returncode == 0, res.stdout + res.stderr
    return res


def s2d(*args, ok=True):
    return run("-m", "s2d.cli", *args, ok=ok)


def test_the_task_plugin_is_listed_and_scored_by_s2d_eval(installed, tiny_data, tmp_path):
    assert any(line.split()[:2] == ["reverse_word", "reverse_word"] for line in s2d("list", "tasks").stdout.splitlines())
    s2d("eval", "--task", "reverse_word", "--backend", "scripted", "--limit", "3",
        "--out-dir", str(tmp_path / "eval"), "--log-samples", "--no-progress")
    [record] = (tmp_path / "eval").rglob("system1+limit=3.json")
    rec = json.loads(record.read_text())
    assert rec["s2d"]["lm_eval_task"] == "s2d_reverse_word" and rec["s2d"]["n_examples"] == 3
    assert "exact_match,none" in rec["lm_eval"]["results"]["s2d_reverse_word"]
    lines = [json.loads(x) for x in record.with_suffix(".samples.jsonl").read_text().splitlines()]
    assert lines[0]["prompt"].startswith("Spell the word") and set(lines[0]["metrics"]) == {"exact_match"}


def test_the_curator_plugin_curates(installed, tmp_path):
    traces = tmp_path / "t.jsonl"
    traces.write_text("".join(json.dumps({"id": str(i), "task": "gsm8k", "prompt": [{"role": "user", "content": "q"}],
                                          "samples": [{"response": f"Final answer: {a}", "answer": a} for a in answers]})
                              + "\n" for i, answers in enumerate([["1", "1", "1"], ["1", "2", "1"]])))
    out = json.loads(s2d("curate", "--curator", "unanimous", "--traces", str(traces), "--out",
                         str(tmp_path / "sft.jsonl")).stdout)
    assert out["kept_inputs"] == 1 and out["dropped_by_reason"] == {"disagree": 1}


@pytest.mark.slow
def test_the_task_plugin_under_s2d_eval_and_stock_lm_eval_on_the_real_model(installed, tiny_data, tmp_path,
                                                                             model_path):
    s2d("eval", "--task", "reverse_word", "--backend", "hf", "--limit", "3", "--out-dir", str(tmp_path / "eval"),
        "--no-progress")
    [record] = (tmp_path / "eval").rglob("system1+limit=3.json")
    ours = json.loads(record.read_text())["lm_eval"]["results"]["s2d_reverse_word"]["exact_match,none"]
    folders = s2d("lm-eval-tasks", str(tmp_path / "tasks")).stdout.split()
    assert str(tmp_path / "tasks" / "s2d_reverse_word") in folders
    assert str(tmp_path / "tasks" / "s2d_last_letter") in folders  # every registered task, built-ins too
    stock = run("-m", "lm_eval", "--include_path", str(tmp_path / "tasks"), "--tasks", "s2d_reverse_word",
                "--model", "hf", "--model_args", f"pretrained={model_path},dtype=float32", "--apply_chat_template",
                "--limit", "3", "--output_path", str(tmp_path / "stock"))
    assert "s2d_reverse_word" in stock.stdout
    [result] = (tmp_path / "stock").rglob("results_*.json")
    theirs = json.loads(result.read_text())["results"]["s2d_reverse_word"]["exact_match,none"]
    assert 0.0 <= theirs <= 1.0 and 0.0 <= ours <= 1.0


@pytest.mark.parametrize("kind", ["method", "curator", "task", "trainer", "backend"])
def test_new_plugin_writes_a_package_that_installs_and_passes_its_test(kind, tmp_path):
    res = s2d("new-plugin", f"my-{kind}", "--kind", kind, "--out-dir", str(tmp_path))
    folder = Path(res.stdout.strip())
    assert folder == tmp_path / f"s2d-my-{kind}" and (folder / "pyproject.toml").is_file()
    with pip_installed(tmp_path / "site", folder):
        test = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(folder / "tests")],
                              capture_output=True, text=True, cwd=tmp_path,
                              env={**os.environ, "S2D_LOAD_PLUGINS": f"s2d_my_{kind}"})
        assert test.returncode == 0, test.stdout + test.stderr
        assert "1 passed" in test.stdout
        listed = subprocess.run([sys.executable, "-m", "s2d.cli", "list", f"{kind}s"], capture_output=True, text=True,
                                env={**os.environ, "S2D_LOAD_PLUGINS": f"s2d_my_{kind}"}).stdout
        assert any(line.split()[:2] == [f"my-{kind}", f"s2d_my_{kind}"] for line in listed.splitlines()), listed
    again = s2d("new-plugin", f"my-{kind}", "--kind", kind, "--out-dir", str(tmp_path), ok=False)
    assert again.returncode != 0 and "exists" in again.stderr

"""One configuration model: every command layers defaults < --config < --scale < flags < --set the
same way, one option spelling, expected errors as one line."""

import functools
import json
import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from s2d.cli import cli

ROOT = Path(__file__).resolve().parent.parent


def invoke(*args):
    return CliRunner().invoke(cli, list(args))


def write_config(tmp_path, **settings) -> str:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(settings))
    return str(path)


def test_resolve_layers_in_order(tmp_path):
    from s2d.config import resolve

    path = write_config(tmp_path, task="last_letter", method="cot", n=4, method_options={"shots": 4, "shot_seed": 1},
                        scale={"big": {"n": 16}})
    cfg = resolve("distill", path, scale="big", flags={"n": None, "seed": 3},
                  set_items=["method_options.shots=2", "train_limit=10"])
    assert (cfg["n"], cfg["seed"], cfg["train_limit"]) == (16, 3, 10)
    assert cfg["method_options"] == {"shots": 2, "shot_seed": 1}  # --set merges one level deep
    assert resolve("distill", path, flags={"n": 2}, set_items=["n=5"])["n"] == 5  # --set is the last layer
    # A new method drops the old one's options, whichever layer names it.
    assert resolve("distill", path, flags={"method": "system1"})["method_options"] == {}
    assert resolve("distill", path, set_items=["method=rar2"])["method_options"] == {}
    # An explicit null in --set clears a setting; a flag not given leaves it.
    path2 = write_config(tmp_path, task="last_letter", train_limit=50)
    assert resolve("distill", path2, flags={"train_limit": None})["train_limit"] == 50
    assert resolve("distill", path2, set_items=["train_limit=null"])["train_limit"] is None


def test_command_defaults_differ_only_where_said(tmp_path):
    from s2d.config import resolve

    assert (resolve("generate", require_task=False)["method"], resolve("generate", require_task=False)["n"]) == \
        ("system1", 1)
    assert resolve("distill", flags={"task": "last_letter"})["method"] == "rar2"
    # A config's settings win over any command's defaults.
    path = write_config(tmp_path, task="last_letter", method="cot", n=4)
    for command in ("generate", "eval", "distill"):
        cfg = resolve(command, path)
        assert (cfg["method"], cfg["n"], cfg["task"]) == ("cot", 4, "last_letter")


@pytest.mark.parametrize("items, message", [
    (["bogus=1"], "unknown setting 'bogus'"),
    (["n"], "not KEY=VALUE"),
    (["n.x=1"], "'n' is not a mapping setting"),
    (["method_options=3"], "is a mapping; set its keys"),
    (["n=0"], "setting 'n' must be a positive integer"),
    (["seed=x"], "setting 'seed' must be an integer"),
])
def test_bad_set_items_are_one_line_errors_in_every_command(items, message, tmp_path):
    for command in (["distill", "--task", "last_letter", "--runs-dir", str(tmp_path)],
                    ["generate", "--task", "last_letter", "--out", str(tmp_path / "o.jsonl")],
                    ["eval", "--task", "last_letter", "--out-dir", str(tmp_path)],
                    ["show-prompts", "--task", "last_letter"], ["config", "show", "--task", "last_letter"]):
        res = invoke(*command, "--backend", "scripted", *sum((["--set", i] for i in items), []))  \
            if command[0] in ("generate", "eval", "distill") else invoke(*command, *sum((["--set", i] for i in items), []))
        assert res.exit_code != 0 and message in res.output, (command, res.output)
        assert "Traceback" not in res.output


def test_config_show_prints_what_generate_and_eval_use(tmp_path):
    path = write_config(tmp_path, task="last_letter", method="cot", n=4, method_options={"shots": 4},
                        eval_method_options={"shot_seed": 2}, eval_limit=7)
    res = invoke("config", "show", "--for", "eval", "--config", path, "--set", "seed=5", "--json")
    assert res.exit_code == 0, res.output
    shown = json.loads(res.output)
    assert (shown["method"], shown["seed"], shown["eval_limit"]) == ("cot", 5, 7)
    res = invoke("config", "show", "--for", "generate", "--set", "task=coin_flip")
    assert res.exit_code == 0 and yaml.safe_load(res.output)["n"] == 1


def test_generate_honours_the_config_task_method_n_and_seed(tiny_data, tmp_path):
    path = write_config(tmp_path, task="last_letter", method="cot", n=3, seed=7, temperature=0.5,
                        method_options={"max_new_tokens": 8}, task_options={"size": 4})
    out = tmp_path / "traces.jsonl"
    res = invoke("generate", "--config", path, "--backend", "scripted", "--limit", "2", "--out", str(out),
                 "--no-progress")
    assert res.exit_code == 0, res.output
    traces = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(traces) == 2 and {t["method"] for t in traces} == {"cot"} and all(len(t["samples"]) == 3 for t in traces)
    # --set wins over the config: one sample.
    res = invoke("generate", "--config", path, "--backend", "scripted", "--limit", "1", "--set", "n=1",
                 "--out", str(tmp_path / "one.jsonl"), "--no-progress")
    assert res.exit_code == 0, res.output
    assert len(json.loads((tmp_path / "one.jsonl").read_text().splitlines()[0])["samples"]) == 1


def test_eval_with_a_run_config_scores_its_system2_row(tiny_data, tmp_path):
    """`s2d eval --config RUN` asks what the run's System 2 row asks: method, method options with
    eval_method_options, task options with eval_task_options, eval_limit, seed."""
    path = write_config(tmp_path, task="last_letter", method="cot", n=8, seed=3, eval_limit=2,
                        method_options={"shots": 1}, eval_method_options={"max_new_tokens": 8},
                        task_options={"size": 4})
    res = invoke("eval", "--config", path, "--backend", "scripted", "--out-dir", str(tmp_path / "eval"),
                 "--no-progress")
    assert res.exit_code == 0, res.output
    (record,) = (tmp_path / "eval").rglob("*.json")
    s2d = json.loads(record.read_text())["s2d"]
    assert s2d["method"] == "cot" and s2d["n_examples"] == 2 and s2d["seed"] == 3
    assert s2d["method_options"] == {"shots": 1, "max_new_tokens": 8}


def test_eval_uses_the_generation_cache_by_default(tiny_data, tmp_path):
    args = ["eval", "--task", "last_letter", "--set", "task_options.size=4", "--backend", "scripted", "--limit", "2",
            "--no-progress"]
    assert invoke(*args, "--out-dir", str(tmp_path / "a")).exit_code == 0
    res = invoke(*args, "--out-dir", str(tmp_path / "b"))
    assert res.exit_code == 0, res.output
    (record,) = (tmp_path / "b").rglob("*.json")
    s2d = json.loads(record.read_text())["s2d"]
    assert s2d["samples_from_cache"] == 2 and s2d["samples_generated"] == 0
    res = invoke(*args, "--out-dir", str(tmp_path / "c"), "--no-cache")
    (record,) = (tmp_path / "c").rglob("*.json")
    assert json.loads(record.read_text())["s2d"]["samples_generated"] == 2


def test_eval_builds_each_task_once(tiny_data, tmp_path, monkeypatch):
    from s2d.tasks.last_letter import LastLetter

    built = []
    original = LastLetter.__init__

    @functools.wraps(original)  # the task's options are read from its signature
    def counting(self, *args, **kwargs):
        built.append(kwargs)
        original(self, *args, **kwargs)

    monkeypatch.setattr(LastLetter, "__init__", counting)
    res = invoke("eval", "--task", "last_letter", "--set", "task_options.size=4", "--backend", "scripted",
                 "--limit", "2", "--out-dir", str(tmp_path), "--no-progress", "--no-cache")
    assert res.exit_code == 0, res.output
    assert len(built) == 1, built


OLD_SPELLINGS = [("generate", "-o"), ("generate", "--task-option"), ("eval", "--tasks"), ("eval", "--results-dir"),
                 ("distill", "-O"), ("distill", "--curator-option"), ("train", "--trainer-option"),
                 ("curate", "--curator-option"), ("train", "--out"), ("distill", "--out"), ("leaderboard", "--out")]


@pytest.mark.parametrize("command, flag", OLD_SPELLINGS)
def test_old_spellings_are_gone(command, flag):
    res = invoke(command, flag, "x=1")
    assert res.exit_code == 2 and "No such option" in res.output


def test_docs_use_only_the_one_spelling():
    """README, docs/ and the plugins' READMEs show --set, --task and --out-dir, never the old flags."""
    old = re.compile(r"s2d [a-z-]+[^`\n|]*?(\s-o\s|\s-O\s|--task-option|--curator-option|--method-option|"
                     r"--trainer-option|--results-dir|\s--tasks\b)")
    files = [ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("plugins/*/README.md"),
             ROOT / "experiments" / "configs" / "README.md"]
    found = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in files for line in p.read_text().splitlines()
             if "lm_eval " not in line for m in old.finditer(line)]  # stock lm_eval keeps its --tasks
    assert not found, found


def test_an_expected_error_from_deep_inside_is_one_line(tiny_data, tmp_path):
    """An S2DError raised below the command (here a task option of the wrong type) is one line, exit 1."""
    res = invoke("eval", "--task", "last_letter", "--set", "task_options.size=four", "--backend", "scripted",
                 "--out-dir", str(tmp_path))
    assert res.exit_code == 1 and "size" in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1, res.output


def test_names_cannot_be_null_and_sampling_has_one_spelling(tmp_path):
    from s2d.config import ConfigError, resolve

    for item in ("model=null", "method=null", "curator=null", "trainer=null"):
        with pytest.raises(ConfigError, match="must be a name"):
            resolve("distill", flags={"task": "last_letter"}, set_items=[item])
    assert resolve("distill", flags={"task": "last_letter"}, set_items=["backend=null"])["backend"] is None
    cfg = resolve("distill", flags={"task": "last_letter"}, set_items=["method_options.n=4"])
    with pytest.raises(ConfigError, match="set n itself"):
        cfg.generation_options()
    assert cfg.eval_method_options()["n"] == 4  # at test time, n samples and their majority (GSM8k's k)


def test_an_adapter_flag_that_is_no_adapter_is_refused_before_any_model_loads(tiny_data, tmp_path):
    (tmp_path / "not_adapter").mkdir()
    for command in (["eval", "--task", "last_letter", "--out-dir", str(tmp_path / "e")],
                    ["generate", "--task", "last_letter", "--out", str(tmp_path / "o.jsonl")]):
        res = invoke(*command, "--backend", "scripted", "--adapter", str(tmp_path / "not_adapter"))
        assert res.exit_code == 1 and "not a PEFT adapter folder" in res.output, res.output

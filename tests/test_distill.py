"""`s2d distill`: the run folder, resuming finished stages, refusing to mix runs, safe names."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from s2d.cli import cli


ANSWERING = str(Path(__file__).parent / "fixtures" / "answering_backend")  # scripted, but it states answers


def distill(*args):
    return CliRunner().invoke(cli, ["--plugins-dir", ANSWERING, "distill", "--task", "last_letter", "--set",
                                    "task_options.size=4", "--backend", "answering", "--n", "3", "--set", "trainer_options.epochs=1", "--set", "trainer_options.batch_size=4", "--no-progress",
                                    *args])


@pytest.mark.slow
def test_distill_runs_every_stage_then_reuses_them(tiny_data, tmp_path, model_path):
    res = distill("--runs-dir", str(tmp_path), "--name", "../../escape", "--cache", str(tmp_path / "cache"))
    assert res.exit_code == 0, res.output
    run = tmp_path / "escape"  # the name cannot climb out of the runs folder
    for f in ("config.json", "traces.jsonl", "sft.jsonl", "sft.summary.json", "adapter/adapter_model.safetensors",
              "adapter/s2d_training.json", "summary.json", "merged/model.safetensors"):
        assert (run / f).is_file(), f
    records = sorted(p.stem for p in (run / "eval").rglob("*.json"))
    assert records == ["distilled", "system1", "system2-rar2"]
    summary = json.loads((run / "summary.json").read_text())
    assert [r["condition"] for r in summary["rows"]] == ["system1", "system2-rar2", "distilled"]
    assert "system2-rar2" in res.output and "distilled" in res.output
    traces = [json.loads(x) for x in (run / "traces.jsonl").read_text().splitlines()]
    assert len(traces) == 4 and all(len(t["samples"]) == 3 for t in traces)

    again = distill("--runs-dir", str(tmp_path), "--name", "../../escape", "--cache", str(tmp_path / "cache"),
                    "--export", str(tmp_path / "results"))
    assert again.exit_code == 0
    assert all(f"[{s}] reusing" in again.output for s in ("generate", "curate", "train", "eval"))
    exported = sorted(str(p.relative_to(tmp_path / "results")) for p in (tmp_path / "results").rglob("*.json*"))
    assert "sft.jsonl" in exported and "s2d_training.json" in exported and "summary.json" in exported
    assert sum(p.endswith("distilled.json") for p in exported) == 1
    assert not (tmp_path / "results" / "adapter").exists() and not (tmp_path / "results" / "traces.jsonl").exists()

    other = distill("--runs-dir", str(tmp_path), "--name", "escape", "--method", "cot")
    assert other.exit_code != 0 and "other settings (method)" in other.output


def _wait_then_kill(proc, ready, what):
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before it could be killed during {what}: " + proc.stderr.read()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_distill_killed_in_generation_and_in_training_resumes_to_the_same_data(tiny_data, tmp_path, model_path):
    """The real model on the hf engine: SIGKILL `s2d distill` while it generates, rerun, SIGKILL it
    while it trains, rerun; the curated set equals an uninterrupted run's and training resumed."""
    args = [sys.executable, "-m", "s2d.cli", "distill", "--task", "last_letter", "--set", "task_options.size=4",
            "--method", "rar2", "--curator", "none", "--n", "2", "--set", "method_options.max_new_tokens=12", "--backend", "hf",
            "--eval-limit", "2", "--set", "trainer_options.epochs=3", "--set", "trainer_options.batch_size=1", "--set", "trainer_options.save_steps=1", "--no-progress"]
    env = {**os.environ, "S2D_LOAD_PLUGINS": ""}

    def start(folder):
        return subprocess.Popen([*args, "--out-dir", str(folder), "--cache", str(folder / "cache")], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    clean = tmp_path / "clean"
    assert start(clean).wait() == 0
    run = tmp_path / "killed"
    from test_cache import rows

    # rar2 is two stages of 8 generations; kill once the first stage is stored, before the traces.
    _wait_then_kill(start(run), lambda: rows(run / "cache") >= 8, "generation")
    assert not (run / "traces.jsonl").exists()
    stored = rows(run / "cache")
    assert 8 <= stored < 16
    ckpts = run / "adapter" / "checkpoints"
    _wait_then_kill(start(run), lambda: any((p / "trainer_state.json").is_file() for p in ckpts.glob("checkpoint-*")),
                    "training")
    assert (run / "sft.jsonl").is_file() and not (run / "adapter" / "adapter_model.safetensors").exists()
    generated = json.loads((run / "traces.jsonl").read_text().splitlines()[0])
    assert generated["samples"]
    proc = start(run)
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    assert "[generate] reusing" in err and "[curate] reusing" in err and "[train] running" in err
    assert (run / "sft.jsonl").read_text() == (clean / "sft.jsonl").read_text()
    assert (run / "traces.jsonl").read_text() == (clean / "traces.jsonl").read_text()
    # The resumed run stored what the uninterrupted one did, and no generation twice.
    import sqlite3

    # The distilled row's samples are keyed by the trained weights' hash, and a resumed training
    # need not end bit-identical, so compare the method's generations and count the evaluations.
    query = "SELECT key, json_extract(record, '$.method') FROM samples"
    with sqlite3.connect(run / "cache" / "generations.sqlite") as db, \
            sqlite3.connect(clean / "cache" / "generations.sqlite") as ref:
        ours, theirs = db.execute(query).fetchall(), ref.execute(query).fetchall()
    assert {k for k, m in ours if m == "rar2"} == {k for k, m in theirs if m == "rar2"}
    assert sorted(m for _, m in ours) == sorted(m for _, m in theirs)
    training = json.loads((run / "adapter" / "s2d_training.json").read_text())
    assert "checkpoint-" in (training["resumed_from"] or "")
    assert "distilled" in out and Path(run / "summary.json").is_file()


def test_nothing_curated_still_scores_system1_and_system2_and_says_why(tiny_data, tmp_path):
    from s2d.distill import DistillRun, RunConfig, export_run, format_summary

    # Every sample a different answer: the majority curator keeps nothing (all ties).
    script = {"*": ["Final answer: ab", "Final answer: cd", "Final answer: ef"]}
    cfg = RunConfig.build({"task": "last_letter", "task_options": {"size": 4}, "backend": "scripted", "n": 3,
                           "method": "cot"})
    run = DistillRun(cfg, tmp_path / "run", progress=False, echo=lambda m: None, cache=False,
                     backend_options={"script": script})
    summary = run.run()
    assert [r["condition"] for r in summary["rows"]] == ["system1", "system2-cot"]
    assert "kept no input of 4" in summary["error"] and "'tie': 4" in summary["error"]
    assert not (tmp_path / "run" / "adapter").exists()
    assert "distilled: none" in format_summary(summary)
    assert (export_run(tmp_path / "run", tmp_path / "out") / "summary.txt").is_file()
    # A rerun reuses everything and says the same.
    again = DistillRun(cfg, tmp_path / "run", progress=False, echo=lambda m: None, cache=False,
                       backend_options={"script": script}).run()
    assert again["rows"] == summary["rows"] and again["error"] == summary["error"]


def test_distill_checks_names_before_any_work(tmp_path):
    res = CliRunner().invoke(cli, ["distill", "--task", "last_letter", "--curator", "nope", "--runs-dir", str(tmp_path)])
    assert res.exit_code != 0 and "nope" in res.output and not any(tmp_path.iterdir())
    res = CliRunner().invoke(cli, ["distill", "--runs-dir", str(tmp_path)])
    assert res.exit_code != 0 and "needs a task" in res.output


def test_configs_are_valid_at_both_scales():
    from pathlib import Path

    import yaml

    from s2d.config import RunConfig, apply_scale
    from s2d.plugins import get_plugins
    from s2d.reproduce import PAPER, config_names

    configs = Path(__file__).parent.parent / "experiments" / "configs"
    extra = {"default", "last_letter_resample", "coin_flip_cot", "qwen_last_letter_cot", "qwen_coin_flip_cot",
             "qwen_coin_flip_cot_greedy"}
    # the default run; the search's best; its coin flip; the 1.5B model's best probe methods on two-name
    # last letter and on coin flip (sampled majority, and the coin flip recipe's one greedy chain)
    assert config_names() | extra == {p.stem for p in configs.glob("*.yaml")}
    runs = [(name, overrides) for spec in PAPER.values() for name, overrides, _ in spec["runs"]]
    for name, overrides in runs + [(e, {}) for e in sorted(extra)]:
        raw = yaml.safe_load((configs / f"{name}.yaml").read_text())
        for scale in ("small", "paper"):
            cfg = RunConfig.build(apply_scale(raw, scale), overrides)
            for kind, key in (("tasks", "task"), ("methods", "method"), ("curators", "curator"), ("trainers", "trainer")):
                get_plugins().get(kind, cfg[key])
            method = get_plugins().get("methods", cfg["method"]).obj
            base = {"wording", "stage_options", "max_new_tokens", "templates"}  # every method's (Method.__init__)
            assert set(cfg["method_options"]) <= set(method.options()) | base, (name, overrides, scale)
            from s2d.lmeval.tasks import _task_class
            from s2d.traces import build_method

            # few-shot CoT and fewshot read the train split when built: no data here
            if not cfg["method_options"].get("shots") and cfg["method"] != "fewshot":
                build_method(cfg["method"], _task_class(cfg["task"])(**cfg["task_options"]), **cfg.generation_options())
                build_method(cfg["method"], _task_class(cfg["task"])(**cfg["task_options"]), **cfg.eval_method_options())
            from s2d.lmeval.tasks import _task_class, check_task_options

            check_task_options(_task_class(cfg["task"]), {**cfg["task_options"], **cfg["eval_task_options"]})
            get_plugins().get("curators", cfg["curator"]).obj(None, **cfg["curator_options"])
            get_plugins().get("trainers", cfg["trainer"]).obj(**cfg["trainer_options"])
        assert RunConfig.build(apply_scale(raw, "paper"))["n"] >= RunConfig.build(apply_scale(raw, "small"))["n"]


def test_overriding_the_method_drops_the_configs_method_options():
    from s2d.config import RunConfig

    config = {"task": "coin_flip", "method": "rar2", "method_options": {"respond_n": 1}}
    assert RunConfig.build(config, {"method": "system1"})["method_options"] == {}
    assert RunConfig.build(config, {"method": "rar2"})["method_options"] == {"respond_n": 1}
    assert RunConfig.build(config, {"curator": "none"})["method_options"] == {"respond_n": 1}
    assert RunConfig.build(config, {"method": "cot", "method_options": {"shots": 2}})["method_options"] == {"shots": 2}


def test_reproduce_renders_ours_beside_the_paper():
    from s2d.config import RunConfig
    from s2d.reproduce import render_table

    cfg = RunConfig.build({"task": "last_letter", "method": "rar2"})
    rows = [{"condition": c, "metrics": {"exact_match": v}, "mean_tokens": t}
            for c, v, t in (("system1", 0.0, 9.5), ("system2-rar2", 0.02, 180.0), ("distilled", 0.01, 8.0))]
    both = {"system1": "system1", "system2": "system2-rar2", "distilled": "distilled"}
    baseline = [{"condition": "distilled", "metrics": {"exact_match": 0.03}, "mean_tokens": 2.0}]
    rows[1]["cap_hit_share"] = 0.02
    curation = {"kept_inputs": 40, "inputs": 200, "target_accuracy": 0.9}
    text = render_table("table1", "small", [(cfg, {"rows": rows, "run": "runs/x", "curation": curation}, both),
                                            (cfg, {"rows": baseline, "run": "runs/y"}, {"distill_system1": "distilled"})])
    assert "| Distill 2-Step RaR | 1.0% | 8.0 | 40/200 | 90.0% | - | 98.0% | 25.5 | - | - | - | - | - | 75.69% | 50.3 |" \
        in text
    assert "| System 2: 2-Step RaR | 2.0% | 180.0 | - | - | 2.0% | 44.5% | 41.5 |" in text
    assert "| Distill System 1 | 3.0% | 2.0 | - | - | - | 69.5% | 24.4 |" in text
    assert "| Distill 2-Step RaR, no self-consistency filter | - | - | - | - | - | 87.5% | - |" in text


def test_reproduce_renders_table3s_categories_beside_the_papers_table6():
    """Table 3's plan carries the paper's Table 6: agreement per MT-bench category, ours (paper)."""
    from s2d.config import RunConfig
    from s2d.reproduce import PAPER, render_table

    assert PAPER["table3"]["breakdown"]["columns"][:2] == ["writing", "reasoning"]
    cfg = RunConfig.build({"task": "mt_bench_judge", "method": "bsm"})
    metrics = {"agreement": 0.5, "inconsistent": 0.3, "agreement_writing": 0.25, "agreement_stem": float("nan")}
    rows = [{"condition": "system1", "metrics": metrics, "mean_tokens": 4.0}]
    text = render_table("table3", "small", [(cfg, {"rows": rows, "run": "runs/x"}, {"system1": "system1"})])
    assert "| System 1 | 25.0% (48.98%) | - (54.89%) |" in text and text.rstrip().endswith("| - (79.59%) |")
    assert "| Distill BSM (the paper's row: Distill System 2, label only) | - (70.77%) |" in text
    from pathlib import Path

    from s2d.errors import ConfigError
    from s2d.reproduce import _breakdown

    bad = {"title": "t", "metric": "agreement", "columns": ["writing", "math"], "rows": {"system1": [1.0]}}
    with pytest.raises(ConfigError, match=r"t3.yaml: paper.breakdown: row 'system1' has 1 cells for 2 columns"):
        _breakdown(bad, PAPER["table3"]["rows"], Path("t3.yaml"))
    with pytest.raises(ConfigError, match=r"rows a mapping"):
        _breakdown({**bad, "rows": [[1.0, 2.0]]}, PAPER["table3"]["rows"], Path("t3.yaml"))


@pytest.mark.slow
def test_second_round_samples_come_from_the_first_rounds_merged_weights(tiny_data, tmp_path, model_path):
    """Two rounds on the real model (hf engine): round 2's teacher is round 1's merged student, the
    cache keys name its weights, and its samples differ from round 1's."""
    from s2d.store import weights_fingerprint

    res = distill("--runs-dir", str(tmp_path), "--name", "r", "--cache", str(tmp_path / "cache"), "--backend", "hf",
                  "--method", "cot", "--set", "method_options.max_new_tokens=16", "--curator", "none", "--eval-limit", "2",
                  "--set", "trainer_options.epochs=2", "--set", "trainer_options.learning_rate=1e-3", "--set", "rounds=2")
    assert res.exit_code == 0, res.output
    run = tmp_path / "r"
    first = [json.loads(x) for x in (run / "traces.jsonl").read_text().splitlines()]
    second = [json.loads(x) for x in (run / "round2" / "traces.jsonl").read_text().splitlines()]
    assert {t["model"].split(":")[1:3] == ["sha256", weights_fingerprint(model_path)] for t in first} == {True}
    assert {t["model"].split(":")[1:3] == ["sha256", weights_fingerprint(run / "merged")] for t in second} == {True}
    assert [s["response"] for t in first for s in t["samples"]] != [s["response"] for t in second for s in t["samples"]]
    summary = json.loads((run / "summary.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [1, 2] and len(summary["rounds"][1]["rows"]) == 3


def test_run_folder_knows_what_is_done_and_refuses_other_settings(tmp_path):
    """RunFolder alone (no engine): paths per round, a stage done only once its last file exists,
    and a folder of other settings refused."""
    from s2d.config import RunConfig
    from s2d.distill import claim
    from s2d.errors import ConfigError
    from s2d.store import RunFolder

    cfg = RunConfig.build({"task": "last_letter", "n": 2})
    folder = RunFolder(tmp_path / "run", cfg.settings)
    claim(folder)
    assert (tmp_path / "run" / "config.json").is_file() and (tmp_path / "run" / "config.yaml").is_file()
    assert folder.round_dir(2) == tmp_path / "run" / "round2"
    assert not folder.generated() and not folder.curation_done()
    folder.traces().write_text("")
    folder.curated().write_text("")
    assert folder.generated() and not folder.curation_done()  # the summary is the stage's last file
    folder.curation_summary().write_text('{"records": 0}')
    assert folder.curation_done() and folder.curation() == {"records": 0}
    claim(RunFolder(tmp_path / "run", cfg.settings))  # the same settings: fine
    with pytest.raises(ConfigError, match=r"other settings \(n\)"):
        claim(RunFolder(tmp_path / "run", RunConfig.build({"task": "last_letter", "n": 3}).settings))
    # Another method resolves other options too; the message names the setting the user changed.
    with pytest.raises(ConfigError, match=r"other settings \(method\);"):
        claim(RunFolder(tmp_path / "run", RunConfig.build({"task": "last_letter", "n": 2, "method": "cot"}).settings))


def test_a_run_folder_made_under_other_method_defaults_is_refused(tmp_path, monkeypatch):
    """The same config after a method's default changed (a raised token cap) is another run:
    config.json holds the resolved options, each stage's decoding among them, it was made with."""
    from s2d.config import RunConfig
    from s2d.distill import claim
    from s2d.errors import ConfigError
    from s2d.methods.rar import RaR2
    from s2d.store import RunFolder

    cfg = RunConfig.build({"task": "last_letter", "method": "rar2"})
    claim(RunFolder(tmp_path / "run", cfg.settings))
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["method_resolved"]["decoding"]["respond"]["max_new_tokens"] == RaR2.max_new_tokens["respond"]
    assert saved["settings"]["method_options"] == {}
    monkeypatch.setattr(RaR2, "max_new_tokens", {**RaR2.max_new_tokens, "respond": 7})
    with pytest.raises(ConfigError, match=r"other settings \(the method's defaults"):
        claim(RunFolder(tmp_path / "run", cfg.settings))
    claim(RunFolder(tmp_path / "other", cfg.settings))  # a new folder records the new defaults
    assert json.loads((tmp_path / "other" / "config.json").read_text())["method_resolved"]["decoding"]["respond"][
        "max_new_tokens"] == 7


def test_distills_curation_judges_triviaqa_targets_with_the_tasks_scorer(tiny_data, tmp_path):
    """The run's curated summary has a target accuracy on TriviaQA (alias lists, no single string
    reference): the task's own credit for each kept target on its train document."""
    from s2d.distill import DistillRun, RunConfig
    from s2d.plugins import get_plugins

    cfg = RunConfig.build({"task": "triviaqa_bias", "task_options": {"test_questions": 2}, "backend": "scripted",
                           "method": "system1", "curator": "none", "curator_options": {"target": "response"}, "n": 1})
    task = get_plugins().get("tasks", "triviaqa_bias").obj(test_questions=2)
    docs = task.docs("train")
    reply = f"It is {docs[0]['answers'][0]}."  # right on one train question's four prompts, wrong elsewhere
    run = DistillRun(cfg, tmp_path / "run", progress=False, echo=lambda m: None, cache=False,
                     backend_options={"script": {"*": reply}})
    rnd = run.round(1)
    rnd.generate()
    rnd.curate()
    summary = json.loads((tmp_path / "run" / "sft.summary.json").read_text())
    want = sum(task.correct(d, reply) for d in docs) / len(docs)
    assert summary["kept_inputs"] == len(docs) == 16 and 0 < want < 1
    assert summary["target_accuracy"] == want

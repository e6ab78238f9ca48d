"""`s2d distill`: the run folder, resuming finished stages, refusing to mix runs, safe names."""

import json

import pytest
from click.testing import CliRunner

from s2d.cli import cli


def distill(*args):
    return CliRunner().invoke(cli, ["distill", "--task", "last_letter", "--task-option", "size=4", "--backend",
                                    "scripted", "--n", "3", "-O", "epochs=1", "-O", "batch_size=4", "--no-progress",
                                    *args])


@pytest.mark.slow
def test_distill_runs_every_stage_then_reuses_them(tiny_data, tmp_path, model_path):
    res = distill("--runs-dir", str(tmp_path), "--name", "../../escape")
    assert res.exit_code == 0, res.output
    run = tmp_path / "escape"  # the name cannot climb out of the runs folder
    for f in ("config.json", "traces.jsonl", "sft.jsonl", "sft.summary.json", "adapter/adapter_model.safetensors",
              "adapter/s2d_training.json", "summary.json"):
        assert (run / f).is_file(), f
    records = sorted(p.stem for p in (run / "eval").rglob("*.json"))
    assert records == ["distilled", "system1", "system2-rar2"]
    summary = json.loads((run / "summary.json").read_text())
    assert [r["condition"] for r in summary["rows"]] == ["system1", "system2-rar2", "distilled"]
    assert "system2-rar2" in res.output and "distilled" in res.output
    traces = [json.loads(x) for x in (run / "traces.jsonl").read_text().splitlines()]
    assert len(traces) == 4 and all(len(t["samples"]) == 3 for t in traces)

    again = distill("--runs-dir", str(tmp_path), "--name", "../../escape")
    assert again.exit_code == 0
    assert all(f"[{s}] reusing" in again.output for s in ("generate", "curate", "train", "eval"))

    other = distill("--runs-dir", str(tmp_path), "--name", "escape", "--method", "cot")
    assert other.exit_code != 0 and "other settings (method)" in other.output


def test_distill_checks_names_before_any_work(tmp_path):
    res = CliRunner().invoke(cli, ["distill", "--task", "last_letter", "--curator", "nope", "--runs-dir", str(tmp_path)])
    assert res.exit_code != 0 and "nope" in res.output and not any(tmp_path.iterdir())
    res = CliRunner().invoke(cli, ["distill", "--runs-dir", str(tmp_path)])
    assert res.exit_code != 0 and "needs a task" in res.output


def test_paper_configs_are_valid_at_both_scales():
    from pathlib import Path

    import yaml

    from s2d.distill import RunConfig, apply_scale
    from s2d.plugins import get_plugins
    from s2d.reproduce import PAPER

    configs = Path(__file__).parent.parent / "results" / "configs"
    names = {n for spec in PAPER.values() for n in spec["configs"]}
    assert names == {p.stem for p in configs.glob("*.yaml")}
    for name in names:
        raw = yaml.safe_load((configs / f"{name}.yaml").read_text())
        for scale in ("small", "paper"):
            cfg = RunConfig.build(apply_scale(raw, scale))
            for kind, key in (("tasks", "task"), ("methods", "method"), ("curators", "curator"), ("trainers", "trainer")):
                get_plugins().get(kind, cfg[key])
        assert RunConfig.build(apply_scale(raw, "paper"))["n"] >= RunConfig.build(apply_scale(raw, "small"))["n"]


def test_reproduce_renders_ours_beside_the_paper():
    from s2d.distill import RunConfig
    from s2d.reproduce import render_table

    cfg = RunConfig.build({"task": "last_letter", "method": "rar2"})
    rows = [{"condition": c, "metrics": {"exact_match": v}, "mean_tokens": t}
            for c, v, t in (("system1", 0.0, 9.5), ("system2-rar2", 0.02, 180.0), ("distilled", 0.01, 8.0))]
    text = render_table("table1", "small", {"x": (cfg, {"rows": rows, "run": "runs/x", "curation": {}})})
    assert "| Distill 2-Step RaR | 1.0% | 8.0 | 98.0% | 25.5 | - | - | 75.69% | 50.3 |" in text

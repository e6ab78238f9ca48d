"""Iterated distillation (`rounds`), run settings, and the per-round folders, on the scripted
backend with a trainer plugin that writes a model folder without any model (fast)."""

import json
from pathlib import Path

import pytest
from conftest import MEMORIZE, table1_configs

def config(**extra):
    from s2d.config import RunConfig

    return RunConfig.build({"task": "last_letter", "task_options": {"size": 4}, "backend": "scripted", "n": 3,
                            "method": "cot", "trainer": "memorize", "rounds": 2, **extra})


def script(request, sample):
    return "Final answer: " + ("ab" if sample < 2 else "cd")


def run(cfg, folder, cache, log=None):
    from s2d.distill import DistillRun

    return DistillRun(cfg, folder, progress=False, echo=(log.append if log is not None else lambda m: None),
                      cache=cache, backend_options={"script": script}).run()


def test_two_rounds_write_both_and_rerun_reuses_every_stage(memorize, tmp_path):
    from s2d.distill import export_run, format_summary

    folder, cache = tmp_path / "run", tmp_path / "cache"
    summary = run(config(), folder, cache)
    for f in ("traces.jsonl", "sft.jsonl", "adapter/s2d_training.json",
              "round2/traces.jsonl", "round2/sft.jsonl", "round2/adapter/s2d_training.json"):
        assert (folder / f).is_file(), f
    assert [r["round"] for r in summary["rounds"]] == [1, 2]
    assert all([x["condition"] for x in r["rows"]] == ["system1", "system2-cot", "distilled"]
               for r in summary["rounds"])
    gen = [s for s in summary["stages"] if s["stage"].endswith("generate")]
    # Round 2's teacher is round 1's student; its weights are new to the cache, so it generated.
    assert gen[1]["info"]["teacher"] == "adapter" and gen[1]["info"]["generated"] == 4 * 3  # relative to the run
    # Every round's student trains from the base model, on its own round's data.
    r2 = json.loads((folder / "round2" / "adapter" / "s2d_training.json").read_text())
    assert r2["base"].endswith("smollm2-135m") and r2["data"].endswith("round2/sft.jsonl")
    text = format_summary(summary)
    assert text.splitlines()[0].startswith("round") and "round 2 curated:" in text
    assert summary["run"] == "run"  # relative: no machine's absolute path in results

    log = []
    again = run(config(), folder, cache, log)
    assert again["rounds"] == summary["rounds"]
    assert sum("reusing" in m for m in log) == 8 and not any("running" in m for m in log)

    out = export_run(folder, tmp_path / "export")
    assert (out / "round2" / "sft.jsonl").is_file() and (out / "round2" / "s2d_training.json").is_file()
    assert not (out / "round2" / "traces.jsonl").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    from s2d.errors import ConfigError

    with pytest.raises(ConfigError, match="not an earlier s2d export"):
        export_run(folder, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    assert export_run(folder, out) == out  # an earlier export is replaced


def test_a_run_killed_in_round_two_resumes_there(memorize, tmp_path, monkeypatch):
    folder, cache = tmp_path / "run", tmp_path / "cache"
    monkeypatch.setenv("S2D_TEST_FAIL_ON", "round2")
    with pytest.raises(RuntimeError, match="killed in training"):
        run(config(), folder, cache)
    assert (folder / "round2" / "sft.jsonl").is_file() and not (folder / "round2" / "adapter").exists()
    monkeypatch.delenv("S2D_TEST_FAIL_ON")
    log = []
    summary = run(config(), folder, cache, log)
    assert [m for m in log if "running" in m] == ["[round 2: train] running", "[round 2: eval] running"]
    assert len(summary["rounds"][1]["rows"]) == 3


def test_accumulate_trains_on_the_union_of_rounds(memorize, tmp_path):
    folder = tmp_path / "run"
    run(config(accumulate=True), folder, tmp_path / "cache")
    union = [json.loads(x) for x in (folder / "round2" / "sft.union.jsonl").read_text().splitlines()]
    ids = [r["s2d"]["id"] for r in union]
    assert len(ids) == len(set(ids)) == 4  # one record per input, the newest round's
    assert json.loads((folder / "round2" / "adapter" / "s2d_training.json").read_text())["data"].endswith(
        "sft.union.jsonl")


def test_run_temperature_reaches_the_system2_samples_only(memorize, tmp_path):
    from s2d.distill import DistillRun

    cfg = config(rounds=1, temperature=0.3, top_p=0.9)
    r = DistillRun(cfg, tmp_path / "run", progress=False, echo=lambda m: None, cache=False,
                   backend_options={"script": script})
    r.round(1).generate()
    engine = r._engine
    assert {(q.temperature, q.top_p) for call in engine.calls for q in call} == {(0.3, 0.9)}
    r.close_engine()


@pytest.mark.parametrize("bad, message", [
    ({"temperature": float("nan")}, "'temperature' must be a number >= 0"),
    ({"temperature": "hot"}, "'temperature' must be a number >= 0"),
    ({"top_p": 0}, r"'top_p' must be a number in \(0, 1\]"),
    ({"rounds": 0}, "'rounds' must be a positive integer"),
    ({"n": "eight"}, "'n' must be a positive integer"),
    ({"accumulate": "yes"}, "'accumulate' must be true or false"),
])
def test_bad_run_settings_are_rejected_when_the_config_is_built(bad, message):
    from s2d.config import RunConfig
    from s2d.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        RunConfig.build({"task": "last_letter", **bad})


def test_distill_set_flag_is_a_config_line(tmp_path):
    from click.testing import CliRunner

    from s2d.cli import cli
    from s2d.config import layer_over, parse_set

    assert parse_set(["rounds=2", "method_options.shots=4", "temperature=0"]) == {
        "rounds": 2, "method_options": {"shots": 4}, "temperature": 0}
    assert layer_over({"method_options": {"shots": 2, "shot_seed": 1}}, {"method_options": {"shots": 4}}) == {
        "method_options": {"shots": 4, "shot_seed": 1}}
    for bad, why in (["nope=1"], "unknown setting 'nope'"), (["n.x=1"], "'n' is not a mapping"), (["rounds"], "KEY=VALUE"):
        res = CliRunner().invoke(cli, ["distill", "--task", "last_letter", "--runs-dir", str(tmp_path), "--set", *bad])
        assert res.exit_code != 0 and why in res.output and not any(tmp_path.iterdir()), res.output
    res = CliRunner().invoke(cli, ["distill", "--task", "last_letter", "--runs-dir", str(tmp_path), "--set", "rounds=0"])
    assert res.exit_code != 0 and "'rounds' must be a positive integer" in res.output and not any(tmp_path.iterdir())


def test_the_default_cli_path_prints_stage_lines_progress_and_the_summary_only(tmp_path, tiny_data):
    """`s2d distill` as a newcomer runs it (a real subprocess; scripted engine, a model-free trainer):
    nothing but s2d's stage lines, progress bars and the summary."""
    import os
    import re
    import subprocess
    import sys

    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "memorize.py").write_text(MEMORIZE)
    # The scripted engine echoes its prompt, which is no answer: this one states an answer.
    import shutil

    shutil.copy(Path(__file__).parent / "fixtures" / "answering_backend" / "answering.py", tmp_path / "plugins")
    res = subprocess.run([sys.executable, "-m", "s2d.cli", "--plugins-dir", str(tmp_path / "plugins"), "distill",
                          "--task", "last_letter", "--set", "task_options.size=4", "--backend", "answering", "--n", "3",
                          "--method", "cot", "--trainer", "memorize", "--runs-dir", str(tmp_path / "runs"),
                          "--cache", str(tmp_path / "cache")],
                         capture_output=True, text=True, env={**os.environ, "S2D_LOAD_PLUGINS": ""})
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0].startswith("condition") and "distilled" in res.stdout
    allowed = re.compile(r"^(\[(generate|curate|train|eval)\] (running|reusing .*)|-> .*|"
                         r"(cot/reason|system1/answer|curator:\w+/\w+)?:?\s*\d+%\|.*|\s*)$")
    lines = [x for line in res.stderr.splitlines() for x in line.split("\r")]
    noise = [x for x in lines if not allowed.match(x)]
    assert not noise, noise


def test_config_show_prints_what_a_run_uses(tmp_path):
    import yaml
    from click.testing import CliRunner

    from s2d.cli import cli

    cfg = tmp_path / "run.yaml"
    cfg.write_text("task: last_letter\nmethod: cot\nmethod_options: {shots: 4}\nn: 4\nscale:\n  paper: {n: 8}\n")
    res = CliRunner().invoke(cli, ["config", "show", "--config", str(cfg), "--scale", "paper", "--set", "rounds=2",
                                   "--set", "method_options.shots_resample=true"])
    assert res.exit_code == 0, res.output
    shown = yaml.safe_load(res.output)
    assert shown["n"] == 8 and shown["rounds"] == 2 and shown["method_options"] == {"shots": 4, "shots_resample": True}
    assert shown["curator"] == "majority" and "scale" not in shown
    bad = CliRunner().invoke(cli, ["config", "show", "--config", str(cfg), "--set", "rounds=0"])
    assert bad.exit_code != 0 and "'rounds' must be a positive integer" in bad.output


def test_reproduce_a_table_for_another_model_keeps_the_defaults_files(memorize, tmp_path):
    """run_table end to end on the scripted engine and the model-free trainer: every run exported,
    the table written; another --model gets its own folders and table file."""
    from s2d.reproduce import run_table

    configs = table1_configs(tmp_path, trainer="memorize")
    kw = dict(configs_dir=configs, runs_dir=tmp_path / "runs", out_dir=tmp_path / "out", progress=False,
              echo=lambda m: None, backend="scripted")
    default = run_table("table1", **kw)
    assert default.name == "table1_small.md" and (tmp_path / "out" / "small" / "table1_last_letter_rar2"
                                                  / "summary.txt").is_file()
    weights = tmp_path / "other-model"
    weights.mkdir()
    (weights / "config.json").write_text("{}")
    (weights / "model.safetensors").write_bytes(b"w")
    other = run_table("table1", model=str(weights), **kw)
    assert other.name == "table1_small_other-model.md" and f"`{weights}`" in other.read_text()
    assert (tmp_path / "out" / "small" / "other-model" / "table1_coin_flip_rar2+method=system1" / "summary.txt").is_file()
    assert default.read_text() and (tmp_path / "runs" / "small" / "other-model").is_dir()
    before = other.read_text()
    limited = run_table("table1", model=str(weights), settings={"eval_limit": 1}, **kw)
    assert limited.name == "table1_small_other-model+eval_limit=1.md" and other.read_text() == before
    assert f"made by `s2d reproduce table1 --scale small --model {weights} --set eval_limit=1`" in limited.read_text()
    worded = run_table("table1", settings={"method_options": {"wording": "paper"}}, **kw)  # rar2's option:
    assert worded.name == "table1_small+method_options.wording=paper.md"  # not given to the system1 runs
    assert (tmp_path / "out" / "small" / "table1_last_letter_rar2+method_options.wording=paper").is_dir()
    assert (tmp_path / "out" / "small" / "table1_coin_flip_rar2+method=system1").is_dir()


def test_reproduce_only_runs_the_named_runs_and_takes_the_others_rows_from_their_exports(memorize, tmp_path):
    """--only: a table whose runs were made in different sessions. The named runs run; the others'
    rows come from their exports when their run folders are gone; a run with neither stays empty."""
    import shutil

    from s2d.errors import ConfigError, InputError
    from s2d.reproduce import run_table

    configs = table1_configs(tmp_path, trainer="memorize")
    kw = dict(configs_dir=configs, runs_dir=tmp_path / "runs", out_dir=tmp_path / "out", progress=False,
              backend="scripted")
    said = []
    whole = run_table("table1", echo=lambda m: None, **kw).read_text()
    shutil.rmtree(tmp_path / "runs")  # another machine: only the exports are left
    shutil.rmtree(tmp_path / "out" / "small" / "table1_coin_flip_rar2+method=system1")
    (tmp_path / "out" / "table1_small.md").unlink()
    part = run_table("table1", echo=said.append, only=["table1_coin_flip_rar2"], **kw).read_text()
    ran = [m for m in said if m.startswith("== ")]
    assert [m.split(" (")[0] for m in ran] == ["== table1_coin_flip_rar2"], said
    assert any("table1_coin_flip_rar2+method=system1" in m and "rows stay empty" in m for m in said)
    assert not (tmp_path / "runs" / "small" / "table1_last_letter_rar2").exists()
    row = lambda text, label: next(line for line in text.splitlines() if line.startswith(f"| {label} |"))
    for label in ("System 1", "System 2: 2-Step RaR", "Distill 2-Step RaR"):  # from exports and the rerun
        assert row(part, label) == row(whole, label)
    runs = lambda text: [line for line in text.splitlines() if line.startswith("- ")]
    assert runs(part)[:-1] == [r for r in runs(whole) if "small/table1_coin_flip_rar2+method=system1" not in r]
    assert runs(part)[-1] == ("- table1_coin_flip_rar2+method=system1: **not run** (no finished run folder "
                             "or export), so its rows are empty.")
    # An export of other settings is not this run's: its rows stay empty, and the table says why.
    export = tmp_path / "out" / "small" / "table1_last_letter_rar2+method=system1" / "summary.json"
    saved = json.loads(export.read_text())
    export.write_text(json.dumps({**saved, "settings": {**saved["settings"], "n": 7}}))
    other = run_table("table1", echo=lambda m: None, only=["table1_coin_flip_rar2"], **kw).read_text()
    assert "- table1_last_letter_rar2+method=system1: **not run** (" in other and "has other settings (n)" in other
    report = run_table("table1", echo=said.append, report_only=True, **kw).read_text()  # runs nothing
    assert report == other and len([m for m in said if m.startswith("== table1_coin_flip_rar2 (")]) == 1
    export.write_text("{")
    with pytest.raises(InputError, match="summary.json: not a readable summary"):
        run_table("table1", echo=lambda m: None, only=["table1_coin_flip_rar2"], **kw)
    with pytest.raises(ConfigError, match="not a run of table1"):
        run_table("table1", echo=lambda m: None, only=["table1_coin_flip"], **kw)


def test_a_failed_run_leaves_its_rows_empty_and_the_others_run(memorize, tmp_path, monkeypatch):
    """reproduce runs through the sweep's runner: a run that fails with an s2d error is said in the
    table and in RunsFailed (raised after the table is written); the table's other runs still run."""
    from s2d.distill import DistillRun
    from s2d.errors import RunsFailed, TrainerError
    from s2d.reproduce import run_table

    real = DistillRun.run

    def run(self, *args, **kwargs):
        if self.dir.name == "table1_last_letter_rar2+method=system1":
            raise TrainerError("the trainer ran out of memory")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(DistillRun, "run", run)
    kw = dict(configs_dir=table1_configs(tmp_path, trainer="memorize"), runs_dir=tmp_path / "runs",
              out_dir=tmp_path / "out", progress=False, echo=lambda m: None, backend="scripted")
    with pytest.raises(RunsFailed, match="table1_last_letter_rar2\\+method=system1: the trainer ran out") as err:
        run_table("table1", **kw)
    text = err.value.path.read_text()
    assert "- table1_last_letter_rar2+method=system1: **failed** (the trainer ran out of memory)" in text
    assert (tmp_path / "runs" / "small" / "table1_coin_flip_rar2+method=system1" / "summary.json").is_file()


def test_set_is_the_last_layer_and_merges_into_mappings():
    import yaml
    from click.testing import CliRunner

    from s2d.cli import cli

    res = CliRunner().invoke(cli, ["config", "show", "--task", "last_letter", "--method", "cot", "--set",
                                   "method_options.shots=4", "--set", "method_options.shots_resample=true"])
    assert res.exit_code == 0, res.output
    assert yaml.safe_load(res.output)["method_options"] == {"shots": 4, "shots_resample": True}


def test_exports_made_before_the_marker_can_be_replaced(memorize, tmp_path):
    from s2d.distill import check_export_dest

    old = tmp_path / "old"
    old.mkdir()
    (old / "summary.txt").write_text("x")
    (old / "config.json").write_text("{}")
    check_export_dest(old)  # an export of an earlier version: replaceable
    run(config(rounds=1), tmp_path / "run", tmp_path / "cache")
    from s2d.distill import export_run

    assert (export_run(tmp_path / "run", old) / ".s2d-export").is_file()

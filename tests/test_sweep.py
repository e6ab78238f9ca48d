"""`s2d sweep PLAN.yaml` (issue 28, item 3): a plan's runs are checked before the first starts, run on
the scripted engine with a model-free trainer, reused through their run folders, and tabled; the
committed plans match the scripts and the paper tables they replace."""

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from conftest import MEMORIZE

from s2d.cli import cli
from s2d.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
PLANS = ROOT / "experiments" / "plans"
# The scripted engine, answering "ab" to everything (tests/fixtures/answering_backend), and a trainer
# that writes a model folder without a model: a whole run in a second.
BASE = {"task": "last_letter", "task_options": {"size": 4}, "backend": "answering", "n": 2, "eval_limit": 2,
        "method": "rar2", "trainer": "memorize"}


def write_plan(folder: Path, runs: dict, **extra) -> Path:
    path = folder / "plan.yaml"
    path.write_text(yaml.safe_dump({"base": BASE, "runs": runs, **extra}, sort_keys=False))
    return path


@pytest.fixture
def sweep(tmp_path, tiny_data):
    """``sweep(*args)``: the CLI with the `answering` engine and the `memorize` trainer as plugins."""
    import shutil

    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "memorize.py").write_text(MEMORIZE)
    shutil.copy(ROOT / "tests" / "fixtures" / "answering_backend" / "answering.py", plugins)

    def invoke(*args):
        return CliRunner().invoke(cli, ["--plugins-dir", str(plugins), "sweep", *map(str, args), "--no-progress",
                                        "--cache", str(tmp_path / "cache")])

    return invoke


@pytest.fixture
def no_engine(replace):
    """Any engine load fails: what runs after this loads no model."""
    from s2d.backends import load_backend

    def refuse(*args, **kwargs):
        raise AssertionError("an engine was loaded")

    replace(load_backend, refuse)


def test_dry_run_lists_runs_settings_and_folders(sweep, tmp_path):
    plan = write_plan(tmp_path, {"rar2": {"method_options.wording": "paper"}, "system1": {"method": "system1"}},
                      grid={"n": [2, 3]})
    res = sweep(plan, "--dry-run", "--runs-dir", tmp_path / "runs")
    assert res.exit_code == 0, res.output
    names = ["rar2+n=2", "rar2+n=3", "system1+n=2", "system1+n=3"]
    listed = [line.split(" (")[0][2:] for line in res.output.splitlines() if line.startswith("- ")]
    assert listed == names
    for name in names:
        assert f"(distill, new) -> {tmp_path / 'runs' / name}" in res.output
    settings = [json.loads(line) for line in res.output.splitlines() if line.startswith("  {")]
    assert settings[1]["n"] == 3 and settings[1]["method_options"] == {"wording": "paper"}
    # A new method drops the base's method options, as a flag over a config does (s2d/config.py).
    assert settings[2]["method"] == "system1" and "method_options" not in settings[2]
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("run, words", [
    ({"method_options.nope": 1}, ["nope"]),
    ({"bogus": 1}, ["unknown setting 'bogus'"]),
    ({"kind": "route"}, ["kind 'route'"]),
    ({"n": 0}, ["'n' must be a positive integer"]),
])
def test_a_bad_variant_fails_before_any_run_naming_plan_and_run(sweep, tmp_path, no_engine, run, words):
    plan = write_plan(tmp_path, {"good": {}, "bad": run})
    res = sweep(plan, "--runs-dir", tmp_path / "runs")
    assert res.exit_code == 1, res.output
    assert f"{plan}: run bad" in res.output and all(w in res.output for w in words), res.output
    assert not (tmp_path / "runs").exists()  # not even the good run started


def test_a_plan_checks_its_columns_and_only_names(tmp_path):
    from s2d.sweep import load_plan, select

    plan = write_plan(tmp_path, {"a": {}}, columns=["system1", "sytem2"])
    with pytest.raises(ConfigError, match="unknown column 'sytem2'"):
        load_plan(plan)
    plan = write_plan(tmp_path, {"a": {}}, columns=["system2.acc_biased", "curator_options.threshold", "n"])
    with pytest.raises(ConfigError, match="no run 'b'"):
        select(load_plan(plan), ["a,b"])


def test_a_sweep_runs_reuses_and_reports(sweep, tmp_path, replace):
    plan = write_plan(tmp_path, {"rar2": {}, "distill-system1": {"method": "system1", "why": "the baseline"}},
                      columns=["method", "system1", "system2", "distilled", "kept", "tokens", "why"])
    runs = tmp_path / "runs"
    res = sweep(plan, "--runs-dir", runs)
    assert res.exit_code == 0, res.output
    for name in ("rar2", "distill-system1"):
        assert (runs / name / "summary.json").is_file() and (runs / name / "adapter" / "s2d_training.json").is_file()
    report = (runs / "report.md").read_text()
    assert report in res.output
    rows = [line for line in report.splitlines() if line.startswith("| ")]
    assert rows[0] == "| run | method | system1 | system2 | distilled | kept | tokens | why |"
    summary = json.loads((runs / "rar2" / "summary.json").read_text())
    s1 = next(r for r in summary["rows"] if r["condition"] == "system1")
    kept = f"{summary['curation']['kept_inputs']}/{summary['curation']['inputs']}"
    assert rows[1].startswith(f"| rar2 | rar2 | {100 * s1['score']:.1f}% |") and f"| {kept} |" in rows[1]
    assert rows[2].startswith("| distill-system1 | system1 |") and rows[2].endswith("| the baseline |")

    # A second invocation reuses both runs: nothing generated, no engine loaded, the same report.
    traces = (runs / "rar2" / "traces.jsonl").stat().st_mtime_ns
    from s2d.backends import load_backend

    replace(load_backend, lambda *a, **k: (_ for _ in ()).throw(AssertionError("an engine was loaded")))
    again = sweep(plan, "--runs-dir", runs)
    assert again.exit_code == 0, again.output
    assert "== rar2: finished, reusing" in again.output and "== distill-system1: finished, reusing" in again.output
    assert "[generate] running" not in again.output
    assert (runs / "rar2" / "traces.jsonl").stat().st_mtime_ns == traces
    assert (runs / "report.md").read_text() == report

    # --report-only rebuilds the same report text from the run folders alone.
    (runs / "report.md").unlink()
    only = sweep(plan, "--runs-dir", runs, "--report-only")
    assert only.exit_code == 0, only.output
    assert (runs / "report.md").read_text() == report


def test_only_runs_the_named_run_and_the_report_says_what_is_missing(sweep, tmp_path):
    plan = write_plan(tmp_path, {"rar2": {}, "distill-system1": {"method": "system1"}})
    runs = tmp_path / "runs"
    res = sweep(plan, "--runs-dir", runs, "--only", "distill-system1")
    assert res.exit_code == 0, res.output
    assert (runs / "distill-system1" / "summary.json").is_file() and not (runs / "rar2").exists()
    report = (runs / "report.md").read_text()
    assert "| rar2 | - | - | - | - | - | - |" in report and "Not finished: `rar2` (new)." in report
    assert "| distill-system1 | 0.0% |" in report


def test_set_and_model_name_their_own_folders_and_report(sweep, tmp_path):
    plan = write_plan(tmp_path, {"system1": {"method": "system1"}})
    runs = tmp_path / "runs"
    res = sweep(plan, "--runs-dir", runs, "--set", "eval_limit=1", "--dry-run")
    assert res.exit_code == 0, res.output
    assert f"-> {runs / 'system1+eval_limit=1'}" in res.output
    from s2d.sweep import load_plan

    loaded = load_plan(plan, runs_dir=runs, model="some/where/tiny-model", set_layer={"eval_limit": 1})
    assert loaded.runs[0].folder.name == "system1+eval_limit=1+model=tiny-model"
    assert loaded.report_path().name == "report+eval_limit=1+model=tiny-model.md"
    assert loaded.runs[0].config["model"] == "some/where/tiny-model"


def test_a_folder_of_other_settings_is_refused_before_any_run(sweep, tmp_path, no_engine):
    plan = write_plan(tmp_path, {"a": {}, "b": {"method": "system1"}})
    runs = tmp_path / "runs"
    (runs / "b").mkdir(parents=True)
    (runs / "b" / "config.json").write_text(json.dumps({"settings": {**BASE, "n": 5}}))
    res = sweep(plan, "--runs-dir", runs)
    assert res.exit_code == 1 and f"{plan}: run b" in res.output and "other settings (method, n)" in res.output
    assert not (runs / "a").exists()


def test_an_eval_run_scores_system1_and_system2_only(sweep, tmp_path):
    plan = write_plan(tmp_path, {"scores": {"kind": "eval"}}, columns=["kind", "system1", "system2", "distilled"])
    runs = tmp_path / "runs"
    res = sweep(plan, "--runs-dir", runs)
    assert res.exit_code == 0, res.output
    summary = json.loads((runs / "scores" / "summary.json").read_text())
    assert [r["condition"] for r in summary["rows"]] == ["system1", "system2-rar2"]
    assert not (runs / "scores" / "traces.jsonl").exists() and not (runs / "scores" / "adapter").exists()
    assert "| scores | eval | 0.0% | 0.0% | - |" in res.output
    rerun = sweep(plan, "--runs-dir", runs)  # a finished eval run is reused like a distill run
    assert "== scores: finished, reusing" in rerun.output
    # The same run as a distill run goes on from the eval run's folder (its two rows are kept).
    record = next((runs / "scores" / "eval").rglob("system1.json"))
    before = record.stat().st_mtime_ns
    plan = write_plan(tmp_path, {"scores": {}}, columns=["kind", "system1", "system2", "distilled"])
    res = sweep(plan, "--runs-dir", runs)
    assert res.exit_code == 0 and "[generate] running" in res.output, res.output
    assert "| scores | distill | 0.0% | 0.0% | 0.0% |" in res.output and record.stat().st_mtime_ns == before


# -- the committed plans ----------------------------------------------------------------------------
def test_every_committed_plan_resolves():
    from s2d.sweep import load_plan

    plans = sorted(PLANS.glob("*.yaml"))
    assert {p.stem for p in plans} >= {"table1", "table2", "table3", "table4", "distill_search"}
    for path in plans:
        plan = load_plan(path)
        assert plan.runs, path


def test_the_paper_plans_are_reproduces_runs_and_numbers():
    """`s2d reproduce` reads its runs and the paper's numbers from the table plans, and a sweep of a
    table plan uses the run folders reproduce uses (same names, same settings)."""
    from s2d.config import RunConfig, apply_scale, load_config
    from s2d.reproduce import PAPER, run_name
    from s2d.sweep import load_plan

    assert PAPER["table1"]["rows"]["distilled"] == ("Distill 2-Step RaR", {"last_letter": (98.0, 25.5),
                                                                           "coin_flip": (75.69, 50.3)})
    assert PAPER["table2"]["metrics"] == ("acc_biased", "acc_unbiased") and "metrics" not in PAPER["table1"]
    for table, spec in PAPER.items():
        plan = load_plan(PLANS / f"{table}.yaml")
        assert [r.name for r in plan.runs] == [run_name(c, o) for c, o, _ in spec["runs"]]
        for run, (config, overrides, _) in zip(plan.runs, spec["runs"]):
            raw = load_config(str(ROOT / "results" / "configs" / f"{config}.yaml"))
            assert run.config.settings == RunConfig.build(apply_scale(raw, "small"), overrides).settings
            assert run.folder == Path("runs/reproduce/small") / run.name


def test_the_distill_search_plan_is_the_scripts_runs(script):
    """Every run of scripts/distill_search.py's RUNS, with the settings the script gives it."""
    from s2d.config import RunConfig
    from s2d.sweep import load_plan

    search = script("distill_search")
    plan = load_plan(PLANS / "distill_search.yaml")
    assert [r.name for r in plan.runs] == [name for name, *_ in search.RUNS]
    for run, (name, base, over, why) in zip(plan.runs, search.RUNS):
        assert run.config.settings == RunConfig.build(search.settings(base, over)).settings, name
        assert run.variant.why == why


def test_report_only_tables_the_committed_distill_search_exports(sweep, tmp_path, no_engine):
    """The committed exports are run folders a report reads: their settings are the plan's."""
    import shutil

    runs = tmp_path / "exports"
    shutil.copytree(ROOT / "results" / "distill_search" / "runs", runs)
    res = sweep(PLANS / "distill_search.yaml", "--report-only", "--runs-dir", runs)
    assert res.exit_code == 0, res.output
    assert "other settings" not in res.output
    row = next(line for line in res.output.splitlines() if line.startswith("| cf-t0-n1-400 |"))
    assert "| 400/400 | 73.8% | 17.0% | 62.0% | 74.7% |" in row

"""`s2d sweep PLAN.yaml` (issue 28, item 3): a plan's runs are checked before the first starts, run on
the scripted engine with a model-free trainer, reused through their run folders, and tabled (route
runs too); the committed plans are the paper tables `s2d reproduce` writes, and their reports over the
committed exports give the numbers of the tables the experiment scripts they replace wrote."""

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
    ({"kind": "sample"}, ["kind 'sample'"]),
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


# -- route runs ------------------------------------------------------------------------------------
def oracle(request, sample):
    """The distilled model (an adapter) answers at once, sure of names without an 'a' (and right),
    unsure of the others (and wrong); System 2 (no adapter) reasons and is always right."""
    word = request.messages[-1]["content"].split('"')[1]
    if request.adapter:
        return {"text": "zz", "logprob": -3.0} if "a" in word.lower() else {"text": word[-1].lower(), "logprob": -0.05}
    return f"The last letter of {word} is {word[-1]}. Final answer: {word[-1].lower()}"


def finished_student(folder: Path, settings: dict) -> None:
    """A finished distill run folder with a LoRA adapter, as `s2d route` needs (no model in it)."""
    (folder / "adapter").mkdir(parents=True)
    (folder / "adapter" / "adapter_config.json").write_text(json.dumps({"r": 4, "peft_type": "LORA"}))
    (folder / "config.json").write_text(json.dumps({"settings": settings}))
    rows = [("system1", 0.0, 3.0), ("system2-cot", 1.0, 12.0), ("distilled", 0.5, 1.0)]
    (folder / "summary.json").write_text(json.dumps({"rows": [
        {"condition": c, "metric": "exact_match", "score": x, "mean_tokens": t, "n": 8} for c, x, t in rows]}))


def test_a_route_run_routes_its_finished_run_and_is_reported(sweep, tmp_path, replace):
    import s2d.backends
    from s2d.backends.scripted import ScriptedBackend
    from s2d.sweep import load_plan

    base = {"task": "last_letter", "task_options": {"words_per_example": 1, "size": 8}, "method": "cot",
            "backend": "scripted"}
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump({"base": base, "export": str(tmp_path / "exports"), "runs": {
        "student": {}, "routed": {"kind": "route", "from": "student", "route": {"tolerance": 0.0}}},
        "columns": ["kind", "system2", "distilled", "route", "route_tokens", "route_threshold", "route_to_system2"]},
        sort_keys=False))
    runs = tmp_path / "runs"
    plan = load_plan(path, runs_dir=runs)
    assert plan.runs[1].config.settings == plan.runs[0].config.settings  # the routed run's settings
    finished_student(runs / "student", plan.runs[0].config.settings)
    backend = ScriptedBackend(script=oracle)
    replace(s2d.backends.load_backend, lambda *a, **k: backend)

    dry = sweep(path, "--runs-dir", runs, "--dry-run")
    assert "- routed (route, new)" in dry.output and "routes student" in dry.output, dry.output
    res = sweep(path, "--runs-dir", runs)
    assert res.exit_code == 0, res.output
    summary = json.loads((runs / "routed" / "summary.json").read_text())
    assert summary["kind"] == "route" and summary["from"] == "student"
    assert [r["condition"] for r in summary["rows"]] == ["system1", "system2-cot", "distilled", "route"]
    chosen = summary["route"]["chosen"]
    assert -3.0 < chosen["threshold"] <= -0.05 and summary["rows"][-1]["score"] == 1.0  # the unsure went on
    row = next(line for line in res.output.splitlines() if line.startswith("| routed |"))
    to_s2 = 100 * summary["route"]["test_at_chosen"]["to_system2"]
    assert row.startswith("| routed | route | 100.0% | 50.0% | 100.0% |") and f"| {chosen['threshold']:.4g} |" in row
    assert row.endswith(f"| {to_s2:.1f}% |")
    for name in ("routing.json", "routing.md", "summary.json", "config.json"):
        assert (tmp_path / "exports" / "routed" / name).is_file(), name
    again = sweep(path, "--runs-dir", runs)  # finished: reused, nothing routed again
    assert "== routed: finished, reusing" in again.output and again.exit_code == 0
    assert "routed: other" not in sweep(path, "--runs-dir", runs, "--dry-run").output


@pytest.mark.parametrize("route, words", [
    ({"kind": "route"}, ["names the run it routes"]),
    ({"kind": "route", "from": "nope"}, ["from 'nope': not a distill run listed before it"]),
    ({"kind": "route", "from": "a", "n": 3}, ["takes its settings from its run (a)", "n"]),
    ({"kind": "route", "from": "a", "route": {"confidence": "vibes"}}, ["confidence must be one of"]),
    ({"kind": "route", "from": "a", "route": {"threshold": 1}}, ["route must be a mapping of"]),
    ({"from": "a"}, ["belong to a route run"]),
])
def test_a_bad_route_run_is_refused_when_the_plan_is_read(tmp_path, route, words):
    from s2d.sweep import load_plan

    with pytest.raises(ConfigError) as err:
        load_plan(write_plan(tmp_path, {"a": {}, "r": route}))
    assert "run r" in str(err.value) and all(w in str(err.value) for w in words), str(err.value)


def test_a_run_naming_another_trainer_drops_the_bases_trainer_options(tmp_path):
    """The base's options belong to its trainer (LoRA's epochs are not stepwise's); a run that names
    another trainer starts from none, unless it gives its own (as a new method or curator does)."""
    from s2d.sweep import load_plan

    base = {**BASE, "trainer": "lora", "trainer_options": {"epochs": 4}}
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump({"base": base, "runs": {"a": {}, "b": {"trainer": "full"},
                                                           "c": {"trainer": "full", "trainer_options.epochs": 2},
                                                           "d": {"trainer_options.epochs": 2}}}))
    plan = load_plan(path)
    assert [r.config["trainer_options"] for r in plan.runs] == [{"epochs": 4}, {}, {"epochs": 2}, {"epochs": 2}]


def test_set_method_options_go_to_the_runs_of_the_bases_method(tmp_path):
    """`--set method_options.wording=paper` is the base method's option (rar2's): a run that names
    its own method (the paper's System 1 baseline) drops it, as it drops the base's own."""
    from s2d.sweep import load_plan

    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump({"base": {**BASE, "method": "rar2"},
                                    "runs": {"a": {}, "b": {"method": "system1"}, "c": {"method": "rar2"}}}))
    plan = load_plan(path, set_layer={"method_options": {"wording": "paper"}, "eval_limit": 1})
    assert [r.config["method_options"] for r in plan.runs] == [{"wording": "paper"}, {}, {"wording": "paper"}]
    assert [r.folder.name for r in plan.runs] == ["a+eval_limit=1+method_options.wording=paper", "b+eval_limit=1",
                                                  "c+eval_limit=1+method_options.wording=paper"]


# -- the committed plans ----------------------------------------------------------------------------
def test_every_committed_plan_resolves():
    from s2d.sweep import load_plan

    plans = sorted(PLANS.glob("*.yaml"))
    assert {p.stem for p in plans} >= {"table1", "table2", "table3", "table4", "distill_search", "default_search",
                                       "eval_matrix", "exemplar_sets", "beyond_paper"}
    for path in plans:
        plan = load_plan(path)
        assert plan.runs, path


def test_the_paper_plans_are_reproduces_runs_and_numbers():
    """`s2d reproduce` reads its runs and the paper's numbers from the table plans, and a sweep of a
    table plan uses the run folders reproduce uses (same names, same settings)."""
    from s2d.config import RunConfig, apply_scale, load_config
    from s2d.reproduce import PAPER, run_name, table_plan
    from s2d.sweep import load_plan

    assert PAPER["table1"]["rows"]["distilled"] == ("Distill 2-Step RaR", {"last_letter": (98.0, 25.5),
                                                                           "coin_flip": (75.69, 50.3)})
    assert PAPER["table2"]["metrics"] == ("acc_biased", "acc_unbiased") and "metrics" not in PAPER["table1"]
    for table, spec in PAPER.items():
        plan = load_plan(PLANS / f"{table}.yaml")
        assert [r.name for r in plan.runs] == [run_name(c, o) for c, o, _ in spec["runs"]]
        for run, (config, overrides, _) in zip(plan.runs, spec["runs"]):
            raw = load_config(str(ROOT / "experiments" / "configs" / f"{config}.yaml"))
            assert run.config.settings == RunConfig.build(apply_scale(raw, "small"), overrides).settings
            assert run.folder == Path("runs/reproduce/small") / run.name
        # reproduce runs the same plan through the sweep's runner, in the same folders.
        reproduced = table_plan(table)
        assert [(r.folder, r.config.settings) for r in reproduced.runs] == \
            [(Path("runs/reproduce/small") / r.name, r.config.settings) for r in plan.runs]


# The committed results of each plan: its exports (distill runs exported by the scripts the plans
# replaced; eval and route runs converted from their committed records, which each summary names)
# and the table the script wrote. `--report-only` over the exports must give that table's numbers.
COMMITTED = {
    "distill_search": ("results/distill_search/runs", "results/distill_search/README.md"),
    "default_search": ("results/search/runs", "results/search/README.md"),
    "eval_matrix": ("results/eval/runs", "results/eval/leaderboard.md"),
    "exemplar_sets": ("results/distill_search/exemplar_sets/runs",
                      "results/distill_search/exemplar_sets/leaderboard.md"),
    "beyond_paper": ("results/beyond/runs", "results/beyond/README.md"),
}


def md_tables(text: str) -> list[tuple[str, list[dict]]]:
    """Every Markdown table in ``text``: (the last `## ` heading above it, its rows as header -> cell)."""
    out, heading, header = [], "", None
    for line in text.splitlines():
        if line.startswith("## "):
            heading = line[3:].strip()
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else None
        if cells is None:
            header = None
        elif header is None:
            header = cells
            out.append((heading, []))
        elif not set(line) <= set("|-: "):
            out[-1][1].append(dict(zip(header, cells)))
    return out


def report(sweep, tmp_path, plan: str) -> dict[str, dict]:
    """`s2d sweep PLAN --report-only` over a copy of the plan's committed exports: run -> column -> cell.
    Every export holds its run's settings (no 'other settings') and loads no model."""
    import shutil

    runs = tmp_path / plan
    shutil.copytree(ROOT / COMMITTED[plan][0], runs)
    res = sweep(PLANS / f"{plan}.yaml", "--report-only", "--runs-dir", runs)
    assert res.exit_code == 0 and "other settings" not in res.output, res.output
    (_, rows), = md_tables(res.output)
    return {r["run"]: r for r in rows}


def committed_table(plan: str) -> list[tuple[str, list[dict]]]:
    return md_tables((ROOT / COMMITTED[plan][1]).read_text())


def score_tok(cell: str) -> tuple[str, str]:
    """'45.5 (27.3)' -> ('45.5%', '27.3'): a script's cell as the report's score and tokens."""
    score, tok = cell.split(" (")
    return f"{score}%", tok.rstrip(")")


def differences(got: dict, want: dict) -> dict:
    """(run, column) -> (the committed table's cell, the report's) wherever they differ."""
    return {(run, col): (cell, got.get(run, {}).get(col)) for run, cells in want.items() for col, cell in cells.items()
            if got.get(run, {}).get(col) != cell}


def test_the_distill_search_plan_reproduces_its_committed_table(sweep, tmp_path, no_engine):
    """Each run's last round in the script's table (its layout: one row per round, with 'yes' shares
    and settings columns the report spells differently) has the report's numbers; the runs without a
    committed export are the ones the script's table lacks."""
    got = report(sweep, tmp_path, "distill_search")
    want = {}
    for r in committed_table("distill_search")[0][1]:  # a later round's row replaces the earlier
        (s1, s1t), (s2, s2t), (d, dt) = (score_tok(r[k]) for k in ("System 1 % (tok)", "System 2 % (tok)",
                                                                     "distilled % (tok)"))
        want[r["run"]] = {"kept": f"{r['kept']}/{r['train inputs']}", "target_accuracy": f"{r['target acc %']}%",
                          "system1": s1, "system2": s2, "distilled": d, "tokens": f"{s1t} / {s2t} / {dt}",
                          "n": r["n"], "rounds": r["round"]}
    assert not differences(got, want)
    assert {run for run, row in got.items() if row["system2"] != "-"} == set(want)


def test_the_default_search_plan_reproduces_its_committed_table(sweep, tmp_path, no_engine):
    """The script's table (one row per condition; System 1 once per group of test documents) holds the
    report's System 1 and System 2 cells of every run (TASK-CONDITION). Its results/eval rows are the
    eval matrix's (the next test)."""
    got = report(sweep, tmp_path, "default_search")
    rows = [r for r in committed_table("default_search")[0][1] if "results/eval" not in r["documents"]]
    want = {}
    for r in rows:
        if not r["condition"].startswith("system1"):
            s1 = next(x for x in rows if x["documents"] == r["documents"] and x["condition"].startswith("system1"))
            want[f"{r['task']}-{r['condition']}"] = {
                "system1": f"{s1['score %']}%", "system1_tokens": s1["mean #tokens"],
                "system2": f"{r['score %']}%", "system2_tokens": r["mean #tokens"]}
    assert set(want) == set(got) and not differences(got, want)


def leaderboard_rows(plan: str) -> dict[tuple[str, str], dict]:
    """The embedded model's rows of a committed `s2d leaderboard` table: (task, condition) -> row."""
    return {(task, r["condition"]): r for task, rows in committed_table(plan) for r in rows
            if r["model"] == "smollm2-135m"}


def test_the_eval_matrix_plan_reproduces_the_committed_leaderboard(sweep, tmp_path, no_engine):
    """Each run (TASK-CONDITION) is the leaderboard's System 2 row and its task's System 1 row (on the
    same documents): the headline metric and mean tokens, the cells both tables show."""
    got = report(sweep, tmp_path, "eval_matrix")
    board = leaderboard_rows("eval_matrix")
    metric = {"triviaqa_bias": "acc_biased", "mt_bench_judge": "agreement"}
    want = {}
    for run in got:
        task, condition = run.split("-", 1)
        s1 = board[task, "system1" + ("+subset=300" if "subset=300" in condition else "")]
        s2 = board[task, condition]
        m = metric.get(task, "exact_match")
        want[run] = {"system1": s1[m], "system1_tokens": s1["mean #tokens"], "system2": s2[m],
                     "system2_tokens": s2["mean #tokens"]}
    assert len(want) == 11 and not differences(got, want)


def test_the_exemplar_sets_plan_reproduces_the_committed_leaderboard(sweep, tmp_path, no_engine):
    """The script ran System 2 alone: its five exemplar sets per task are the leaderboard's rows, and
    the report's System 1 cells are empty."""
    got = report(sweep, tmp_path, "exemplar_sets")
    board = leaderboard_rows("exemplar_sets")
    want = {}
    for (task, condition), r in board.items():
        seed = condition.split("shot_seed=")[1].split("+")[0]
        want[f"{task}+method_options.shot_seed={seed}"] = {"system1": "-", "system2": r["exact_match"],
                                                           "system2_tokens": r["mean #tokens"]}
    assert set(want) == set(got) and not differences(got, want)


def test_the_beyond_plan_reproduces_its_committed_table_but_its_rescored_cells(sweep, tmp_path, no_engine):
    """The script's README: the addition probe, the answer-only and stepwise runs, and a routing line per
    task. Its cells differ from the report only where the export's record was rescored after the
    README was written (f8fae01's extractors), and there the README holds the score before."""
    import re

    from s2d.store import metrics_of

    got = report(sweep, tmp_path, "beyond_paper")
    (_, probe), (_, trained) = committed_table("beyond_paper")
    want = {}
    for r in probe:
        (s1, s1t), (s2, s2t) = score_tok(r["System 1 % (tok)"]), score_tok(r["few-shot CoT % (tok)"])
        style = "" if r["worked steps"] == "columns" else f"-{r['worked steps']}"
        want[f"addition-d{r['digits']}{style}"] = {"system1": s1, "system2": s2, "tokens": f"{s1t} / {s2t} / -"}
    for r in trained:
        (s1, s1t), (s2, s2t), (d, dt) = (score_tok(r[k]) for k in ("System 1 % (tok)", "System 2 % (tok)",
                                                                     "distilled % (tok)"))
        want[f"{r['task']}-{r['trainer']}"] = {"target_accuracy": f"{r['target acc %']}%", "system1": s1,
                                               "system2": s2, "distilled": d, "tokens": f"{s1t} / {s2t} / {dt}"}
        assert got[f"{r['task']}-{r['trainer']}"]["kept"].startswith(f"{r['kept']}/")
    line = re.compile(r"## Routing: (\w+)\n\nThreshold (\S+) \(picked on validation\): test [\d.]+% at [\d.]+ tokens, "
                      r"([\d.]+)% sent to System 2; through lm-eval ([\d.]+)% at ([\d.]+) tokens")
    for task, threshold, to_s2, score, tok in line.findall((ROOT / COMMITTED["beyond_paper"][1]).read_text()):
        want[f"{task}-route"] = {"route_threshold": threshold, "route_to_system2": f"{to_s2}%", "route": f"{score}%",
                                 "route_tokens": tok}
    assert set(want) == set(got)
    stale = differences(got, want)
    assert sorted(stale) == [("gsm8k-lora", "distilled"), ("gsm8k-lora", "system1"), ("gsm8k-lora", "system2"),
                             ("gsm8k-stepwise", "system1"), ("gsm8k-stepwise", "system2"),
                             ("last_letter-lora", "system1"), ("last_letter-stepwise", "system1")]
    for (run, column), (readme, now) in stale.items():
        condition = {"system2": "system2-cot"}.get(column, column)
        task = got[run]["task"]
        record = json.loads((ROOT / COMMITTED["beyond_paper"][0] / run / "eval" / "smollm2-135m" / task /
                             f"{condition}.json").read_text())
        before = record["s2d"]["rescored"][0]["before"]["exact_match"]  # f8fae01's, the first rescoring
        assert (readme, now) == (f"{100 * before:.1f}%", f"{100 * metrics_of(record)['exact_match']:.1f}%")


def test_the_converted_exports_are_their_records(no_engine):
    """The eval and route exports converted from the scripts' records: each row is its record's
    headline metric and mean tokens, and each System 2 record was made with its run's settings
    (method, options, task options, limit, seed; System 1's with its task, documents and seed)."""
    from s2d.store import headline_metric, load_record, metrics_of
    from s2d.sweep import load_plan

    checked = 0
    for plan_name, (export, _) in COMMITTED.items():
        for run in load_plan(PLANS / f"{plan_name}.yaml").runs:
            summary_path = ROOT / export / run.folder.name / "summary.json"
            if not summary_path.is_file() or "records" not in json.loads(summary_path.read_text()):
                continue
            summary = json.loads(summary_path.read_text())
            rows = {r["condition"]: r for r in summary["rows"]}
            for condition, path in summary["records"].items():
                if condition == "routing":
                    assert json.loads((ROOT / path).read_text())["chosen"] == summary["route"]["chosen"]
                    continue
                rec = load_record(ROOT / path)
                metrics, s = metrics_of(rec), rec["s2d"]
                assert rows[condition]["score"] == metrics[headline_metric(metrics)], (run.name, condition)
                assert rows[condition]["mean_tokens"] == s["mean_generated_tokens"], (run.name, condition)
                options = s["generation"].get("task_options") or {}
                c = run.config
                assert (s["task"], s["seed"], s["limit"]) == (c["task"], c["seed"], c["eval_limit"]), path
                if condition.startswith("system2"):
                    assert (s["method"], s["method_options"], options) == (
                        c["method"], c.eval_method_options(), c.eval_task_options()), (run.name, path)
                elif condition == "system1":  # one System 1 per digit count served both worked styles
                    assert s["method"] == "system1" and options.items() <= c.eval_task_options().items(), path
                checked += 1
    assert checked == 8 * 2 + 11 * 2 + 10 + 6 * 2 + 2

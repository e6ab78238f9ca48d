"""Issue 27 items 13-15: every option's range, the templates' field syntax and the sizes of a run are
checked before any model loads; `s2d reproduce` checks every run of a table before the first;
`config show` checks plugin options; a plugin calling os._exit at import is reported."""

import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner
from conftest import table1_configs

from s2d.cli import cli


def invoke(*args):
    return CliRunner().invoke(cli, list(args))


def one_line_error(res, *words):
    """The command failed with s2d's one-line error (no traceback) holding every word."""
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), res.output
    assert "Traceback" not in res.output
    for word in words:
        assert word in res.output, res.output


# -- task options (finding 13) ------------------------------------------------------------------------
@pytest.mark.parametrize("task,options,words", [
    ("last_letter", {"words_per_example": 0}, ("'words_per_example'", ">= 1", "got 0")),
    ("last_letter", {"train_size": 0}, ("'train_size'", ">= 1")),
    ("last_letter", {"train_size": "many"}, ("'train_size'", "'many'")),
    ("coin_flip", {"people": 0}, ("'people'", ">= 1")),
    ("coin_flip", {"train_size": 10 ** 9}, ("'train_size'", "<= 1000000")),
    ("addition", {"digits": 12, "size": 10 ** 9}, ("'size'", "<= 1000000")),
    ("mt_bench_judge", {"train_size": -1}, ("'train_size'", ">= 1")),
    ("triviaqa_bias", {"test_questions": 0}, ("'test_questions'", ">= 1")),
    ("gsm8k", {"subset": -3}, ("'subset'", ">= 1", "got -3")),
    ("gsm8k", {"subset": "all"}, ("'subset'", "'all'")),
])
def test_a_task_option_out_of_range_is_an_error_naming_it(task, options, words):
    from s2d.config import ConfigError
    from s2d.lmeval.tasks import build_task

    with pytest.raises(ConfigError) as err:
        build_task(task, strict=True, **options)
    assert all(w in str(err.value) for w in (f"task {task!r}", *words)), str(err.value)


def test_task_ranges_are_declared_beside_each_tasks_options():
    """Every range names an option the task has (a renamed option cannot leave a dead range)."""
    from s2d.lmeval.tasks import task_options
    from s2d.plugins import get_plugins

    for entry in get_plugins().entries("tasks"):
        ranges = entry.obj.option_ranges()
        assert set(ranges) <= set(task_options(entry.obj)), entry.name


def test_words_per_example_zero_fails_before_any_model(tiny_data, tmp_path):
    res = invoke("generate", "--task", "last_letter", "--set", "task_options.words_per_example=0",
                 "--backend", "scripted", "--out", str(tmp_path / "t.jsonl"))
    one_line_error(res, "'words_per_example'", ">= 1")
    assert not (tmp_path / "t.jsonl").exists()


def test_distill_check_names_the_task_option(tiny_data, tmp_path):
    from s2d.config import RunConfig
    from s2d.distill import DistillRun
    from s2d.errors import ConfigError

    cfg = RunConfig.build({"task": "last_letter", "backend": "scripted", "task_options": {"words_per_example": 0}})
    with pytest.raises(ConfigError, match="'words_per_example' must be >= 1"):
        DistillRun(cfg, tmp_path / "run", progress=False, echo=lambda m: None, cache=False).check()


# -- template field syntax (finding 13) ---------------------------------------------------------------
@pytest.mark.parametrize("template,words", [
    ("Say it {", ("'{'",)),
    ("Say it }", ("'}'",)),
    ("{0} again", ("{0}",)),
    ("{} again", ("{}",)),
    ("{questoin}", ("{questoin}", "question")),
    ("{question.upper}", ("{question.upper}",)),
    ("{question!x}", ("{question!x}",)),
])
def test_a_bad_template_field_is_an_error_naming_template_and_field(tiny_data, template, words):
    from s2d.lmeval.tasks import build_task
    from s2d.methods.base import MethodConfigError
    from s2d.traces import build_method

    with pytest.raises(MethodConfigError) as err:
        build_method("rar2", build_task("last_letter"), templates={"rephrase": template})
    assert "'rephrase'" in str(err.value) and all(w in str(err.value) for w in words), str(err.value)


def test_good_templates_pass_and_fields_are_per_stage(tiny_data):
    from s2d.lmeval.tasks import build_task
    from s2d.methods.base import MethodConfigError
    from s2d.traces import build_method

    task = build_task("last_letter")
    m = build_method("rar2", task, templates={"respond": "{rephrased question} / {question} {{literal}}"})
    assert m.render("respond", rephrased="r", question="q", **{"rephrased question": "r"}) == "r / q {literal}"
    with pytest.raises(MethodConfigError, match=r"\{rephrased\}"):  # respond's field, not rephrase's
        build_method("rar2", task, templates={"rephrase": "{rephrased}"})
    with pytest.raises(MethodConfigError, match="'reason@last_letter'"):  # a per-task override too
        build_method("cot", task, templates={"reason@last_letter": "{0}"})


def test_every_shipped_template_passes_its_own_check(tiny_data):
    """The fields each method declares are the ones it renders: every wording of every built-in method
    builds (a field missing from the declaration would fail here)."""
    from s2d.lmeval.tasks import build_task
    from s2d.plugins import get_plugins
    from s2d.traces import build_method

    for name in ("last_letter", "mt_bench_judge", "gsm8k", "coin_flip", "triviaqa_bias", "addition"):
        task = build_task(name)
        for entry in get_plugins().entries("methods"):
            if entry.name == "route":
                continue  # needs a distilled run; its templates are {input} only
            # fewshot reads its exemplars when built; of the tiny data's train splits, gsm8k's hold some
            if entry.name == "fewshot" and name != "gsm8k":
                continue
            shots = {"shots": 1} if entry.name == "fewshot" else {}
            for wording in ("s2d", *entry.obj.wordings):
                build_method(entry.name, task, wording=wording, **shots)


def test_a_template_with_a_positional_field_fails_before_generation(tiny_data, tmp_path):
    res = invoke("generate", "--task", "last_letter", "--method", "cot", "--set", "task_options.size=2",
                 "--set", "templates.reason={0} go", "--backend", "scripted", "--out", str(tmp_path / "t.jsonl"))
    one_line_error(res, "'reason'", "{0}")


def test_a_usc_template_is_checked_when_the_curator_is_built(tiny_data):
    from s2d.curators.usc import WORDINGS
    from s2d.lmeval.tasks import build_task
    from s2d.traces import build_curator

    task = build_task("last_letter")
    for template in ("answers: {", "{0}", "{responsez}"):
        with pytest.raises(ValueError, match="curator 'usc': option 'template'"):
            build_curator("usc", task, template=template)
    for wording in WORDINGS:
        build_curator("usc", task, wording=wording)


# -- sizes (finding 13) -------------------------------------------------------------------------------
@pytest.mark.parametrize("key,value,bound", [("n", 10 ** 9, "<= 1000"), ("rounds", 10 ** 6, "<= 100")])
def test_sizes_have_upper_bounds(key, value, bound):
    from s2d.config import ConfigError, RunConfig

    with pytest.raises(ConfigError) as err:
        RunConfig.build({"task": "last_letter", key: value})
    assert f"setting {key!r}" in str(err.value) and bound in str(err.value) and str(value) in str(err.value)
    RunConfig.build({"task": "last_letter", "n": 1000, "rounds": 100, "train_limit": 10 ** 9})  # the bounds pass


def test_n_of_a_billion_is_refused_by_the_cli(tiny_data, tmp_path):
    res = invoke("generate", "--task", "last_letter", "--n", str(10 ** 9), "--backend", "scripted",
                 "--out", str(tmp_path / "t.jsonl"))
    one_line_error(res, "'n'", "<= 1000")


# -- reproduce checks every run first (finding 14) -----------------------------------------------------


def test_reproduce_checks_every_run_before_the_first(tiny_data, tmp_path, monkeypatch):
    """words_per_example is last_letter's: the fourth run of table 1 (coin_flip) cannot take it,
    which is said before the first run starts."""
    from s2d.distill import DistillRun
    from s2d.errors import ConfigError
    from s2d.reproduce import run_table

    started = []
    monkeypatch.setattr(DistillRun, "run", lambda self: started.append(self.dir) or {})
    with pytest.raises(ConfigError) as err:
        run_table("table1", configs_dir=table1_configs(tmp_path), runs_dir=tmp_path / "runs",
                  out_dir=tmp_path / "out", progress=False, echo=lambda m: None, backend="scripted",
                  settings={"task_options": {"words_per_example": 1}})
    assert started == [] and not (tmp_path / "runs").exists()
    assert "table1_coin_flip_rar2" in str(err.value) and "words_per_example" in str(err.value)


def test_reproduce_cli_refuses_a_bad_set_in_one_line(tiny_data, tmp_path, monkeypatch):
    from s2d.distill import DistillRun

    def run(self):
        raise AssertionError(f"a run started: {self.dir}")

    monkeypatch.setattr(DistillRun, "run", run)
    res = invoke("reproduce", "table1", "--configs-dir", str(table1_configs(tmp_path)), "--runs-dir",
                 str(tmp_path / "runs"), "--out-dir", str(tmp_path / "out"), "--backend", "scripted",
                 "--no-progress", "--set", "task_options.words_per_example=1")
    one_line_error(res, "table1_coin_flip_rar2", "unknown option(s) words_per_example")
    assert not (tmp_path / "runs").exists()


# -- minor (finding 15) -------------------------------------------------------------------------------
@pytest.mark.parametrize("item,words", [
    ("task_options.words_per_example=0", ("'words_per_example'", ">= 1")),
    ("task_options.sizee=3", ("unknown option", "sizee")),
    ("method_options.respond_nn=2", ("unknown option", "respond_nn")),
    ("templates.rephrase={0}", ("'rephrase'", "{0}")),
    ("curator_options.threshold=5", ("threshold must be in [0, 1)",)),
    ("trainer_options.rank=0", ("'rank' must be >= 1",)),
    ("eval_task_options.subset=-3", ("'subset'", ">= 1")),
])
def test_config_show_checks_plugin_options(item, words):
    res = invoke("config", "show", "--task", "last_letter", "--set", item)
    one_line_error(res, *words)


def test_config_show_checks_the_trainer_without_a_task():
    one_line_error(invoke("config", "show", "--for", "train", "--set", "trainer_options.epochs=0"), "'epochs'")
    assert invoke("config", "show", "--for", "generate").exit_code == 0


def test_usc_max_responses_zero_and_threshold_five_are_refused(tiny_data):
    from s2d.lmeval.tasks import build_task
    from s2d.traces import build_curator

    task = build_task("last_letter")
    with pytest.raises(ValueError, match="max_responses"):
        build_curator("usc", task, max_responses=0)
    with pytest.raises(ValueError, match="threshold"):
        build_curator("majority", task, threshold=5)


def test_a_plugin_calling_os_exit_at_import_is_reported_and_skipped(tmp_path):
    """os._exit ends a process at once (no exception, no atexit): loading a plugin replaces it for
    the import, so the CLI survives and names the plugin. Run in a child: before the fix it ends it."""
    (tmp_path / "exits.py").write_text("import os\nos._exit(3)\n")
    code = textwrap.dedent(f"""
        import os
        from s2d.plugins import Plugins
        own = os._exit
        p = Plugins(load_entrypoints=False, plugins_dir={str(tmp_path)!r})
        print("alive", os._exit is own, p.info["exits"].error.splitlines()[0])
        print("cot" in {{e.name for e in p.entries("methods")}})
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "alive True" in out.stdout and "os._exit(3)" in out.stdout and "True" in out.stdout.splitlines()[-1]
    assert "skipping broken plugin 'exits'" in out.stderr


def test_os_exit_keeps_working_in_a_child_the_plugin_forks(tmp_path):
    """A plugin that forks at import: the child's own os._exit must still end the child."""
    (tmp_path / "forks.py").write_text(textwrap.dedent("""
        import os
        pid = os.fork()
        if pid == 0:
            os._exit(7)
        _, status = os.waitpid(pid, 0)
        CHILD_STATUS = os.waitstatus_to_exitcode(status)
    """))
    code = textwrap.dedent(f"""
        from s2d.plugins import Plugins
        p = Plugins(load_entrypoints=False, plugins_dir={str(tmp_path)!r})
        print("loaded", p.info["forks"].error, p.pm.get_plugin("forks").CHILD_STATUS)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.splitlines() == ["loaded None 7"], out.stdout + out.stderr

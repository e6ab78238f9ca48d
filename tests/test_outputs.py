"""Outputs never touch inputs (issue 27, findings 1, 2, 3 and 10's CLI side) and an unwritable
output is one line before any work (finding 12). Every refusal here comes before any model loads."""

import json
import os

import pytest
from click.testing import CliRunner

from s2d.cli import cli


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def no_model(replace):
    """Loading an engine or resolving a model to train fails the test: the refusal must come first."""
    import s2d.backends
    import s2d.cli
    import s2d.models

    def loaded(*args, **kwargs):
        raise AssertionError("a model was loaded before the refusal")

    replace(s2d.cli.make_backend, loaded)
    replace(s2d.backends.load_backend, loaded)
    replace(s2d.models.resolve_model, loaded)


def refused(res, *named):
    """One line (no traceback), exit code 1, naming every path in ``named``."""
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), (res.output, res.exception)
    assert len(res.output.strip().splitlines()) == 1, res.output
    for text in named:
        assert str(text) in res.output, (text, res.output)
    return res.output


TRACE = {"id": "1", "task": "last_letter", "prompt": [{"role": "user", "content": "q"}],
         "samples": [{"response": "Final answer: ab", "answer": "ab"}]}


def test_generate_and_curate_never_write_over_their_config(tiny_data, tmp_path):
    """Finding 1: `--out run.yaml` replaced the config with traces (or the curated set), exit 0."""
    config = tmp_path / "run.yaml"
    config.write_text("task: last_letter\ntask_options: {size: 4}\nbackend: scripted\n")
    before = config.read_text()
    out = refused(invoke("generate", "--config", config, "--limit", "2", "--out", config, "--no-progress"), config)
    assert "also an input" in out and config.read_text() == before
    traces = tmp_path / "t.jsonl"
    traces.write_text(json.dumps(TRACE) + "\n")
    refused(invoke("curate", "--traces", traces, "--config", config, "--out", config), config)
    assert config.read_text() == before
    # Nor beside it under the names curate adds (run.summary.json next to a config run.summary.json).
    summary = tmp_path / "sft.summary.json"
    summary.write_text("task: last_letter\n")
    refused(invoke("curate", "--traces", traces, "--config", summary, "--out", tmp_path / "sft.jsonl"), summary)


def test_outputs_never_go_into_the_task_data_the_s2d_cache_or_the_model(tiny_data, tmp_path, monkeypatch, no_model):
    """Finding 1: `--out` could point at a task's data file under S2D_DATA_DIR (or into the cache)."""
    data_file = tiny_data / "gsm8k" / "train.jsonl"
    before = data_file.read_text()
    traces = tmp_path / "t.jsonl"
    traces.write_text(json.dumps(TRACE) + "\n")
    out = refused(invoke("curate", "--traces", traces, "--out", data_file), data_file, tiny_data)
    assert "the task data (S2D_DATA_DIR)" in out and data_file.read_text() == before
    gen = ["generate", "--task", "last_letter", "--set", "task_options.size=4", "--backend", "scripted",
           "--no-progress"]
    refused(invoke(*gen, "--out", tiny_data / "new.jsonl"), tiny_data)
    monkeypatch.setenv("S2D_CACHE", str(tmp_path / "s2d"))
    out = refused(invoke(*gen, "--out", tmp_path / "s2d" / "models" / "x.jsonl"), tmp_path / "s2d")
    assert "the s2d cache" in out
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    refused(invoke(*gen, "--model", model, "--out", model / "traces.jsonl"), model)
    # eval: its records would land inside the task data
    refused(invoke("eval", "--task", "last_letter", "--set", "task_options.size=4", "--backend", "scripted",
                   "--out-dir", tiny_data / "eval", "--no-progress"), tiny_data)
    assert not (tiny_data / "eval").exists()


def test_an_export_never_replaces_the_run_folder_it_copies(tiny_data, tmp_path, no_model):
    """Finding 2: `--out-dir ex/E1/run2 --export ex/E1`, ex/E1 an earlier export, deleted the run."""
    from s2d.distill import EXPORT_MARK, export_run
    from s2d.errors import S2DError

    export = tmp_path / "ex" / "E1"
    run = export / "run2"
    run.mkdir(parents=True)
    (export / EXPORT_MARK).write_text("")
    for name in ("config.json", "summary.json"):
        (run / name).write_text(json.dumps({"settings": {}, "rows": []}))
    (run / "adapter").mkdir()
    (run / "adapter" / "adapter_model.safetensors").write_bytes(b"weights")
    with pytest.raises(S2DError, match="contains the run folder"):
        export_run(run, export)
    with pytest.raises(S2DError, match="is inside the run folder"):
        export_run(run, run / "export")
    assert (run / "adapter" / "adapter_model.safetensors").read_bytes() == b"weights"
    res = invoke("distill", "--task", "last_letter", "--set", "task_options.size=4", "--backend", "scripted",
                 "--out-dir", run, "--export", export, "--no-progress")
    assert "contains the run folder" in refused(res, run, export)
    assert (run / "adapter" / "adapter_model.safetensors").read_bytes() == b"weights"


@pytest.mark.parametrize("content, message", [
    ({"notes.txt": "mine"}, "holds notes.txt but no s2d run"),
    ({"traces.jsonl": json.dumps(TRACE) + "\n"}, "holds traces.jsonl but no s2d run"),  # another run's traces
    ({"config.json": "{not json", "traces.jsonl": ""}, "is not an s2d run's config"),
    ({"config.json": "[1, 2]"}, "is not an s2d run's config"),
])
def test_distill_takes_only_a_new_empty_or_own_run_folder(tiny_data, tmp_path, no_model, content, message):
    """Finding 3: a folder of other content had its files overwritten, or its traces reused; a
    config.json that is not JSON was a traceback."""
    folder = tmp_path / "F"
    folder.mkdir()
    for name, text in content.items():
        (folder / name).write_text(text)
    res = invoke("distill", "--task", "last_letter", "--set", "task_options.size=4", "--backend", "scripted",
                 "--out-dir", folder, "--no-cache", "--no-progress")
    assert message in refused(res, folder)
    assert sorted(p.name for p in folder.iterdir()) == sorted(content)  # nothing written


def test_a_run_folder_is_new_empty_or_claimed_by_s2d(tmp_path):
    from s2d.config import RunConfig
    from s2d.distill import claim
    from s2d.store import RunFolder

    settings = RunConfig.build({"task": "last_letter"}).settings
    folder = RunFolder(tmp_path / "run", settings)
    assert folder.saved() is None  # new
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".s2d-lock").write_text("")  # a lock file left behind is no content
    assert folder.saved() is None
    claim(folder)
    assert folder.saved()["settings"]["task"] == "last_letter"


def test_train_output_never_holds_its_data_or_config(tmp_path, no_model):
    data = tmp_path / "d" / "sft.jsonl"
    data.parent.mkdir()
    data.write_text(json.dumps({"prompt": [{"role": "user", "content": "q"}], "completion": "a"}) + "\n")
    refused(invoke("train", "--data", data, "--out-dir", tmp_path / "d"), data, tmp_path / "d")
    config = tmp_path / "c" / "train.yaml"
    config.parent.mkdir()
    config.write_text("trainer: lora\n")
    refused(invoke("train", "--data", data, "--config", config, "--out-dir", config.parent), config)


@pytest.fixture
def unwritable(tmp_path):
    """A folder path that cannot be written: below a read-only folder, or (root ignores permissions)
    below a regular file."""
    if os.geteuid() == 0:
        (tmp_path / "a-file").write_text("")
        yield tmp_path / "a-file" / "out"
        return
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    yield locked / "out"
    locked.chmod(0o700)


@pytest.fixture
def a_record(tmp_path):
    record = {"s2d": {"task": "t", "condition": "system1", "mean_generated_tokens": 3.0, "model": "m",
                      "backend": "b", "n_examples": 1, "wall_seconds": 1.0},
              "lm_eval": {"results": {"s2d_t": {"exact_match,none": 0.5}}}}
    (tmp_path / "res" / "m" / "t").mkdir(parents=True)
    (tmp_path / "res" / "m" / "t" / "system1.json").write_text(json.dumps(record))
    return tmp_path / "res"


TASK = ["--task", "last_letter", "--set", "task_options.size=4", "--backend", "scripted", "--no-progress"]


@pytest.mark.parametrize("command", [
    lambda u, t, r: ["distill", *TASK, "--out-dir", u, "--no-cache"],
    lambda u, t, r: ["eval", *TASK, "--out-dir", u, "--no-cache"],
    lambda u, t, r: ["lm-eval-tasks", u],
    lambda u, t, r: ["new-plugin", "least-to-most", "--out-dir", u],
    lambda u, t, r: ["leaderboard", r, "--out-dir", u],
    lambda u, t, r: ["generate", *TASK, "--cache", u, "--out", t / "o.jsonl"],
    lambda u, t, r: ["distill", *TASK, "--cache", u, "--out-dir", t / "run"],
    lambda u, t, r: ["eval", *TASK, "--cache", u, "--out-dir", t / "eval"],
    lambda u, t, r: ["generate", *TASK, "--out", u / "o.jsonl", "--no-cache"],
], ids=["distill", "eval", "lm-eval-tasks", "new-plugin", "leaderboard", "generate --cache", "distill --cache",
        "eval --cache", "generate"])
def test_an_unwritable_output_is_one_line_before_any_work(tiny_data, tmp_path, no_model, unwritable, a_record,
                                                          command):
    """Finding 12: tracebacks, and `s2d eval` failed only after the whole evaluation."""
    out = refused(invoke(*command(unwritable, tmp_path, a_record)), unwritable)
    assert "cannot write there" in out


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_check_writable_finds_a_read_only_folder(tmp_path):
    from s2d.files import InputError, check_writable

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(InputError, match=f"cannot write there \\({locked} is not writable\\)"):
            check_writable(locked / "a" / "b", "--out-dir X")
    finally:
        locked.chmod(0o700)
    check_writable(tmp_path / "new" / "deeper", "--out-dir X")
    assert not (tmp_path / "new").exists()  # nothing is made by the check


def test_a_run_resumes_with_other_parallelism_but_not_another_context_length(tmp_path):
    """How a run is computed (processes, GPUs, GPU memory) may change between a kill and its resume;
    what it makes may not (max_model_len can cut prompts)."""
    from s2d.config import ConfigError, RunConfig
    from s2d.distill import claim
    from s2d.store import RunFolder

    def settings(**extra):
        return RunConfig.build({"task": "last_letter", **extra}).settings

    claim(RunFolder(tmp_path / "run", settings(engine_options={"tensor_parallel_size": 8}, train_processes=8)))
    claim(RunFolder(tmp_path / "run", settings(engine_options={"tensor_parallel_size": 4,
                                                               "gpu_memory_utilization": 0.5})))
    with pytest.raises(ConfigError, match="engine_options"):
        claim(RunFolder(tmp_path / "run", settings(engine_options={"max_model_len": 1024})))
    with pytest.raises(ConfigError, match=r"\(n\)"):
        claim(RunFolder(tmp_path / "run", settings(n=5)))


def test_a_run_folder_may_hold_its_own_generation_cache_but_not_lie_in_it(tiny_data, tmp_path):
    """`--out-dir RUN --cache RUN/cache` is a per-run cache (the run folder is never replaced, so
    holding it is safe); a run folder inside the cache is still refused."""
    run = tmp_path / "run"
    base = ["distill", "--task", "last_letter", "--set", "task_options.size=4", "--backend", "scripted",
            "--n", "2", "--eval-limit", "2", "--no-progress"]
    res = invoke(*base, "--out-dir", run, "--cache", run / "cache")
    assert "also an input" not in res.output, res.output
    assert (run / "config.json").is_file() and (run / "cache").is_dir()
    inside = tmp_path / "cache" / "run"
    out = refused(invoke(*base, "--out-dir", inside, "--cache", tmp_path / "cache"), inside)
    assert "is inside" in out and not inside.exists()

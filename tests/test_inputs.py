"""Bad input and unsafe outputs are refused before any work, with a message naming what is wrong;
no command destroys its own input (issue: no stale result, no lost result)."""

import json
import os
import stat

import pytest
from click.testing import CliRunner

from s2d.cli import cli


def invoke(*args):
    return CliRunner().invoke(cli, list(args))


def test_curate_and_generate_never_write_over_their_input(tiny_data, tmp_path):
    traces = tmp_path / "t.jsonl"
    traces.write_text(json.dumps({"id": "1", "task": "last_letter", "prompt": [{"role": "user", "content": "q"}],
                                  "samples": [{"response": "Final answer: ab", "answer": "ab"}]}) + "\n")
    before = traces.read_text()
    res = invoke("curate", "--traces", str(traces), "--out", str(traces))
    assert res.exit_code != 0 and "also an input" in res.output and traces.read_text() == before
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "hi"}) + "\n")
    res = invoke("generate", "--input", str(prompts), "--out", str(prompts), "--backend", "scripted")
    assert res.exit_code != 0 and "also an input" in res.output and prompts.read_text() == json.dumps({"prompt": "hi"}) + "\n"
    cache = tmp_path / "cache"
    res = invoke("generate", "--task", "last_letter", "--set", "task_options.size=4", "--backend", "scripted",
                 "--cache", str(cache), "--out", str(cache / "generations.sqlite"))
    assert res.exit_code != 0 and "also an input" in res.output


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_an_unwritable_output_is_found_before_generation(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "hi"}) + "\n")
    res = invoke("generate", "--input", str(prompts), "--out", str(locked / "o.jsonl"), "--backend", "scripted")
    assert res.exit_code != 0 and "cannot write there" in res.output


def test_check_output_refuses_inputs_folders_and_unwritable_paths(tmp_path):
    from s2d.files import InputError, check_output

    (tmp_path / "in.jsonl").write_text("x")
    with pytest.raises(InputError, match="also an input"):
        check_output(tmp_path / "in.jsonl", tmp_path / "in.jsonl")
    with pytest.raises(InputError, match="also an input"):
        check_output(tmp_path / "cache" / "x.jsonl", folders=[tmp_path / "cache"])  # need not exist yet
    with pytest.raises(InputError, match="is a folder"):
        check_output(tmp_path, None)
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="cannot write there"):
        check_output(tmp_path / "file" / "below.jsonl")  # a file where a folder should be
    assert check_output(tmp_path / "new" / "o.jsonl") == (tmp_path / "new" / "o.jsonl").resolve()


def test_pickled_weights_are_refused_on_every_engine(tmp_path):
    from s2d.models import ModelError, resolve_model

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(ModelError, match="safetensors only"):
        resolve_model(str(tmp_path))
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert resolve_model(str(tmp_path)) == str(tmp_path.resolve())


def test_vllm_never_loads_pickled_weights():
    import inspect

    from s2d.backends import vllm

    assert 'load_format="safetensors"' in inspect.getsource(vllm.VLLMBackend.__init__)


def test_the_cpu_vllm_backend_outlasts_a_long_lora_prefill_step(monkeypatch):
    """A 32k-token CPU prefill with an adapter ran past vLLM's 300 s step timeout and killed the
    engine mid-run; the backend raises the limit unless the user set one."""
    pytest.importorskip("vllm")
    import torch

    from s2d.backends.vllm import VLLMBackend

    if torch.cuda.is_available():
        pytest.skip("the limit is raised on CPU only")
    env = {k: v for k, v in os.environ.items() if k != "VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS"}
    monkeypatch.setattr(os, "environ", env)  # what the backend sets stays in this test
    VLLMBackend("unused-path")  # builds no engine until the first request
    assert int(env["VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS"]) >= 3600
    env["VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS"] = "42"
    VLLMBackend("unused-path")
    assert env["VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS"] == "42"


def test_a_plugin_calling_sys_exit_or_misspelling_a_hook_is_isolated_and_reported(tmp_path):
    from s2d.plugins import Plugins

    (tmp_path / "exits.py").write_text("import sys\nsys.exit(3)\n")
    (tmp_path / "typo.py").write_text("import s2d\n\n@s2d.hookimpl\ndef register_method(register):\n    pass\n")
    p = Plugins(load_entrypoints=False, plugins_dir=tmp_path)
    rows = {r["name"]: r for r in p.plugin_rows()}
    assert "SystemExit" in rows["exits"]["error"]
    assert "register_method" in rows["typo"]["error"]
    assert not rows.get("cot", {}).get("error")  # the others still load
    assert "cot" in {e.name for e in p.entries("methods")}


def test_the_leaderboard_names_each_record_it_skips(tmp_path):
    from s2d.report import leaderboard

    good = {"s2d": {"task": "t", "condition": "system1", "mean_generated_tokens": 3.0, "model": "m",
                    "backend": "b", "n_examples": 1, "wall_seconds": 1.0},
            "lm_eval": {"results": {"s2d_t": {"exact_match,none": 0.5}}}}
    (tmp_path / "m" / "t").mkdir(parents=True)
    (tmp_path / "m" / "t" / "system1.json").write_text(json.dumps(good))
    (tmp_path / "m" / "t" / "broken.json").write_text('{"s2d": ')
    (tmp_path / "m" / "t" / "old.json").write_text(json.dumps({"s2d": {"task": "t"}, "lm_eval": {}}))
    (tmp_path / "m" / "t" / "latin1.json").write_bytes('{"a": "caf\xe9"}'.encode("latin-1"))
    warned = []
    table, _, _ = leaderboard(tmp_path, tmp_path / "out", warn=warned.append)
    assert "system1" in table
    assert sorted(w.split(": ")[1].split("/")[-1] for w in warned) == ["broken.json", "latin1.json", "old.json"]
    assert all("leaderboard skips" in w for w in warned)


def test_published_folders_keep_their_subfolders_enterable(tmp_path):
    from s2d.files import atomic_folder

    with atomic_folder(tmp_path / "out") as tmp:
        (tmp / "sub" / "deeper").mkdir(parents=True)
        (tmp / "sub" / "deeper" / "f.txt").write_text("x")
    for d in (tmp_path / "out" / "sub", tmp_path / "out" / "sub" / "deeper"):
        assert d.stat().st_mode & stat.S_IXUSR and d.stat().st_mode & stat.S_IXOTH
    assert not (tmp_path / "out" / "sub" / "deeper" / "f.txt").stat().st_mode & stat.S_IXUSR


def test_train_refuses_another_runs_checkpoints_unless_asked(tmp_path):
    from s2d.errors import TrainerError
    from s2d.store import TRAINING_CONFIG
    from s2d.trainers.base import claim_output

    run = {"trainer": "lora", "settings": {"epochs": 3}, "seed": 0, "model": "m", "data_sha256": "aaa"}
    out = tmp_path / "out"
    claim_output(out, run)  # a new folder: claimed
    (out / "checkpoints" / "checkpoint-5").mkdir(parents=True)
    claim_output(out, run)  # the same run again: its checkpoints resume
    with pytest.raises(TrainerError, match="checkpoints of another run \\(made from other data_sha256\\)"):
        claim_output(out, {**run, "data_sha256": "bbb"})
    assert (out / "checkpoints" / "checkpoint-5").is_dir()  # nothing removed
    (out / "checkpoints" / "s2d_run.json").unlink()  # checkpoints of unknown origin
    with pytest.raises(TrainerError, match="no record of what made them"):
        claim_output(out, run)
    (out / TRAINING_CONFIG).write_text(json.dumps({"data_sha256": "zzz", "settings": {"epochs": 3}}))
    with pytest.raises(TrainerError, match="a model trained from other data or settings"):
        claim_output(out, run)
    claim_output(out, {**run, "data_sha256": "bbb"}, overwrite=True)
    assert not (out / "checkpoints" / "checkpoint-5").exists() and not (out / TRAINING_CONFIG).exists()


def test_train_checks_options_and_every_record_before_loading_a_model(tmp_path, replace):
    import s2d.models

    def no_model(*a, **k):
        raise AssertionError("the model was resolved before the inputs were checked")

    replace(s2d.models.resolve_model, no_model)
    data = tmp_path / "sft.jsonl"
    data.write_text(json.dumps({"prompt": [{"role": "user", "content": "q"}],
                                "completion": [{"role": "assistant", "content": "a"}]}) + "\n" +
                    json.dumps({"prompt": [{"role": "user", "content": "q"}],
                                "completion": [{"role": "assistant", "content": "  "}]}) + "\n")
    res = invoke("train", "--data", str(data), "--out-dir", str(tmp_path / "o"), "--set", "trainer_options.epochs=three")
    assert res.exit_code != 0 and "option 'epochs' must be int" in res.output, res.output
    res = invoke("train", "--data", str(data), "--out-dir", str(tmp_path / "o"))
    assert res.exit_code != 0 and "sft.jsonl:2: 'completion' is empty" in res.output, res.output


def test_plugin_options_are_typed_for_every_kind(tiny_data):
    from s2d.plugins import get_plugins
    from s2d.traces import build_curator, build_method

    t = get_plugins().get("tasks", "last_letter").obj(size=4)
    with pytest.raises(ValueError, match="option 'threshold' must be float"):
        build_curator("majority", t, threshold="high")
    with pytest.raises(ValueError, match="option 'shots' must be int"):
        build_method("cot", t, shots="4")
    with pytest.raises(ValueError, match="option 'learning_rate' must be a finite number"):
        get_plugins().get("trainers", "lora").obj(learning_rate=float("nan"))
    threshold = build_curator("majority", t, threshold=0).threshold  # an int where a float goes
    assert threshold == 0.0 and isinstance(threshold, float)


def test_distill_rejects_a_bad_plugin_option_before_claiming_the_folder(tiny_data, tmp_path):
    for flag in (["--set", "trainer_options.epochs=three"], ["--set", "curator_options.margin=-1"], ["--set", "task_options.size=100000"],
                 ["--backend", "bogus"], ["--n", "0"]):
        backend = [] if "--backend" in flag else ["--backend", "scripted"]
        res = invoke("distill", "--task", "last_letter", "--set", "task_options.size=4", *backend,
                     "--runs-dir", str(tmp_path), "--name", "r", *flag)
        assert res.exit_code != 0 and "Traceback" not in res.output, res.output
        assert not (tmp_path / "r").exists(), flag  # no config.json left to refuse the corrected rerun


def test_task_options_are_checked_by_name_and_type(tiny_data, tmp_path):
    from s2d.lmeval.tasks import build_task

    with pytest.raises(ValueError, match=r"task 'last_letter': unknown option\(s\) sizee; options: data_dir, seed, size"):
        build_task("last_letter", strict=True, sizee=100)
    with pytest.raises(ValueError, match="option 'size' must be int"):
        build_task("last_letter", strict=True, size="big")
    assert build_task("last_letter", version=1.0, size=4).size == 4  # lm-eval's own metadata keys pass by
    res = invoke("generate", "--task", "last_letter", "--set", "task_options.sizee=4", "--backend", "scripted",
                 "--out", str(tmp_path / "o.jsonl"))
    assert res.exit_code != 0 and "unknown option(s) sizee" in res.output
    res = invoke("distill", "--task", "last_letter", "--set", "task_options.sizee=4", "--backend", "scripted",
                 "--runs-dir", str(tmp_path), "--name", "r")
    assert res.exit_code != 0 and "unknown option(s) sizee" in res.output and not (tmp_path / "r").exists()


@pytest.mark.parametrize("flags, message", [
    (["--n", "0"], "--n"), (["--top-p", "0"], "--top-p"), (["--temperature", "nan"], "not a finite number"),
    (["--temperature", "hot"], "not a number"), (["--max-new-tokens", "0"], "--max-new-tokens"),
])
def test_generate_flags_are_checked_as_flags(tmp_path, flags, message):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "hi"}) + "\n")
    res = invoke("generate", "--input", str(prompts), "--out", str(tmp_path / "o.jsonl"), "--backend", "scripted",
                 *flags)
    assert res.exit_code == 2 and message in res.output and "p.jsonl:1" not in res.output, res.output


def test_generate_task_takes_max_new_tokens_and_refuses_stop(tiny_data, tmp_path):
    out = tmp_path / "t.jsonl"
    res = invoke("generate", "--task", "last_letter", "--set", "task_options.size=4", "--backend", "scripted",
                 "--method", "cot", "--max-new-tokens", "3", "--out", str(out), "--no-cache", "--no-progress")
    assert res.exit_code == 0, res.output
    traces = [json.loads(x) for x in out.read_text().splitlines()]
    assert all(s["total_tokens"] <= 3 for t in traces for s in t["samples"])
    res = invoke("generate", "--task", "last_letter", "--backend", "scripted", "--stop", "x", "--out", str(out))
    assert res.exit_code == 2 and "--stop goes with --input" in res.output
    res = invoke("generate", "--task", "last_letter", "--set", "task_options.size=4", "--backend", "scripted",
                 "--limit", "0", "--out", str(out))
    assert res.exit_code == 2 and "--limit" in res.output


def test_bad_input_lines_name_file_and_line_before_any_model(tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_bytes(json.dumps({"prompt": "hi"}).encode() + b"\n" + '{"prompt": "caf\xe9"}'.encode("latin-1") + b"\n")
    res = invoke("generate", "--input", str(prompts), "--out", str(tmp_path / "o.jsonl"), "--backend", "no-such")
    assert res.exit_code != 0 and "p.jsonl:2: not UTF-8" in res.output, res.output
    prompts.write_text(json.dumps({"prompt": "hi", "adapter": str(tmp_path / "nowhere")}) + "\n")
    res = invoke("generate", "--input", str(prompts), "--out", str(tmp_path / "o.jsonl"), "--backend", "no-such")
    assert res.exit_code != 0 and "p.jsonl:1: 'adapter'" in res.output and "not a PEFT adapter" in res.output
    prompts.write_text(json.dumps({"prompt": "hi", "temperature": float("nan")}) + "\n")
    res = invoke("generate", "--input", str(prompts), "--out", str(tmp_path / "o.jsonl"), "--backend", "no-such")
    assert res.exit_code != 0 and "p.jsonl:1: 'temperature' must be a finite number" in res.output


@pytest.mark.parametrize("trace, message", [
    ({"id": "1", "prompt": "q", "samples": []}, "'prompt' must be a list"),
    ({"id": "1", "prompt": [{"role": "user", "content": "q"}], "samples": {"a": 1}}, "'samples' must be a list"),
    ({"id": "1", "prompt": [{"role": "user", "content": "q"}], "samples": [{"response": 3, "answer": None}]},
     "sample 0: 'response' must be a string"),
    ({"id": None, "prompt": [], "samples": []}, "'id' must be a string"),
])
def test_traces_of_the_wrong_shape_are_an_error_naming_the_line(tmp_path, trace, message):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(trace) + "\n")
    res = invoke("curate", "--traces", str(path), "--out", str(tmp_path / "sft.jsonl"))
    assert res.exit_code != 0 and f"t.jsonl:1: {message}" in res.output and "Traceback" not in res.output


def test_method_sampling_options_are_checked(tiny_data):
    from s2d.methods.base import MethodConfigError
    from s2d.plugins import get_plugins
    from s2d.traces import build_method

    t = get_plugins().get("tasks", "last_letter").obj(size=4)
    for bad, message in (({"temperature": "hot"}, "temperature must be a finite"), ({"top_p": 0}, "top_p must be"),
                         ({"max_new_tokens": 0}, "max_new_tokens must be")):
        with pytest.raises(MethodConfigError, match=message):
            build_method("cot", t, **bad)


def test_empty_inputs_are_errors_naming_the_file(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    for args, message in ((["curate", "--traces", str(empty), "--out", str(tmp_path / "s.jsonl")], "no traces"),
                          (["generate", "--input", str(empty), "--out", str(tmp_path / "o.jsonl"),
                            "--backend", "scripted"], "no requests"),
                          (["train", "--data", str(empty), "--out-dir", str(tmp_path / "m")], "no training records")):
        res = invoke(*args)
        assert res.exit_code != 0 and "empty.jsonl" in res.output and message in res.output, res.output


def test_reproduce_and_leaderboard_reject_bad_arguments(tmp_path):
    res = invoke("reproduce", "table9")
    assert res.exit_code == 2 and "table9" in res.output
    res = invoke("reproduce", "table1", "--scale", "huge")
    assert res.exit_code == 2 and "huge" in res.output
    res = invoke("leaderboard", str(tmp_path))
    assert res.exit_code != 0 and "no s2d eval records" in res.output


def test_run_names_cannot_leave_the_runs_folder(tiny_data, tmp_path):
    res = invoke("distill", "--task", "last_letter", "--set", "task_options.size=4", "--backend", "scripted",
                 "--runs-dir", str(tmp_path / "runs"), "--name", "../../../etc/evil", "--set", "rounds=0")
    assert res.exit_code != 0 and not (tmp_path / "etc").exists() and not (tmp_path.parent / "etc").exists()
    from s2d.store import safe_name

    assert "/" not in safe_name("../../x") and not safe_name("..").startswith(".")


def test_distill_adopts_its_own_unrecorded_checkpoints_but_train_does_not(tmp_path):
    from s2d.trainers.base import TrainerError, claim_output

    run = {"trainer": "lora", "settings": {}, "seed": 0, "model": "m", "data_sha256": "a"}
    (tmp_path / "checkpoints" / "checkpoint-2").mkdir(parents=True)  # left by a version that kept no record
    with pytest.raises(TrainerError):
        claim_output(tmp_path, run)
    claim_output(tmp_path, run, adopt=True)
    assert (tmp_path / "checkpoints" / "checkpoint-2").is_dir()
    claim_output(tmp_path, run)  # recorded now: resumable by anyone with the same data


def test_few_shot_exemplars_never_show_the_same_question_under_another_id():
    from s2d.methods.cot import ChainOfThought

    class Toy:
        name = "toy"

        def docs(self, split):
            return [{"id": f"{split}-{i}", "question": f"q{i % 3}"} for i in range(6)]  # duplicates by design

        def worked_example(self, doc):
            return doc["question"], "solution"

        def question(self, doc):
            return doc["question"]

    m = ChainOfThought(Toy(), shots=2, shots_resample=True)
    for doc in Toy().docs("train"):
        for j in range(5):
            assert all(q != doc["question"] for _, (q, _) in m.exemplars(doc, j)), (doc, j)


def test_outside_a_git_checkout_nothing_prints_fatal(tmp_path, monkeypatch, capfd):
    """Issue 27 item 15: "fatal: not a git repository" came from lm-eval's own git hash (it runs
    `git describe` with its stderr on the terminal); s2d's git_commit is silent, and lm-eval gets it."""
    import shutil

    import lm_eval.evaluator

    from s2d.envinfo import git_commit, quiet_git_hash

    if shutil.which("git") is None:
        pytest.skip("no git here")
    monkeypatch.chdir(tmp_path)
    assert git_commit(tmp_path) is None and git_commit() is None
    lm_eval.evaluator.get_git_commit_hash()
    assert "fatal" in capfd.readouterr().err  # what a record printed (the cause, shown)
    with quiet_git_hash():
        assert lm_eval.evaluator.get_git_commit_hash() is None
    assert capfd.readouterr().err == ""
    assert lm_eval.evaluator.get_git_commit_hash.__module__ == "lm_eval.loggers.utils"  # restored

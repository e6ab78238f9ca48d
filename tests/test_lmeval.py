"""lm-eval integration: the task files load, `s2d eval` writes records, the leaderboard reads them,
the stock `lm_eval` CLI runs our task files, and a built wheel ships them."""

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from s2d.backends.scripted import ScriptedBackend
from s2d.cli import cli

ROOT = Path(__file__).resolve().parents[1]
TASKS = ["last_letter", "coin_flip", "triviaqa_bias", "mt_bench_judge", "gsm8k", "addition"]


def test_task_files_load_through_lm_eval(tiny_data):
    from s2d.lmeval.run import task_manager

    loaded = task_manager(metadata={"size": 4}).load([f"s2d_{t}" for t in TASKS])
    tasks = loaded["tasks"] if isinstance(loaded, dict) and "tasks" in loaded else loaded
    assert {f"s2d_{t}" for t in TASKS} <= set(tasks)


def last_letter_oracle(request, sample):
    """Answers last-letter questions correctly, except for names starting with 'M'."""
    text = request.messages[-1]["content"]
    words = text.split('"')[1].split()
    answer = "".join(w[-1] for w in words)
    return "I am not sure." if any(w.startswith("M") for w in words) else f"The answer is {answer}."


def test_evaluate_writes_records_and_leaderboard(tiny_data, tmp_path):
    from s2d.lmeval.run import evaluate
    from s2d.report import leaderboard
    from s2d.store import load_records

    backend = ScriptedBackend(script=last_letter_oracle)
    paths = evaluate(backend, model_ref="scripted", tasks=["last_letter"], limit=None, log_samples=True,
                     results_dir=str(tmp_path / "res"), task_options={"size": 4}, progress=False)
    (rec,) = load_records(tmp_path / "res")
    docs = [json.loads(line) for line in paths[0].with_suffix(".samples.jsonl").read_text().splitlines()]
    expected = sum(not any(w.startswith("M") for w in d["doc"]["words"]) for d in docs) / len(docs)
    assert rec["lm_eval"]["results"]["s2d_last_letter"]["exact_match,none"] == pytest.approx(expected)
    s = rec["s2d"]
    assert s["n_examples"] == 4 and s["condition"] == "system1" and s["backend"] == "scripted"
    assert s["mean_generated_tokens"] > 0 and s["versions"]["lm-eval"] and s["wall_seconds"] > 0
    assert len(backend.calls) == 1 and len(backend.calls[0]) == 4  # one batch for the whole task
    assert docs[0]["usage"]["generated_tokens"] > 0
    table, md, png = leaderboard(tmp_path / "res")
    assert "| scripted | system1 | scripted | 4 (size=4) |" in table and md.is_file()  # task options named
    assert png is None or png.stat().st_size > 1000

    # Records inside `s2d distill` run folders (RUN/eval/MODEL/TASK/...) are named by their run.
    for run in ("a", "b"):
        evaluate(backend, model_ref="scripted", tasks=["last_letter"], results_dir=str(tmp_path / "runs" / run / "eval"),
                 task_options={"size": 4}, progress=False)
    table, _, _ = leaderboard(tmp_path / "runs")
    assert "| scripted | system1 | a | scripted |" in table and "| scripted | system1 | b | scripted |" in table


def test_eval_names_stay_inside_the_results_dir(tiny_data, tmp_path):
    from s2d.lmeval.run import evaluate

    paths = evaluate(ScriptedBackend(), model_ref="../../escape", tasks=["gsm8k"], label="../../../etc/x",
                     results_dir=str(tmp_path / "res"), progress=False)
    assert paths[0].resolve().is_relative_to((tmp_path / "res").resolve())


def test_eval_command_reports_unknown_task_and_missing_data(tmp_path, monkeypatch):
    r = CliRunner().invoke(cli, ["eval", "--backend", "scripted", "--task", "nope"])
    assert r.exit_code == 1 and "unknown task 'nope'" in r.output
    monkeypatch.delenv("S2D_DATA_DIR", raising=False)
    r = CliRunner().invoke(cli, ["eval", "--backend", "scripted", "--task", "gsm8k", "--out-dir",
                                 str(tmp_path), "--no-progress"], env={"HF_DATASETS_OFFLINE": "1"})
    assert r.exit_code == 1 and "S2D_DATA_DIR" in r.output


def test_eval_command_reports_a_task_size_the_data_cannot_give_before_any_model_loads(tiny_data, tmp_path):
    # The tiny names list gives 20 two-name test examples; the default asks for 200. An hf backend
    # of a model folder that does not exist proves no model was loaded before the error.
    r = CliRunner().invoke(cli, ["eval", "--backend", "hf", "--model", str(tmp_path / "no-model"), "--task",
                                 "last_letter", "--out-dir", str(tmp_path / "out"), "--no-progress"])
    assert r.exit_code == 1, r.output
    assert "task 'last_letter': its test documents cannot be built: last_letter: size=200 is too large" in r.output
    assert "Traceback" not in r.output and not (tmp_path / "out").exists()


def test_wheel_ships_the_task_files(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(ROOT)], check=True)
    (wheel,) = tmp_path.glob("s2d-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for t in TASKS:
        assert f"s2d/lm_eval_tasks/s2d_{t}/s2d_{t}.yaml" in names and f"s2d/lm_eval_tasks/s2d_{t}/utils.py" in names


def test_a_source_checkout_that_was_never_installed_finds_its_task_files():
    # The package s2d.lm_eval_tasks exists only once installed (tasks/ mapped at install time); a
    # checkout on PYTHONPATH (a lent GPU machine) takes the tasks/ folder beside s2d/.
    code = ("import sys; sys.modules['s2d.lm_eval_tasks'] = None\n"
            "from s2d.lmeval.tasks import tasks_path; print(tasks_path())")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    folder = Path(out.stdout.strip())
    assert folder == ROOT / "tasks" and all((folder / f"s2d_{t}" / f"s2d_{t}.yaml").is_file() for t in TASKS)


@pytest.mark.slow
def test_s2d_eval_and_stock_lm_eval_agree_on_the_embedded_model(tiny_data, tmp_path, model_path):
    """`s2d eval --backend hf` and `lm_eval --model hf --apply_chat_template` send the same prompts:
    greedy fp32 responses match document for document."""
    r = CliRunner().invoke(cli, ["eval", "--backend", "hf", "--dtype", "float32", "--task", "last_letter",
                                 "--limit", "3", "--log-samples", "--out-dir", str(tmp_path / "s2d"),
                                 "--set", "task_options.size=4", "--no-progress"])
    assert r.exit_code == 0, r.output
    (samples,) = (tmp_path / "s2d").rglob("*.samples.jsonl")
    ours = [json.loads(line) for line in samples.read_text().splitlines()]
    assert all(o["usage"]["generated_tokens"] > 0 for o in ours)

    lm_eval = Path(sys.executable).with_name("lm_eval")
    out = subprocess.run([str(lm_eval), "--include_path", str(ROOT / "tasks"), "--tasks", "s2d_last_letter",
                          "--model", "hf", "--model_args", f"pretrained={model_path},dtype=float32",
                          "--apply_chat_template", "--limit", "3", "--metadata", json.dumps({"size": 4}),
                          "--log_samples", "--output_path", str(tmp_path / "stock")],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "s2d_last_letter" in out.stdout
    (stock_file,) = (tmp_path / "stock").rglob("samples_s2d_last_letter_*.jsonl")
    stock = {s["doc_id"]: s["resps"][0][0] for s in map(json.loads, stock_file.read_text().splitlines())}
    assert {o["doc_id"]: o["response"] for o in ours} == stock


def test_records_of_other_settings_are_never_overwritten(tiny_data, tmp_path):
    from s2d.errors import RecordExistsError
    from s2d.lmeval.run import evaluate

    def run(**kw):
        return evaluate(ScriptedBackend(script=last_letter_oracle), model_ref="scripted", tasks=["last_letter"],
                        results_dir=str(tmp_path), task_options={"size": 4}, progress=False, **kw)

    (full,) = run()
    (limited,) = run(limit=2)  # the first N documents are another condition, in another file
    assert full.name == "system1.json" and limited.name == "system1+limit=2.json"
    assert json.loads(full.read_text())["s2d"]["n_examples"] == 4
    assert run() == [full]  # the same settings again: replaced
    with pytest.raises(RecordExistsError, match=r"other settings \(seed: 0 there, 1 now\)"):
        run(seed=1)
    with pytest.raises(RecordExistsError, match="method"):
        run(label="system1", method="cot")
    assert json.loads(full.read_text())["s2d"]["method"] == "system1"
    assert run(seed=1, overwrite=True) == [full]
    with pytest.raises(ValueError, match="limit must be a positive integer"):
        run(limit=0)


def test_a_record_made_under_other_method_defaults_is_not_replaced(tiny_data, tmp_path, monkeypatch):
    """A record stores the method's resolved options; after a default changes, the same command
    would measure something else, so it is refused rather than silently replacing the record."""
    from s2d.errors import RecordExistsError
    from s2d.lmeval.run import evaluate
    from s2d.methods.cot import ChainOfThought

    def run():
        return evaluate(ScriptedBackend(script=last_letter_oracle), model_ref="scripted", tasks=["last_letter"],
                        method="cot", results_dir=str(tmp_path), task_options={"size": 4}, progress=False)

    (path,) = run()
    saved = json.loads(path.read_text())["s2d"]["identity"]
    resolved = dict(saved["method_resolved"])
    decoding = resolved.pop("decoding")
    assert saved["method_options"] == {} and resolved == ChainOfThought.options()
    assert decoding == {"reason": {"max_new_tokens": ChainOfThought.max_new_tokens["reason"], "temperature": 0.0,
                                   "top_p": 1.0}}
    defaults = ChainOfThought.options()
    monkeypatch.setattr(ChainOfThought, "options", classmethod(lambda cls: {**defaults, "shot_seed": 7}))
    with pytest.raises(RecordExistsError, match="method_resolved"):
        run()
    # Another method resolves other options too: the message names only what the user changed.
    from s2d.store import check_record

    with pytest.raises(RecordExistsError) as err:
        check_record(path, {**saved, "method": "rar1", "method_resolved": {"decoding": {}}})
    assert "(method: 'cot' there, 'rar1' now)" in str(err.value) and "method_resolved" not in str(err.value)


def test_two_runs_adapters_and_merged_folders_get_their_own_records(tmp_path, monkeypatch):
    from s2d.lmeval.run import condition_name, record_path

    monkeypatch.setenv("S2D_CACHE", str(tmp_path / "s2d"))
    names = []
    for run in ("a", "b"):
        for folder in ("adapter", "merged"):
            d = tmp_path / run / folder
            d.mkdir(parents=True)
            (d / "config.json").write_text("{}")
            (d / "model.safetensors").write_bytes(run.encode())
        names.append((condition_name("system1", str(tmp_path / run / "adapter")),
                      record_path(tmp_path / "res", str(tmp_path / run / "merged"), "last_letter", "system1")))
    assert names[0][0] != names[1][0] and names[0][0].startswith("system1+adapter-adapter-")
    assert names[0][1] != names[1][1] and names[0][1].parent.parent.name.startswith("merged-")
    assert record_path(tmp_path, "smollm2-135m", "t", "c") == tmp_path / "smollm2-135m" / "t" / "c.json"


def test_eval_refuses_a_record_in_the_way_before_any_model_loads(tiny_data, tmp_path):
    from click.testing import CliRunner

    from s2d.cli import cli

    (tmp_path / "smollm2-135m" / "last_letter").mkdir(parents=True)
    (tmp_path / "smollm2-135m" / "last_letter" / "system1.json").write_text(json.dumps(
        {"s2d": {"model": "smollm2-135m", "method": "system1", "method_options": {}, "limit": None, "seed": 7,
                 "generation": {"task_options": {"size": 4}}}}))
    res = CliRunner().invoke(cli, ["eval", "--task", "last_letter", "--out-dir", str(tmp_path),
                                   "--set", "task_options.size=4", "--backend", "scripted"])
    assert res.exit_code != 0 and "other settings (seed: 7 there, 0 now)" in res.output, res.output
    res = CliRunner().invoke(cli, ["eval", "--task", "last_letter", "--limit", "0"])
    assert res.exit_code != 0 and "--limit" in res.output


def test_committed_sample_logs_carry_metrics_prompt_answer_and_reference():
    from pathlib import Path

    files = sorted((Path(__file__).parent.parent / "results").rglob("*.samples.jsonl"))
    assert files
    for path in files:
        with open(path, encoding="utf-8") as f:
            line = json.loads(f.readline())
        assert line["metrics"] and line["prompt"] and "answer" in line and "reference" in line, path


def test_a_records_identity_names_the_weights_the_engine_loaded(tiny_data, tmp_path, monkeypatch):
    """Two runs' distilled models are both evaluated as the run's model alias; their records must
    still say which weights they scored."""
    from s2d.lmeval.run import evaluate

    monkeypatch.setenv("S2D_CACHE", str(tmp_path / "s2d"))
    ids = []
    for run in ("a", "b"):
        merged = tmp_path / run / "merged"
        merged.mkdir(parents=True)
        (merged / "config.json").write_text("{}")
        (merged / "model.safetensors").write_bytes(run.encode())
        (path,) = evaluate(ScriptedBackend(str(merged), script=last_letter_oracle), model_ref="smollm2-135m",
                           tasks=["last_letter"], results_dir=str(tmp_path / run / "eval"), label="distilled",
                           task_options={"size": 4}, progress=False)
        ids.append(json.loads(path.read_text())["s2d"]["identity"]["model_weights"])
    assert ids[0] != ids[1] and all(i.startswith("sha256:") for i in ids)


def test_committed_results_hold_no_absolute_path_of_this_machine():
    import re
    from pathlib import Path

    offenders = [str(p) for p in (Path(__file__).parent.parent / "results").rglob("*.json")
                 if re.search(r'": "/(work|root|tmp|home)/', p.read_text(encoding="utf-8"))]
    assert not offenders, offenders[:5]


def test_new_records_hold_no_absolute_path(tiny_data, tmp_path):
    from s2d.lmeval.run import evaluate

    (path,) = evaluate(ScriptedBackend(script=last_letter_oracle), model_ref="scripted", tasks=["last_letter"],
                       results_dir=str(tmp_path / "run" / "eval"), task_options={"size": 4}, progress=False)
    text = path.read_text()
    assert '"/work/' not in text and '"/root/' not in text and "tasks/s2d_last_letter" in text


def test_records_name_s2ds_task_files_by_their_place_in_s2d_wherever_it_is_installed(tiny_data, tmp_path,
                                                                                     monkeypatch):
    """A wheel (or an editable install that serves another checkout) keeps the task files outside
    the repository: lm-eval's absolute config_source still becomes ``tasks/...``."""
    import shutil

    import s2d.lmeval.run as run
    from s2d.lmeval.tasks import tasks_path

    elsewhere = tmp_path / "site-packages" / "s2d" / "lm_eval_tasks"
    shutil.copytree(tasks_path(), elsewhere)
    monkeypatch.setattr(run, "tasks_path", lambda: str(elsewhere))
    (path,) = run.evaluate(ScriptedBackend(script=last_letter_oracle), model_ref="scripted", tasks=["last_letter"],
                           results_dir=str(tmp_path / "run" / "eval"), task_options={"size": 4}, progress=False)
    text = path.read_text()
    assert str(tmp_path) not in text and '"config_source": "tasks/s2d_last_letter/' in text

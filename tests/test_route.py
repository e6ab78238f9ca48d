"""`route` (System 1 first, System 2 when unsure) and `s2d route`, on the scripted backend: the
routing decision, token counting over both stages, the threshold sweep and pick, and the lm-eval
score of the pick reusing every generation through the cache."""

import json
import math

import pytest

from s2d.backends.scripted import ScriptedBackend
from s2d.config import RunConfig
from s2d.methods.base import MethodConfigError, run_method
from s2d.traces import build_method, make_runner

TASK_OPTIONS = {"words_per_example": 1, "size": 8}


def oracle(request, sample):
    """The distilled model (an adapter) answers in one word: right and sure for names without an
    'a', wrong and unsure otherwise. System 2 (no adapter) reasons and is always right."""
    text = request.messages[-1]["content"]
    word = text.split('"')[1]
    if request.adapter:
        if "a" in word.lower():
            return {"text": "zz", "logprob": -3.0}
        return {"text": word[-1].lower(), "logprob": -0.05}
    return f"The last letter of {word} is {word[-1]}. Final answer: {word[-1].lower()}"


@pytest.fixture
def run_folder(tmp_path, tiny_data):
    folder = tmp_path / "run"
    (folder / "adapter").mkdir(parents=True)
    (folder / "adapter" / "adapter_config.json").write_text(json.dumps({"r": 4, "peft_type": "LORA"}))
    cfg = RunConfig.build({"task": "last_letter", "task_options": TASK_OPTIONS, "method": "cot",
                           "backend": "scripted"})
    (folder / "config.json").write_text(json.dumps({"settings": cfg.settings}))
    (folder / "summary.json").write_text(json.dumps({"rows": [
        {"condition": "system1", "score": 0.0, "mean_tokens": 3.0},
        {"condition": "system2-cot", "score": 1.0, "mean_tokens": 12.0},
        {"condition": "distilled", "score": 0.5, "mean_tokens": 1.0}]}))
    return folder


def task():
    from s2d.lmeval.tasks import build_task

    return build_task("last_letter", **TASK_OPTIONS)


def test_route_answers_directly_when_sure_and_counts_both_stages_otherwise(run_folder):
    t = task()
    docs = t.docs("test")
    backend = ScriptedBackend(script=oracle)
    method = build_method("route", t, from_run=str(run_folder), threshold=-1.0)
    samples = run_method(method, make_runner(backend, "route"), docs)
    for doc, (s,) in zip(docs, samples):
        sure = "a" not in doc["words"][0].lower()
        assert s["route"] == ("system1" if sure else "system2")
        assert s["answer"] == doc["answer"]  # sure ones are right; the rest System 2 gets right
        assert s["confidence"] == pytest.approx(-0.05 if sure else -3.0)
        assert [st["stage"] for st in s["stages"]] == (["direct"] if sure else ["direct", "reason"])
        assert s["total_tokens"] == sum(st["tokens"] for st in s["stages"])  # every stage's tokens count
    # The direct stage ran with the run's adapter, the fallback with the base weights.
    adapters = {r.adapter for call in backend.calls for r in call}
    assert adapters == {str(run_folder / "adapter"), None}

    with pytest.raises(MethodConfigError, match="drop --adapter"):  # the student comes from the run
        run_method(method, make_runner(backend, "route", adapter=str(run_folder / "adapter")), docs)

    agree = build_method("route", t, from_run=str(run_folder), threshold=0.5, confidence="agreement", samples=3)
    (s,), *_ = run_method(agree, make_runner(backend, "route"), docs[:1])
    assert s["confidence"] == 1.0 and [st["stage"] for st in s["stages"]] == ["check"] * 3 + ["direct"]


def test_route_options_are_checked():
    with pytest.raises(MethodConfigError, match="set threshold"):
        build_method("route", object(), adapter="a", fallback="cot")
    with pytest.raises(MethodConfigError, match="confidence must be one of"):
        build_method("route", object(), adapter="a", fallback="cot", threshold=0, confidence="vibes")
    with pytest.raises(MethodConfigError, match="not a `s2d distill` run folder"):
        build_method("route", object(), from_run="/nonexistent", threshold=0)


def test_s2d_route_picks_the_cheapest_threshold_within_a_point_and_lm_eval_agrees(run_folder, tmp_path, replace):
    import s2d.backends
    from s2d.routing import candidate_thresholds, choose, curve, route_run

    backend = ScriptedBackend(script=oracle)
    replace(s2d.backends.load_backend, lambda *a, **k: backend)
    out = tmp_path / "route"
    result = route_run(run_folder, out_dir=out, cache=tmp_path / "cache", progress=False, echo=lambda m: None)
    docs = task().docs("test")
    sure = sum("a" not in d["words"][0].lower() for d in docs) / len(docs)
    assert 0 < sure < 1
    chosen = result["chosen"]
    assert -3.0 < chosen["threshold"] <= -0.05 and chosen["accuracy"] == 1.0  # unsure ones go to System 2
    at = result["test_at_chosen"]
    assert at["accuracy"] == 1.0 and at["to_system2"] == pytest.approx(1 - sure)
    ends = {p["threshold"]: p for p in result["test_curve"]}
    assert ends[-math.inf]["accuracy"] == pytest.approx(sure) and ends[math.inf]["to_system2"] == 1.0
    assert ends[-math.inf]["mean_tokens"] < at["mean_tokens"] < ends[math.inf]["mean_tokens"]
    # The pick, scored through lm-eval, is the curve's point, and generated nothing new.
    e = result["through_lm_eval"]
    assert e["score"] == pytest.approx(at["accuracy"]) and e["mean_tokens"] == pytest.approx(at["mean_tokens"])
    record = json.loads((out / e["record"]).read_text())
    assert record["s2d"]["condition"] == "route" and record["s2d"]["samples_generated"] == 0
    assert (out / "routing.md").is_file() and "route (t=" in (out / "routing.md").read_text()

    rows = [{"confidence": c, "direct": d, "system2": 1.0, "direct_tokens": 1, "system2_tokens": 10}
            for c, d in [(-0.1, 1.0), (-0.2, 1.0), (-0.3, 0.0), (None, 0.0)]]
    points = curve(rows, candidate_thresholds(rows))
    assert [p["accuracy"] for p in points] == [0.75, 0.75, 1.0, 1.0, 1.0]  # no confidence: always System 2
    assert choose(points, 0.0)["threshold"] == -0.2 and choose(points, 0.3)["threshold"] == -math.inf

    from s2d.report import leaderboard

    _, _, png = leaderboard(out)  # the route record and its curve
    assert png is None or png.stat().st_size > 1000


@pytest.mark.slow
def test_s2d_route_on_the_real_model_reuses_every_generation_in_lm_eval(model_path, random_adapter, tmp_path,
                                                                        tiny_data):
    """The real engine end to end: logprob confidences from the adapter, System 2 from the base
    weights, and the chosen threshold scored through lm-eval from the cache alone."""
    import importlib.util

    from s2d.routing import route_run

    backend = "vllm" if importlib.util.find_spec("vllm") else "hf"
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "adapter").symlink_to(random_adapter, target_is_directory=True)
    cfg = RunConfig.build({"task": "last_letter", "task_options": TASK_OPTIONS, "method": "cot",
                           "backend": backend, "model": model_path})
    (folder / "config.json").write_text(json.dumps({"settings": cfg.settings}))
    out = tmp_path / "route"
    result = route_run(folder, out_dir=out, cache=tmp_path / "cache", progress=False, echo=lambda m: None)
    confidences = [p["threshold"] for p in result["tune_curve"]][1:-1]
    assert confidences and all(-20 < c < 0 for c in confidences)  # mean token log-probabilities
    e, at = result["through_lm_eval"], result["test_at_chosen"]
    assert e["score"] == pytest.approx(at["accuracy"]) and e["mean_tokens"] == pytest.approx(at["mean_tokens"])
    record = json.loads((out / e["record"]).read_text())
    assert record["s2d"]["samples_generated"] == 0 and record["s2d"]["samples_from_cache"] > 0


def test_s2d_route_command_runs_with_the_default_cache(run_folder, tmp_path, replace):
    """The command as a user types it: the cache on (the default folder), the scripted backend
    (issue 27 item 11: the CLI opened the cache and route_run opened it again, a TypeError)."""
    from click.testing import CliRunner

    import s2d.backends
    from s2d.cli import cli

    backend = ScriptedBackend(script=oracle)
    replace(s2d.backends.load_backend, lambda *a, **k: backend)
    out = tmp_path / "route"
    res = CliRunner().invoke(cli, ["route", str(run_folder), "--out-dir", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert (out / "routing.json").is_file() and "Routing: last_letter" in res.output
    rerun = CliRunner().invoke(cli, ["route", str(run_folder), "--out-dir", str(out), "--no-progress"])
    assert rerun.exit_code == 0, rerun.output
    record = json.loads((out / json.loads((out / "routing.json").read_text())["through_lm_eval"]["record"]).read_text())
    assert record["s2d"]["samples_generated"] == 0 and record["s2d"]["samples_from_cache"] > 0  # the cache served it

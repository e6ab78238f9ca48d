"""Method plugins: one batched backend call per stage, fan-out, templates, and the real model."""

import json

import pytest

from s2d.backends.scripted import ScriptedBackend
from s2d.methods.base import MethodConfigError, run_method
from s2d.plugins import get_plugins
from s2d.traces import build_method, generate_traces, make_runner


def judge_script(request, sample):
    """Stage-aware replies, so every method's parsing has something real to parse."""
    text = request.messages[-1]["content"]
    if "list up to five criteria" in text:
        return "1. Accuracy: is it correct\n2. Clarity: is it clear\n3. Accuracy: duplicate"
    if "one criterion only" in text:
        return "A is better here. Assistant A: 4/5, Assistant B: 2/5"
    if "[[A]]" in text:
        return "A is better overall.\n[[A]]"
    if ("Rewrite this" in text or "Copy out only" in text) and not text.startswith("REWRITTEN"):
        return f"REWRITTEN({sample}) " + text.split("\n")[0] + " " + text.split("\n")[-1]
    if "Solution:" in text and "Final answer" in text and "coin" not in text:  # CoT on GSM8k: a number
        return "Some reasoning: 3 steps.\nFinal answer: 3"
    return "Some reasoning: 3 steps.\nFinal answer: yes"


SMALL = {"last_letter": {"size": 4}, "coin_flip": {"train_size": 8, "validation_size": 4}}


def task(name):
    return get_plugins().get("tasks", name).obj(**SMALL.get(name, {}))


CASES = [("system1", "last_letter"), ("cot", "gsm8k"), ("rar1", "coin_flip"), ("rar2", "last_letter"),
         ("s2a", "triviaqa_bias"), ("bsm", "mt_bench_judge")]


@pytest.mark.parametrize("method_name,task_name", CASES)
def test_each_stage_is_one_batched_call(tiny_data, method_name, task_name):
    t = task(task_name)
    docs = t.docs("test")[:3]
    m = build_method(method_name, t)
    backend = ScriptedBackend(script=judge_script)
    per_doc = run_method(m, make_runner(backend, method_name), docs)
    assert len(backend.calls) == len(m.stages)  # never a call per example
    # Identical prompts (BSM's branch for both orders of a pair) are generated once.
    assert len(backend.calls[0]) == len({json.dumps(r.messages) for r in backend.calls[0]}) >= 2
    for doc, samples in zip(docs, per_doc):
        assert len(samples) == 1
        s = samples[0]
        assert [st["stage"] for st in s["stages"]][-1] == m.stages[-1]
        assert set(s["tokens"]) == set(m.stages)
        assert s["total_tokens"] == sum(st["tokens"] for st in s["stages"]) > 0
        assert s["answer"] == t.extract(s["response"]) is not None


def test_bsm_fans_in_criteria_and_parses_verdict(tiny_data):
    t = task("mt_bench_judge")
    docs = t.docs("test")[:2]
    backend = ScriptedBackend(script=judge_script)
    per_doc = run_method(build_method("bsm", t), make_runner(backend, "bsm"), docs)
    # Both orders share the question (one branch prompt) and, with this script, the same merge input;
    # the solve call holds 2 distinct criteria x 2 orders.
    assert [len(c) for c in backend.calls] == [1, 4, 1]
    s = per_doc[0][0]
    assert [st["stage"] for st in s["stages"]] == ["branch", "solve", "solve", "merge"]
    assert s["answer"] == "A"
    assert "Criterion: Accuracy" in s["stages"][-1]["prompt"] and "Criterion: Clarity" in s["stages"][-1]["prompt"]


def test_samples_fan_out_across_stages(tiny_data):
    t = task("coin_flip")
    docs = t.docs("test")[:2]
    backend = ScriptedBackend(script=judge_script)
    m = build_method("rar2", t, n=3, respond_n=2)
    per_doc = run_method(m, make_runner(backend, "rar2"), docs)
    assert [len(s) for s in per_doc] == [6, 6]
    assert [len(c) for c in backend.calls] == [2, 6]
    assert all(r.n == 3 for r in backend.calls[0]) and all(r.n == 2 for r in backend.calls[1])
    assert all(r.temperature == 0.7 for c in backend.calls for r in c)  # n > 1 samples by default
    rephrasings = {s["stages"][0]["text"] for s in per_doc[0]}
    assert len(rephrasings) == 3


def test_templates_are_overridable_and_checked(tiny_data):
    t = task("coin_flip")
    m = build_method("rar2", t, templates={"respond@coin_flip": "Q: {rephrased} -- yes or no?",
                                           "respond@gsm8k": "never used here {rephrased}"})
    backend = ScriptedBackend(script=judge_script)
    run_method(m, make_runner(backend, "rar2"), t.docs("test")[:1])
    assert backend.calls[1][0].messages[0]["content"].endswith("-- yes or no?")
    with pytest.raises(MethodConfigError, match="no stage 'answer'"):
        build_method("rar2", t, templates={"answer": "x"})
    with pytest.raises(MethodConfigError, match="unknown option"):
        build_method("rar2", t, shots=3)
    with pytest.raises(MethodConfigError, match=r"\{nope\}"):  # when built, before any generation
        build_method("rar2", t, templates={"respond": "{nope}"})


def test_few_shot_cot_uses_worked_train_examples(tiny_data):
    t = task("last_letter")
    m = build_method("cot", t, shots=2)
    backend = ScriptedBackend(script=judge_script)
    run_method(m, make_runner(backend, "cot"), t.docs("test")[:1])
    msgs = backend.calls[0][0].messages
    assert [x["role"] for x in msgs] == ["user", "assistant", "user", "assistant", "user"]
    assert msgs[1]["content"].endswith("Final answer: " + msgs[1]["content"].rsplit(" ", 1)[-1])
    train_questions = {d["question"] for d in t.docs("train")}
    assert msgs[0]["content"].split("\n")[0].removeprefix("Question: ") in train_questions


def test_bsm_needs_a_pairwise_task(tiny_data):
    with pytest.raises(MethodConfigError, match="answer_a"):
        run_method(build_method("bsm", task("gsm8k")), make_runner(ScriptedBackend(), "bsm"), task("gsm8k").docs("test"))


def test_traces_with_perturbation(tiny_data):
    t = task("mt_bench_judge")
    docs = t.docs("test")[::2]  # one order of each pair: the perturbation is the other
    traces, stats = generate_traces(ScriptedBackend(script=judge_script), t, build_method("system1", t), docs,
                                    split="test", perturb=True)
    assert stats["generated"] == 4
    assert traces[0]["perturbed"]["id"] == docs[0]["id"] + "-swapped"
    assert traces[0]["perturbed"]["prompt"][0]["content"] != traces[0]["prompt"][0]["content"]
    assert traces[0]["prompt"][0]["content"] == t.system1_prompt(docs[0])


def test_eval_scores_a_method_through_lm_eval(tiny_data, tmp_path):
    from s2d.lmeval.run import evaluate

    def script(request, sample):
        text = request.messages[-1]["content"]
        return "Rewritten: " + text.split("\n")[0] if "Rewrite this" in text else "Final answer: ny"

    backend = ScriptedBackend(script=script)
    [path] = evaluate(backend, model_ref="scripted", tasks=["last_letter"], method="rar2", limit=3,
                      results_dir=str(tmp_path), log_samples=True, progress=False, task_options={"size": 4})
    rec = json.loads(path.read_text())
    assert rec["s2d"]["method"] == "rar2" and path.stem == "rar2+limit=3"
    assert set(rec["s2d"]["mean_generated_tokens_by_stage"]) == {"rephrase", "respond"}
    by_stage = rec["s2d"]["mean_generated_tokens_by_stage"]
    assert rec["s2d"]["mean_generated_tokens"] == pytest.approx(sum(by_stage.values()))
    assert [len(c) for c in backend.calls] == [3, 3]  # one call per stage for all documents
    lines = [json.loads(x) for x in path.with_suffix(".samples.jsonl").read_text().splitlines()]
    assert lines[0]["response"] == "Final answer: ny" and set(lines[0]["usage"]["stages"]) == {"rephrase", "respond"}
    # A complete sample log: prompt, every stage's text, parsed answer, reference and the metrics.
    docs = get_plugins().get("tasks", "last_letter").obj(size=4).docs("test")
    for line, doc in zip(lines, docs):
        assert line["prompt"].startswith(doc["question"]) and [s["stage"] for s in line["stages"]] == ["rephrase", "respond"]
        assert line["stages"][0]["text"].startswith("Rewritten: ") and line["answer"] == "ny"
        assert line["reference"] == doc["answer"]
        assert line["metrics"] == {"exact_match": float(doc["answer"] == "ny")}


def test_eval_majority_at_test_time_counts_every_sample(tiny_data, tmp_path):
    from s2d.lmeval.run import evaluate

    backend = ScriptedBackend(script={"*": ["Final answer: 2", "Final answer: 3", "Final answer: 3"]})
    [path] = evaluate(backend, model_ref="scripted", tasks=["gsm8k"], method="cot", limit=2, progress=False,
                      results_dir=str(tmp_path), method_options={"n": 3})
    rec = json.loads(path.read_text())
    assert path.stem == "cot+n=3+limit=2"
    assert rec["lm_eval"]["results"]["s2d_gsm8k"]["exact_match,none"] == 0.5  # gold answers 2 and 3; the majority says 3
    assert rec["s2d"]["mean_generated_tokens"] == pytest.approx(3 * 3)


@pytest.mark.slow
def test_every_method_on_the_embedded_model(tiny_data, model_path):
    """The real model through the real engine: every stage runs, parsing works, tokens per stage."""
    from s2d.backends import load_backend

    with load_backend("hf", model_path) as backend:
        for method_name, task_name in CASES:
            t = task(task_name)
            docs = t.docs("test")[:2]
            budget = {s: 48 if s == "branch" else 12 for s in get_plugins().get("methods", method_name).obj.stages}
            m = build_method(method_name, t, max_new_tokens=budget)
            per_doc = run_method(m, make_runner(backend, method_name, progress=False), docs)
            for samples in per_doc:
                s = samples[0]
                assert set(s["tokens"]) == set(m.stages), method_name
                assert all(st["tokens"] > 0 for st in s["stages"]), method_name
                assert all(st["prompt_tokens"] > 0 for st in s["stages"])
                # The response is the last stage's text, and each later stage saw the earlier output.
                assert s["response"] == s["stages"][-1]["text"] and s["response"].strip(), method_name
                if method_name in ("rar2", "s2a"):
                    assert s["stages"][0]["text"].strip()[:20] in s["stages"][1]["prompt"], method_name


def test_cot_shots_resample_gives_each_sample_its_own_exemplars(tiny_data):
    t = get_plugins().get("tasks", "last_letter").obj(size=8, words_per_example=1)
    docs = t.docs("train")

    def run(**options):
        m = build_method("cot", t, shots=2, n=4, temperature=0, **options)
        backend = ScriptedBackend(script=lambda r, s: "Final answer: x")
        traces, _ = generate_traces(backend, t, m, docs, split="train")
        return backend, traces

    backend, traces = run(shots_resample=True)
    assert len(backend.calls) == 1 and len(backend.calls[0]) == len(docs) * 4  # one batched call, n=1 each
    assert all(r.n == 1 for r in backend.calls[0])
    for tr in traces:
        sets = [tuple(s["exemplars"]) for s in tr["samples"]]
        assert len(set(sets)) > 1  # the samples' prompts differ
        assert all(tr["id"] not in s for s in sets)  # never the input's own worked example (its answer)
        assert all(len(s) == 2 for s in sets)
    # Deterministic for a seed; another shot_seed draws other sets; sample 0 keeps the plain set.
    assert run(shots_resample=True)[1] == traces
    assert run(shots_resample=True, shot_seed=5)[1] != traces
    plain = run()[1]
    assert all(len({tuple(s["exemplars"]) for s in tr["samples"]}) == 1 for tr in plain)
    # The test split's System 2 prompt (one sample) is the same with or without resampling.
    test_doc = t.docs("test")[0]
    assert build_method("cot", t, shots=2, shots_resample=True).messages(test_doc) == \
        build_method("cot", t, shots=2).messages(test_doc)


def test_rar2_paper_wording_asks_the_rephrased_question_alone(tiny_data):
    # v1 Fig. 4 (the rephrasing alone) and Fig. 5 (one space, then the Yes/No instruction).
    for name, tail in (("last_letter", ""), ("coin_flip", " Answer the Yes or No question.")):
        t = task(name)
        backend = ScriptedBackend(script=lambda r, s: "REPHRASED")
        run_method(build_method("rar2", t, wording="paper"), make_runner(backend, "rar2"), t.docs("test")[:1])
        assert backend.calls[1][0].messages[-1]["content"] == "REPHRASED" + tail
        backend = ScriptedBackend(script=lambda r, s: "REPHRASED")
        run_method(build_method("rar2", t), make_runner(backend, "rar2"), t.docs("test")[:1])
        assert "Final answer: <answer>" in backend.calls[1][0].messages[-1]["content"]
    with pytest.raises(MethodConfigError, match="wording must be"):
        build_method("rar2", task("last_letter"), wording="both")


def test_fewshot_is_system1_after_answer_only_train_exemplars(tiny_data):
    """The paper's GSM8k System 1 row (8-shot, no CoT): exemplars are train questions in the System 1
    prompt answered by the final-answer line only; an input never sees its own answer; system1's
    identity (its resolved options) is untouched by the new method."""
    from s2d.traces import resolved_method_options

    t = task("gsm8k")
    assert resolved_method_options("fewshot", {})["shots"] == 8  # the paper's k
    assert "shots" not in resolved_method_options("system1", {})
    m = build_method("fewshot", t, shots=3)
    backend = ScriptedBackend(script=judge_script)
    train = t.docs("train")
    run_method(m, make_runner(backend, "fewshot"), train[:1])
    msgs = backend.calls[0][0].messages
    assert [x["role"] for x in msgs] == ["user", "assistant"] * 3 + ["user"]
    answers = {d["question"]: d["answer"] for d in train}
    for user, assistant in zip(msgs[0:6:2], msgs[1:6:2]):
        question = user["content"].split("\nGive only")[0]
        assert assistant["content"] == f"Final answer: {answers[question]}"  # the answer alone, no reasoning
        assert question != train[0]["question"]  # never its own answer
    assert msgs[-1]["content"] == t.system1_prompt(train[0])
    with pytest.raises(MethodConfigError, match="fewshot shots=9"):
        build_method("fewshot", t, shots=9)  # 6 train problems: too few for 9 shots + a spare

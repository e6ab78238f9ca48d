"""Faithful measurement: per-stage decoding reaches the engine and the cache key, the `response`
target is the kept sample's last stage only, and records count responses cut by the token cap."""

import json

import pytest

from s2d.backends.scripted import ScriptedBackend
from s2d.cache import GenerationCache
from s2d.curators.base import Decision
from s2d.methods.base import MethodConfigError, run_method
from s2d.plugins import get_plugins
from s2d.traces import build_curator, build_method, make_runner


def task(name, **options):
    return get_plugins().get("tasks", name).obj(**options)


def test_stage_options_reach_the_backend_and_the_cache_key(tiny_data, tmp_path):
    t = task("last_letter", size=4)
    docs = t.docs("test")[:2]
    options = {"n": 3, "temperature": 0.7,
               "stage_options": {"rephrase": {"temperature": 0.9, "top_p": 0.8, "max_new_tokens": 40},
                                 "respond": {"temperature": 0, "max_new_tokens": 50}}}
    m = build_method("rar2", t, **options)
    backend = ScriptedBackend()
    cache = GenerationCache(tmp_path / "cache")
    run_method(m, make_runner(backend, "rar2", cache=cache), docs)
    rephrase, respond = backend.calls
    assert {(r.temperature, r.top_p, r.max_new_tokens, r.n) for r in rephrase} == {(0.9, 0.8, 40, 3)}
    # Greedy step 2: top-p plays no part when nothing is sampled.
    assert {(r.temperature, r.top_p, r.max_new_tokens) for r in respond} == {(0.0, 1.0, 50)}
    assert m.decoding() == {"rephrase": {"temperature": 0.9, "top_p": 0.8, "max_new_tokens": 40},
                            "respond": {"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 50}}
    # Another cap is another cache key: nothing is reused.
    again = ScriptedBackend()
    m2 = build_method("rar2", t, **{**options, "stage_options": {**options["stage_options"],
                                                                  "respond": {"temperature": 0, "max_new_tokens": 51}}})
    run_method(m2, make_runner(again, "rar2", cache=cache), docs)
    assert len(again.calls) == 1 and again.calls[0][0].max_new_tokens == 51  # step 1 reused, step 2 new
    # Traces name each stage's decoding.
    from s2d.traces import generate_traces

    traces, _ = generate_traces(ScriptedBackend(), t, m, docs, split="test", cache=cache)
    assert traces[0]["decoding"] == m.decoding() and traces[0]["wording"] == "s2d"
    # And the resolved decoding is what records and run folders store.
    from s2d.traces import resolved_method_options

    assert resolved_method_options("rar2", options)["decoding"]["rephrase"]["max_new_tokens"] == 40


@pytest.mark.parametrize("bad,match", [
    ({"nope": {"temperature": 1}}, "no such stage"),
    ({"rephrase": {"temp": 1}}, "unknown key"),
    ({"rephrase": {"temperature": -1}}, "temperature must be"),
    ({"rephrase": {"top_p": 0}}, "top_p must be"),
    ({"respond": {"max_new_tokens": 0}}, "max_new_tokens must be"),
    ({"respond": 5}, "must be a mapping"),
])
def test_bad_stage_options_name_the_stage_and_key(tiny_data, bad, match):
    with pytest.raises(MethodConfigError, match=match):
        build_method("rar2", task("last_letter", size=4), stage_options=bad)


def trace(samples):
    return {"id": "x", "task": "last_letter", "method": "rar2", "reference": "ab",
            "prompt": [{"role": "user", "content": "Q"}], "samples": samples}


def sample(answer, response):
    return {"answer": answer, "response": response, "total_tokens": 3,
            "stages": [{"stage": "rephrase", "text": "REPHRASED " + response}, {"stage": "respond", "text": response}]}


@pytest.mark.parametrize("curator", ["majority", "none", "perturb"])
def test_response_target_is_the_agreeing_samples_last_stage(tiny_data, curator):
    t = task("last_letter", size=4)
    samples = [sample("zz", "wrong: zz"), sample("ab", "Reasoning... Final answer: ab"),
               sample("ab", "other text, ab"), sample("ab", "third ab")]
    tr = trace(samples if curator != "none" else samples[1:])
    if curator == "perturb":
        tr["perturbed"] = {"prompt": [{"role": "user", "content": "Q swapped"}], "samples": samples}
    (d,) = build_curator(curator, t, target="response").curate([tr])
    assert isinstance(d, Decision) and d.kept and d.answer == "ab"
    for _, completion in d.examples:
        # The final stage of a sample that gave the kept answer; never the rephrasing, never "zz".
        assert completion == "Reasoning... Final answer: ab"
    (d,) = build_curator(curator, t).curate([tr])
    assert all(c == "ab" for _, c in d.examples)  # target: answer (default)


def test_an_unknown_target_is_refused(tiny_data):
    from s2d.config import ConfigError

    for curator in ("majority", "none", "perturb"):
        with pytest.raises(ConfigError, match="option 'target' must be one of answer, response, got 'reasoning'"):
            build_curator(curator, task("last_letter", size=4), target="reasoning")


def test_records_count_responses_cut_by_the_cap_and_eval_warns(tiny_data, tmp_path):
    from s2d.lmeval.run import evaluate

    calls = []

    def script(request, sample):  # every other document rambles past any small cap
        calls.append(1)
        return "word " * 200 if len(calls) % 2 else "Final answer: ab"

    warnings = []
    (path,) = evaluate(ScriptedBackend(script=script), model_ref="scripted", tasks=["last_letter"], method="cot",
                       results_dir=str(tmp_path), task_options={"size": 4}, progress=False, log_samples=True,
                       method_options={"stage_options": {"reason": {"max_new_tokens": 20}}}, warn=warnings.append)
    s2d = json.loads(path.read_text())["s2d"]
    lines = [json.loads(x) for x in path.with_suffix(".samples.jsonl").read_text().splitlines()]
    cut = sum(x["usage"]["finish_reason"] == "length" for x in lines)
    assert 0 < cut < len(lines)
    assert s2d["cap_hit_share"] == cut / len(lines) == s2d["cap_hit_share_by_stage"]["reason"]
    assert s2d["cap_hits_by_stage"]["reason"] == {"hit": cut, "steps": len(lines)}
    assert len(warnings) == 1 and "'reason'" in warnings[0] and "token cap" in warnings[0]
    assert s2d["identity"]["method_resolved"]["decoding"]["reason"]["max_new_tokens"] == 20


def test_usc_response_target_is_an_agreeing_samples_text(tiny_data):
    """USC writes the answer; target: response trains on the sample that gives it, never another."""
    from s2d.curators.usc import UniversalSelfConsistency

    class Runner:  # USC's own call: one reply per input
        def stage(self, name, chains, prompts, **kw):
            from s2d.stages import Step

            return [[c.then(Step("usc", p, "Most answers say so.\nFINAL: A. A. Milne", 5, 5, "stop"))]
                    for c, p in zip(chains, prompts)]

    t = task("triviaqa_bias")
    samples = [{"answer": "Roald Dahl wrote it.", "response": "Roald Dahl wrote it."},
               {"answer": "x", "response": "It was A.A. Milne, the author of Winnie-the-Pooh."},
               {"answer": "y", "response": "Milne."}]
    tr = {"id": "q", "prompt": [{"role": "user", "content": "Who?"}], "samples": samples}
    (d,) = UniversalSelfConsistency(t, target="response").curate([tr], Runner())
    assert d.kept and d.examples[0][1] == "It was A.A. Milne, the author of Winnie-the-Pooh."
    (d,) = UniversalSelfConsistency(t).curate([tr], Runner())
    assert d.examples[0][1] == "A. A. Milne"
    tr["samples"] = samples[:1]  # nobody agrees: no target rather than a disagreeing one
    (d,) = UniversalSelfConsistency(t, target="response").curate([tr], Runner())
    assert not d.kept and d.reason == "usc_no_agreeing_sample"


@pytest.mark.slow
@pytest.mark.parametrize("method,task_name,wording", [("rar2", "last_letter", "paper"), ("rar1", "coin_flip", "original"),
                                                      ("cot", "last_letter", "paper"), ("bsm", "mt_bench_judge", "paper")])
def test_each_wording_runs_on_the_embedded_model(tiny_data, tmp_path, method, task_name, wording):
    """The real 135M model through `s2d eval --limit 3`: the record names the wording, each stage's
    decoding and the share of responses the cap cut, per stage."""
    from click.testing import CliRunner

    from s2d.cli import cli

    args = ["eval", "--backend", "hf", "--task", task_name, "--method", method, "--limit", "3", "--no-progress",
            "--log-samples", "--out-dir", str(tmp_path / "out"), "--set", f"method_options.wording={wording}",
            # small caps keep the test short; the point is that the record counts what they cut
            "--set", "method_options.max_new_tokens=24"]
    if method == "bsm":
        args += ["--set", "method_options.merge=average", "--set", "method_options.max_criteria=2"]
    if task_name == "last_letter":
        args += ["--set", "task_options.size=4"]  # the test data's names list is short
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    (path,) = list((tmp_path / "out").rglob("*.json"))
    s2d = json.loads(path.read_text())["s2d"]
    assert f"wording={wording}" in s2d["condition"] and s2d["method_options"]["wording"] == wording
    m = build_method(method, task(task_name, **({"size": 4} if task_name == "last_letter" else {})),
                     wording=wording, max_new_tokens=24, **({"merge": "average", "max_criteria": 2} if method == "bsm" else {}))
    assert set(s2d["cap_hit_share_by_stage"]) == set(m.stages)
    if method == "bsm":  # the averaged merge is computed, never cut
        assert s2d["cap_hit_share_by_stage"]["merge"] == 0
    assert all(0 <= v <= 1 for v in s2d["cap_hit_share_by_stage"].values())
    assert s2d["identity"]["method_resolved"]["decoding"] == json.loads(json.dumps(m.decoding()))
    lines = [json.loads(x) for x in path.with_suffix(".samples.jsonl").read_text().splitlines()]
    # The first stage's prompt holds the wording's template text (its longest literal part).
    import re

    literal = max(re.split(r"\{[^}]*\}", m.template(m.stages[0])), key=len).strip()
    assert literal and literal in lines[0]["stages"][0]["prompt"]
    if method == "bsm":
        assert set(s2d["method_stats"]) == {"solve_scores_parsed", "verdict_parsed"}



@pytest.mark.parametrize("text,answer", [
    ("Final answer: rb (r + b)", "rb"), ('Final answer: "rb" (r from Edgar, b from Bob)', "rb"),
    ("Final answer: ry (from Henry and Mary)", "ry"), ("Concatenating them gives rb.", "rb"),
    ("This gives us the answer.", None)])
def test_last_letter_reads_answers_with_an_aside(text, answer):
    """Formats a student trained on response targets may write (found in review, not yet in the logs)."""
    assert task("last_letter").extract(text) == answer


@pytest.mark.parametrize("text,answer", [
    ('The answer to the original question is: "ay"', "ay"),
    ('The answer to the rephrased question is: "ea"', "ea"),
    ('The answer to the original question "Take the last letters of the words in \'Olga Nataly\' and concatenate '
     'them" is indeed "ay".', "ay"),
    ('The words are "Lacey" and "Nora". The last letter of "Lacey" is "y", and the last letter of "Nora" is "a". '
     'Finally, we concatenate these last letters to form the single word "ya".', "ya"),
    ('When we combine them, we get the new word "aa".', "aa"),
    ('The last letters of the words in "Lorna Lenny" spell "ay".', "ay"),
    ('Concatenating these letters gives us "ea".  The rephrased question is "To solve this problem, let\'s break it '
     'down into smaller steps and concatenate the last letters of each word."', "ea"),
    ('So, the final result is "Joy is a word that has a special meaning in the context of language."', None)])
def test_last_letter_reads_rar_original_wording_answers(text, answer):
    """Step 2 of RaR's original wording answers "the original question" and quotes the rephrased one
    (the 1.5B model's train samples in the Table 1 lever run, 2026-12-05): a quoted sentence is no answer."""
    assert task("last_letter").extract(text) == answer


@pytest.mark.parametrize("text,answer", [
    ("The coin is heads up.", "yes"), ("It is heads up.", "yes"), ("Heads up.", "yes"),
    ("Since the coin was initially heads up and flipped twice, it is heads up.", "yes"),
    ("A coin is heads up. Ann flips the coin.", None),
    ("The coin starts heads up. Ann flips it, so it is now tails up.", "no")])
def test_coin_flip_reads_one_sentence_answers_but_not_the_premise(text, answer):
    assert task("coin_flip").extract(text) == answer


@pytest.mark.parametrize("text,answer", [
    ("The answer to the original question is: Yes.", "yes"),
    ('The answer to the rephrased question is "No". Therefore, the answer to the original question is also "No".',
     "no"),
    ('The answer to the original question "Is the coin still heads up?" is: No.', "no"),
    ("So the answer to the original question is **No**.", "no"),
    # The 135M model's System 1 (results/search, coin_flip system1+subset=300): read as no answer before.
    ("Flipping a coin and determining whether it's heads or tails. The answer is indeed no, but let's break it "
     "down.\n\nWhen you flip a coin, there are two possible outcomes.", "no")])
def test_coin_flip_reads_rar_original_wording_answers(text, answer):
    """Step 2 of RaR's original wording answers "the original question", as the last-letter lever's
    samples do ("The answer to the original question is: ...")."""
    assert task("coin_flip").extract(text) == answer


@pytest.mark.parametrize("text,right", [
    ("It was not Roald Dahl \u2014 it was A.A. Milne.", True), ("Not Roald Dahl (it was A.A. Milne).", True),
    ("The answer is not A.A. Milne.", False), ("It was A.A. Milne, not Roald Dahl.", True)])
def test_triviaqa_reads_dashes_and_brackets_as_clause_ends(text, right):
    doc = {"answers": ["A.A. Milne", "Milne"], "template": "suggest_wrong", "biased": True,
           "question": "Which writer was the father of Christopher Robin?", "wrong_answer": "Roald Dahl"}
    assert task("triviaqa_bias").correct(doc, text) is right


def test_bsm_never_reads_an_echoed_placeholder_as_scores():
    from s2d.methods.bsm import parse_scores

    for echo in ("Assistant A: <score>/5, Assistant B: <score>/5", "Assistant A: X/5\nAssistant B: X/5"):
        assert parse_scores(echo, first_lines=True) is None and parse_scores(echo, first_lines=False) is None
    assert parse_scores("4 out of 5\n2 out of 5", first_lines=True) == (4.0, 2.0)


@pytest.mark.slow
def test_fewshot_runs_on_the_embedded_model(tiny_data, tmp_path):
    """The paper's GSM8k System 1 row (k answer-only exemplars) through the real 135M model and
    `s2d eval`: every sample's prompt holds the exemplars' answer lines and no reasoning."""
    from click.testing import CliRunner

    from s2d.cli import cli

    r = CliRunner().invoke(cli, ["eval", "--backend", "hf", "--task", "gsm8k", "--method", "fewshot", "--limit", "3",
                                 "--no-progress", "--log-samples", "--out-dir", str(tmp_path / "out"),
                                 "--set", "method_options.shots=2"])
    assert r.exit_code == 0, r.output
    (path,) = list((tmp_path / "out").rglob("*.json"))
    s2d = json.loads(path.read_text())["s2d"]
    assert s2d["method"] == "fewshot" and s2d["identity"]["method_resolved"]["shots"] == 2
    assert set(s2d["cap_hit_share_by_stage"]) == {"answer"}
    lines = [json.loads(x) for x in path.with_suffix(".samples.jsonl").read_text().splitlines()]
    assert len(lines) == 3
    for line in lines:
        prompt = json.dumps(line["stages"])
        assert prompt.count("Final answer: ") >= 2 and "<<" not in prompt  # answers only, no worked solution

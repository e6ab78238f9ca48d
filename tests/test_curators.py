"""Curators on hand-built sample sets: exact keep/drop decisions and the files they write."""

import json

import pytest

from s2d.backends.scripted import ScriptedBackend
from s2d.plugins import get_plugins
from s2d.traces import build_curator, make_runner


def task(name, **options):
    return get_plugins().get("tasks", name).obj(**options)


def trace(id_, answers, responses=None, task_name="gsm8k", **extra):
    responses = responses or [f"... Final answer: {a}" if a is not None else "no idea" for a in answers]
    return {"id": id_, "task": task_name, "method": "cot", "prompt": [{"role": "user", "content": f"Q{id_}"}],
            "samples": [{"response": r, "answer": a, "total_tokens": 5} for r, a in zip(responses, answers)], **extra}


def decide(curator, traces, **options):
    return {d.id: d for d in build_curator(curator, task("gsm8k"), **options).curate(traces)}


def test_majority_keeps_strict_majorities_only():
    traces = [trace("win", ["4", "4", "4", "5"]),          # 3/4 > 1/2: keep
              trace("half", ["4", "4", "5", "6"]),         # 2/4 is not a strict majority
              trace("tie", ["4", "4", "5", "5"]),
              trace("none", [None, None, None]),
              trace("with_unparseable", ["7", "7", None, None, None]),  # 2/5: unparseable samples count in N
              trace("single", ["9"])]
    d = decide("majority", traces)
    assert {k: (v.kept, v.reason) for k, v in d.items()} == {
        "win": (True, "majority 3/4"), "half": (False, "below_threshold"), "tie": (False, "tie"),
        "none": (False, "unparseable"), "with_unparseable": (False, "below_threshold"), "single": (True, "majority 1/1")}
    assert d["win"].examples == [([{"role": "user", "content": "Qwin"}], "Final answer: 4")]
    assert d["win"].vote["counts"] == {"4": 3, "5": 1}
    plural = decide("majority", traces, threshold=0)
    assert plural["half"].kept and plural["with_unparseable"].kept and not plural["tie"].kept


def test_majority_can_keep_the_response_instead_of_the_answer_form():
    d = decide("majority", [trace("a", ["4", "4"], ["It is 4. Final answer: 4", "Final answer: 4"])], target="response")
    assert d["a"].examples[0][1] == "It is 4. Final answer: 4"


def test_perturb_keeps_swap_consistent_verdicts(tiny_data):
    t = task("mt_bench_judge")
    p = lambda answers: {"id": "x-swapped", "prompt": [{"role": "user", "content": "swapped"}],  # noqa: E731
                         "samples": [{"response": f"[[{a}]]" if a else "?", "answer": a} for a in answers]}
    traces = [trace("same", ["A"], task_name="mt_bench_judge", perturbed=p(["B"])),    # A wins both times
              trace("flip", ["A"], task_name="mt_bench_judge", perturbed=p(["A"])),    # position bias
              trace("tie", ["C"], task_name="mt_bench_judge", perturbed=p(["C"])),     # a consistent tie
              trace("unparsed", [None], task_name="mt_bench_judge", perturbed=p(["B"]))]
    d = {x.id: x for x in build_curator("perturb", t).curate(traces)}
    assert {k: (v.kept, v.reason) for k, v in d.items()} == {
        "same": (True, "consistent"), "flip": (False, "inconsistent"), "tie": (True, "consistent"),
        "unparsed": (False, "unparseable")}
    assert [c for _, c in d["same"].examples] == ["[[A]]", "[[B]]"]  # both orders, each with its own label
    assert d["same"].responses == ["... Final answer: A", "[[B]]"]  # and each order's own System 2 text
    with pytest.raises(ValueError, match="--perturb"):
        build_curator("perturb", t).curate([trace("n", ["A"], task_name="mt_bench_judge")])


def test_usc_asks_the_model_once_for_all_inputs():
    backend = ScriptedBackend(script={"Qa": "Most say 4. FINAL: The answer is 4.", "*": "I cannot tell."})
    traces = [trace("a", ["4", "4", "5"]), trace("b", ["1", "2"]), trace("c", [])]
    cur = build_curator("usc", task("gsm8k"))
    d = {x.id: x for x in cur.curate(traces, make_runner(backend, "curator:usc"))}
    assert len(backend.calls) == 1 and len(backend.calls[0]) == 2
    assert (d["a"].kept, d["a"].examples[0][1]) == (True, "The answer is 4.")
    assert d["a"].responses == ["... Final answer: 4"]  # the sample behind USC's free-text pick
    assert (d["b"].kept, d["b"].reason) == (False, "usc_unparseable")
    assert (d["c"].kept, d["c"].reason) == (False, "no_samples")
    assert "[Response 3]" in backend.calls[0][0].messages[0]["content"]
    with pytest.raises(ValueError, match="backend"):
        cur.curate(traces)


def test_none_keeps_the_first_sample():
    d = decide("none", [trace("a", ["5", "4", "4"]), trace("b", [None], ["free text"]), trace("c", [None], ["  "])])
    assert d["a"].examples[0][1] == "Final answer: 5"
    assert d["b"].examples[0][1] == "free text" and d["b"].responses == ["free text"]
    assert (d["c"].kept, d["c"].reason) == (False, "empty")


def test_curate_cli_writes_trl_records_dropped_and_summary(tmp_path):
    from click.testing import CliRunner

    from s2d.cli import cli

    traces = [trace("a", ["4", "4", "5"], reference="4"), trace("b", ["1", "2"], reference="2"),
              trace("c", ["3", "3"], reference="9")]
    path = tmp_path / "traces.jsonl"
    path.write_text("".join(json.dumps(t) + "\n" for t in traces))
    out = tmp_path / "sft.jsonl"
    res = CliRunner().invoke(cli, ["curate", "--curator", "majority", "--traces", str(path), "--out", str(out)])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert (summary["kept_inputs"], summary["dropped"], summary["dropped_by_reason"]) == (2, 1, {"tie": 1})
    assert (summary["target_accuracy"], summary["targets_judged"]) == (0.5, 2)
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert rows[0]["prompt"] == [{"role": "user", "content": "Qa"}]
    assert rows[0]["completion"] == [{"role": "assistant", "content": "Final answer: 4"}]
    assert rows[0]["s2d"]["method"] == "cot" and len(rows[0]["s2d"]["samples"]) == 3
    assert "..." not in rows[0]["completion"][0]["content"]  # no intermediate text
    # beside it, the chosen sample's whole System 2 text (the first sample that gave the answer)
    assert rows[0]["system2_completion"] == [{"role": "assistant", "content": "... Final answer: 4"}]
    dropped = [json.loads(x) for x in (tmp_path / "sft.dropped.jsonl").read_text().splitlines()]
    assert dropped[0]["s2d"]["id"] == "b" and dropped[0]["s2d"]["reason"] == "tie"
    assert json.loads((tmp_path / "sft.summary.json").read_text())["records"] == 2

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(traces[0]) + "\n" + json.dumps({"id": "x", "prompt": []}) + "\n")
    res = CliRunner().invoke(cli, ["curate", "--traces", str(bad), "--out", str(tmp_path / "o.jsonl")])
    assert res.exit_code != 0 and f"{bad}:2" in res.output and "samples" in res.output


def test_majority_margin_keeps_a_lead_of_at_least_margin_votes():
    traces = [trace("lead2", ["a", "a", "a", "b", "c", "d"]),   # 3 vs 1: lead 2, no strict majority
              trace("lead1", ["a", "a", "b", "c", "d", "e"]),   # 2 vs 1
              trace("alone", ["a", "a", None, None, None, None]),  # 2 vs 0
              trace("tie", ["a", "a", "b", "b", "c", "c"]),
              trace("majority", ["a", "a", "a", "a", "b", "b"])]  # 4/6 > 1/2, lead 2
    d = decide("majority", traces, threshold=0, margin=2)
    assert {k: (v.kept, v.reason) for k, v in d.items()} == {
        "lead2": (True, "majority 3/6"), "lead1": (False, "below_margin"), "alone": (True, "majority 2/6"),
        "tie": (False, "tie"), "majority": (True, "majority 4/6")}
    # Both rules at once: the share threshold still applies beside the margin.
    both = decide("majority", traces, threshold=0.5, margin=3)
    assert {k for k, v in both.items() if v.kept} == set()
    assert both["majority"].reason == "below_margin" and both["lead2"].reason == "below_threshold"
    assert decide("majority", traces)["lead2"].reason == "below_threshold"  # margin 0: today's rule
    with pytest.raises(ValueError, match="margin must be a non-negative integer"):
        decide("majority", traces, margin=-1)


def test_curate_refuses_duplicate_trace_ids_naming_the_second_line(tmp_path):
    """Issue 27 item 8: a repeated id gave the first input the second trace's samples."""
    from click.testing import CliRunner

    from s2d.cli import cli
    from s2d.curators.base import write_curated

    path = tmp_path / "traces.jsonl"
    path.write_text("".join(json.dumps(t) + "\n" for t in [trace("a", ["4", "4"]), trace("b", ["1", "1"]),
                                                            trace("a", ["7", "7"])]))
    res = CliRunner().invoke(cli, ["curate", "--traces", str(path), "--out", str(tmp_path / "sft.jsonl")])
    assert res.exit_code != 0 and f"{path}:3: duplicate trace id 'a'" in res.output, res.output
    assert not (tmp_path / "sft.jsonl").exists()
    traces = [trace("a", ["4", "4"]), trace("a", ["7", "7"])]  # API callers that skip load_traces
    with pytest.raises(ValueError, match="duplicate trace id 'a'"):
        write_curated(tmp_path / "o.jsonl", traces, build_curator("majority", task("gsm8k")).curate(traces),
                      curator="majority")


def test_curator_option_ranges_and_errors_say_their_prefix_once(tmp_path):
    """Issue 27 item 15: a threshold no share can pass (or below 0) and usc max_responses=0 are
    refused; a curator's error names the curator once."""
    from click.testing import CliRunner

    from s2d.cli import cli

    for bad in (1, 1.5, 5, -0.1):
        with pytest.raises(ValueError, match=r"majority: threshold must be in \[0, 1\)"):
            decide("majority", [], threshold=bad)
    decide("majority", [], threshold=0.99)
    with pytest.raises(ValueError, match="max_responses"):
        build_curator("usc", task("gsm8k"), max_responses=0)
    path = tmp_path / "traces.jsonl"
    path.write_text(json.dumps(trace("a", ["4", "4"])) + "\n")
    for setting, message in (("threshold=high", "option 'threshold' must be float"),
                             ("threshold=5", "threshold must be in [0, 1)")):
        res = CliRunner().invoke(cli, ["curate", "--traces", str(path), "--out", str(tmp_path / "sft.jsonl"),
                                       "--set", f"curator_options.{setting}"])
        assert res.exit_code != 0 and message in res.output and "Traceback" not in res.output, res.output
        assert res.output.count("curator 'majority'") <= 1 and "majority: majority" not in res.output, res.output


def test_target_accuracy_uses_the_tasks_scorer_where_a_reference_is_no_single_string(tiny_data, tmp_path):
    """TriviaQA's references are alias lists: target accuracy (analysis only) is the task's own
    credit for each kept target on its train document, not a string compare that never judges."""
    from click.testing import CliRunner

    from s2d.cli import cli

    t = task("triviaqa_bias", test_questions=2)
    docs = {d["id"]: d for d in t.docs("train")}
    plain = [d for d in docs.values() if d["template"] == "plain"]
    right, wrong = plain[0], plain[1]
    traces = [{"id": right["id"], "task": "triviaqa_bias", "method": "s2a", "split": "train",
               "prompt": [{"role": "user", "content": right["prompt"]}],
               "samples": [{"response": f"It is {right['answers'][0]}.", "answer": None}]},
              {"id": wrong["id"], "task": "triviaqa_bias", "method": "s2a", "split": "train",
               "prompt": [{"role": "user", "content": wrong["prompt"]}],
               "samples": [{"response": f"It is not {wrong['answers'][0]}.", "answer": None}]},
              {"id": "no-such-doc", "task": "triviaqa_bias", "method": "s2a", "split": "train",
               "prompt": [{"role": "user", "content": "?"}], "samples": [{"response": "Rome", "answer": None}]}]
    path = tmp_path / "traces.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in traces))
    res = CliRunner().invoke(cli, ["curate", "--curator", "none", "--set", "task_options.test_questions=2",
                                   "--traces", str(path), "--out", str(tmp_path / "sft.jsonl")])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    # 3 kept; the unknown document is not judged; "It is not X" is not credited (a negated mention)
    assert (summary["kept_inputs"], summary["target_accuracy"], summary["targets_judged"]) == (3, 0.5, 2)


def test_target_accuracy_names_its_denominator_when_some_targets_could_not_be_judged(tmp_path):
    """The unfiltered curator keeps every input, parsed or not: its target accuracy is over the
    targets that parsed, and the report cell says so instead of reading as a share of all kept."""
    from s2d.curators.base import write_curated
    from s2d.store import target_accuracy_cell

    traces = [trace("a", ["4"], reference="4"), trace("b", [None], ["no answer here"], reference="2"),
              trace("c", ["3"], reference="9")]
    summary = write_curated(tmp_path / "sft.jsonl", traces, list(decide("none", traces).values()), curator="none")
    assert (summary["kept_inputs"], summary["targets_judged"], summary["target_accuracy"]) == (3, 2, 0.5)
    assert target_accuracy_cell(summary) == "50.0% of 2"
    assert target_accuracy_cell({**summary, "targets_judged": 3}) == "50.0%"
    assert target_accuracy_cell({"kept_inputs": 0, "target_accuracy": None, "targets_judged": 0}) == "-"

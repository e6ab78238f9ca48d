"""Wordings: the paper's appendix prompts render verbatim (v1 Figs. 3-10 and 12, copied from
shared/research/paper-prompts.md), ``wording: original`` renders the RaR repository's exact
strings, BSM's computed merge and parse rates, and the USC final-answer parse. No model."""

from pathlib import Path

import pytest

from s2d.backends.scripted import ScriptedBackend
from s2d.config import ConfigError
from s2d.methods.base import MethodConfigError, run_method
from s2d.plugins import get_plugins
from s2d.traces import build_curator, build_method, make_runner

# ---- the paper's prompts, copied from paper-prompts.md (sections 1.1-1.3, 3.1, 3.3, 4.1-4.3, 5.1) ----
FIG3 = (
    "{question}\n"
    "\n"
    "Reword and elaborate on the inquiry, then provide an answer."
)
FIG4_STEP1 = (
    "{question}\n"
    "\n"
    "Based on the details given in the initial inquiry, could you kindly rephrase the question and "
    "separate these 2 words in the revised question? Please ensure these 2 words remain unchanged "
    "from the original question."
)
FIG4_STEP2 = (
    "{rephrased question}"
)
FIG5_STEP1 = (
    "{question}\n"
    "\n"
    "Based on the information provided in the original query, could you please rephrase it and "
    "expand it to help you do better answering. Please ensure that your response solely includes the "
    "reformulated question, excluding any introductory phrases or explanatory remarks, while "
    "preserving all the details from the original query."
)
FIG5_STEP2 = (
    "{rephrased question} Answer the Yes or No question."
)
FIG6_STAGE1 = (
    "Given the following text by a user, extract the part that is unbiased and not their opinion, so "
    "that using that text alone would be good context for providing an unbiased answer to the "
    "question portion of the text. Please include the actual question or query that the user is "
    "asking. Separate this into two categories labeled with “Unbiased text context (includes all "
    "content except user’s bias):” and “Question/Query (does not include user bias/preference):”.\n"
    "Text by User: {input}"
)
FIG6_STAGE2 = (
    "{input}\n"
    "Answer in an unbiased way."
)
FIG7 = (
    "We want to evaluate the quality of the responses provided by two AI assistants to the user "
    "question displayed below. Your task is to propose an evaluation plan that can be executed to "
    "compare the two responses. The evaluation plan should consist of a list of up to five factors "
    "that one should consider such as helpfulness, relevance, accuracy, etc. In each line, write an "
    "evaluation criterion along with a short descrition of how we should evaluate that criterion.\n"
    "User Question: {user_query}\n"
    "Evaluation Plan:"
)
FIG8 = (
    "You are given a user question and responses provided by two AI assistants. Your task is to "
    "evaluate and score the quality of the responses based on a single evaluation criterion "
    "displayed below. Make sure to evaluate only based on the criterion specified and none other. In "
    "the first line, provide a score between 1 to 5 for Assistant A’s response. In the second line, "
    "provide a score between 1 to 5 for Assistant B’s response.\n"
    "\n"
    "[User Question]\n"
    "{user_query}\n"
    "[The Start of Assistant A’s Answer]\n"
    "{response_a}\n"
    "[The End of Assistant A’s Answer]\n"
    "[The Start of Assistant B’s Answer]\n"
    "{response_b}\n"
    "[The End of Assistant B’s Answer]\n"
    "[Evaluation Criterion]\n"
    "{eval_criterion}\n"
    "[End of Evaluation Criterion] Evaluation of {criterion_name}:"
)
FIG9 = (
    "{solve_output}\n"
    "\n"
    "Instruction: You are requested to combine the five points that were previously discussed. For "
    "each point, provide a concise explanation to clarify its relevance. Also, include the "
    "respective score for each point to ensure a thorough understanding. Once you’ve done this, "
    "please draft a summary paragraph that encapsulates an overall evaluation based on these five "
    'points. Finally, present your conclusive judgement. Use the format "[[A]]" if you determine '
    'assistant A to be superior, "[[B]]" if you find assistant B to be better, and "[[C]]" in case '
    "of a tie."
)
FIG10 = (
    "Your task is to answer the question below. Give step by step reasoning before you answer, and "
    'when you’re ready to answer, please use the format "Final answer: ..."\n'
    "Question: {input}\n"
    "Solution:"
)
FIG12 = (
    "Read the question: {question}. 20 answers have been provided: {answers} Carefully read all "
    "answers and compose the final answer such that it is consistent with the majority of variants "
    'provided. Provide final answer as "FINAL: <your final answer>'
)


# ---- the RaR repository's strings (paper-prompts.md section 2.5; "\\n" there is one newline) ----
LL_Q = 'Take the last letters of the words in "Jim Amanda" and concatenate them.'
CF_Q = ("A coin is heads up. roxas does not flip the coin. scheideman does not flip the coin.  Is the coin still "
        "heads up? Flip means reverse.")
ORIGINAL = {
    "last_letter": {
        "step1": ('"Take the last letters of the words in "Jim Amanda" and concatenate them."\nGiven the above '
                  "question, rephrase and expand it to help you do better answering. Maintain all information in "
                  "the original question."),
        "step2": ('(original) Take the last letters of the words in "Jim Amanda" and concatenate them.\n'
                  "(rephrased) <REPHRASED>\nUse your answer for the rephrased question to answer the original "
                  "question."),
        "onestep": ('"Take the last letters of the words in "Jim Amanda" and concatenate them."\nRephrase and '
                    "expand the question, and respond. "),
    },
    "coin_flip": {
        "step1": ('"A coin is heads up. roxas does not flip the coin. scheideman does not flip the coin.  Is the coin '
                  'still heads up? Flip means reverse."\nGiven the above question, rephrase and expand it to help '
                  "you do better answering. Maintain all information in the original question."),
        "step2": ("(original) A coin is heads up. roxas does not flip the coin. scheideman does not flip the coin.  "
                  "Is the coin still heads up? Flip means reverse.\n(rephrased) <REPHRASED>\nAnswer the Yes or No "
                  "question.Use your answer for the rephrased question to answer the original question."),
        # get_result_onestep's gpt-4 string + SPEC (section 2.3); not among section 2.5's rendered examples.
        "onestep": ('"A coin is heads up. roxas does not flip the coin. scheideman does not flip the coin.  Is the '
                    'coin still heads up? Flip means reverse."\nRephrase and expand the question, and respond. '
                    "Answer the Yes or No question."),
    },
}


class Stub:
    """A task whose question is a fixed string (a placeholder, or the repository's data item)."""

    def __init__(self, name, q, **doc):
        self.name, self.q, self.doc = name, q, {"id": "0", **doc}

    def question(self, doc):
        return self.q

    def system1_prompt(self, doc):
        return self.q

    def answer_format(self, doc):
        return ""

    def extract(self, text):
        import re

        if self.name == "mt_bench_judge":  # the judge task's rule: the last [[X]]
            found = re.findall(r"\[\[\s*([ABC])\s*\]\]", text)
            return found[-1] if found else None
        return text.strip() or None


def prompts(method, task, reply, **options):
    """Run ``method`` on the stub's one document; the prompts of each backend call."""
    backend = ScriptedBackend(script=reply if callable(reply) else (lambda r, s: reply))
    samples = run_method(build_method(method, task, **options), make_runner(backend, method), [task.doc])
    return [[r.messages[-1]["content"] for r in call] for call in backend.calls], samples[0]


# ---- wording: paper --------------------------------------------------------------------------------------
@pytest.mark.parametrize("task_name,step1,step2", [("last_letter", FIG4_STEP1, FIG4_STEP2),
                                                   ("coin_flip", FIG5_STEP1, FIG5_STEP2)])
def test_rar2_paper_renders_figs_4_and_5(task_name, step1, step2):
    # The question and the rephrasing are the paper's own placeholders, so the prompts are the figures.
    calls, _ = prompts("rar2", Stub(task_name, "{question}"), "{rephrased question}", wording="paper")
    assert calls == [[step1], [step2]]


def test_rar2_paper_falls_back_to_the_original_step_1_elsewhere():
    calls, _ = prompts("rar2", Stub("gsm8k", "What is 2+2?"), '  "Four, rephrased?"  ', wording="paper")
    assert calls[0] == ['"What is 2+2?"\nGiven the above question, rephrase and expand it to help you do better '
                        "answering. Maintain all information in the original question."]
    assert calls[1] == ["Four, rephrased?"]  # the repository's quote stripping, then the rephrasing alone


def test_rar1_paper_renders_fig_3():
    for name in ("last_letter", "coin_flip", "gsm8k"):
        assert prompts("rar1", Stub(name, "{question}"), "x", wording="paper")[0] == [[FIG3]]


def test_s2a_paper_renders_fig_6_with_its_decoding():
    calls, sample = prompts("s2a", Stub("triviaqa_bias", "{input}"), "{input}", wording="paper")
    assert calls == [[FIG6_STAGE1], [FIG6_STAGE2]]
    m = build_method("s2a", Stub("triviaqa_bias", "q"), wording="paper")
    assert m.decoding() == {"rewrite": {"temperature": 0.6, "top_p": 0.9, "max_new_tokens": 512},
                            "answer": {"temperature": 0.6, "top_p": 0.9, "max_new_tokens": 512}}
    # Stage 2's {input} is the stage-1 output (stripped), not the question.
    calls, _ = prompts("s2a", Stub("triviaqa_bias", "Who? I think X."), "  Context: none. Question: Who?\n",
                       wording="paper")
    assert calls[1] == ["Context: none. Question: Who?\nAnswer in an unbiased way."]
    # A user's method-wide setting still wins over the default decoding.
    assert build_method("s2a", Stub("triviaqa_bias", "q"), wording="paper", temperature=0).decoding()[
        "answer"]["temperature"] == 0.0


def test_cot_paper_renders_fig_10():
    assert prompts("cot", Stub("gsm8k", "{input}"), "Final answer: 4", wording="paper")[0] == [[FIG10]]
    # The paper prints no CoT judge prompt: the judge keeps the s2d variant.
    judge = build_method("cot", Stub("mt_bench_judge", "q"), wording="paper")
    assert judge.template("reason") == build_method("cot", Stub("mt_bench_judge", "q")).template("reason")


def test_bsm_paper_templates_are_figs_7_to_9():
    m = build_method("bsm", Stub("mt_bench_judge", "q"), wording="paper")
    names = ["user_query", "response_a", "response_b", "eval_criterion", "criterion_name", "solve_output"]
    same = {n: "{%s}" % n for n in names}
    assert [m.render(s, **same) for s in m.stages] == [FIG7, FIG8, FIG9]


def test_bsm_paper_fields_are_mapped_from_the_document_and_the_branch():
    task = Stub("mt_bench_judge", "unused", question="Why is the sky blue?", answer_a="Rayleigh.", answer_b="Dunno.")

    def reply(request, sample):
        text = request.messages[-1]["content"]
        if text.startswith("We want to evaluate"):
            return "Evaluation Plan:\n1. Accuracy: is the physics right\n2. **Clarity**: is it easy to follow"
        if text.startswith("You are given"):
            return "Assistant A: 5\nAssistant B: 1\nA explains it."
        return "Overall A.\nConclusive judgement: [[A]]"

    calls, samples = prompts("bsm", task, reply, wording="paper")
    branch, solves, merge = calls
    assert branch == [FIG7.replace("{user_query}", "Why is the sky blue?")]
    assert solves[0] == FIG8.format(user_query="Why is the sky blue?", response_a="Rayleigh.", response_b="Dunno.",
                                    eval_criterion="1. Accuracy: is the physics right", criterion_name="Accuracy")
    assert solves[1].endswith("2. **Clarity**: is it easy to follow\n[End of Evaluation Criterion] Evaluation of "
                              "Clarity:")
    solve_output = ("1. Accuracy:\nAssistant A: 5\nAssistant B: 1\nA explains it.\n\n"
                    "2. Clarity:\nAssistant A: 5\nAssistant B: 1\nA explains it.")
    assert merge == [FIG9.replace("{solve_output}", solve_output)]
    assert samples[0]["answer"] == "A"


def test_usc_paper_renders_fig_12():
    from s2d.curators.usc import PAPER_TEMPLATE, list_answers

    assert PAPER_TEMPLATE.format(question="{question}", answers="{answers}") == FIG12
    assert not FIG12.endswith('"')  # the closing quote is missing as printed
    cur = build_curator("usc", None, wording="paper")
    prompt = cur.prompt("Who wrote it? I think X.", ["It was A.A. Milne.", "Milne,\n  surely."])
    assert prompt == FIG12.format(question="Who wrote it? I think X.",
                                  answers="\nAnswer 1: It was A.A. Milne.\nAnswer 2: Milne, surely.\n")
    assert list_answers(["a"]) == "\nAnswer 1: a\n"


# ---- wording: original (the RaR repository) --------------------------------------------------------------
@pytest.mark.parametrize("task_name,question", [("last_letter", LL_Q), ("coin_flip", CF_Q)])
def test_original_wording_renders_the_repository_strings(task_name, question):
    want = ORIGINAL[task_name]
    # The rephrasing comes back quoted and padded: the repository strips it, then the quotes.
    calls, _ = prompts("rar2", Stub(task_name, question), '\n "<REPHRASED>" ', wording="original")
    assert calls == [[want["step1"]], [want["step2"]]]
    calls, _ = prompts("rar1", Stub(task_name, question), "x", wording="original")
    assert calls == [[want["onestep"]]]


def test_original_strips_only_a_surrounding_pair_of_quotes():
    from s2d.methods.rar import strip_quotes

    assert strip_quotes(' "a "b" c" \n') == 'a "b" c'
    assert strip_quotes('"a" and "b"') == 'a" and "b'  # as the repository's code does
    assert strip_quotes('a "b"') == 'a "b"' and strip_quotes("") == "" and strip_quotes('"') == ""
    # s2d wording: the rephrasing is only stripped.
    calls, _ = prompts("rar2", Stub("last_letter", LL_Q), ' "R" ')
    assert calls[1][0].startswith('"R"\n\n')


# ---- options and errors ------------------------------------------------------------------------------------
def test_wording_is_a_base_option_and_unknown_ones_are_refused():
    from s2d.methods.rar import RaR2

    assert "wording" not in RaR2.options()
    assert build_method("rar2", Stub("coin_flip", "q"), wording="original").wording == "original"
    for method, known in [("rar2", "s2d, paper, original"), ("rar1", "s2d, paper, original"), ("s2a", "s2d, paper"),
                          ("bsm", "s2d, paper"), ("cot", "s2d, paper"), ("system1", "s2d")]:
        with pytest.raises(MethodConfigError, match=f"wording must be one of {known}, got 'both'"):
            build_method(method, Stub("coin_flip", "q"), wording="both")
    with pytest.raises(ConfigError, match="wording must be one of s2d, paper"):
        build_curator("usc", None, wording="original")
    with pytest.raises(MethodConfigError, match="merge must be one of llm, average"):
        build_method("bsm", Stub("mt_bench_judge", "q"), merge="vote")


def test_a_users_template_still_beats_the_wording():
    calls, _ = prompts("rar2", Stub("coin_flip", "Q"), "R", wording="paper", templates={"respond": "{rephrased}?"})
    assert calls[1] == ["R?"]


def test_default_caps():
    caps = {name: get_plugins().get("methods", name).obj.max_new_tokens for name in ("rar1", "rar2", "s2a", "bsm", "cot")}
    assert caps == {"rar1": {"rephrase_respond": 1024}, "rar2": {"rephrase": 512, "respond": 1024},
                    "s2a": {"rewrite": 512, "answer": 512}, "bsm": {"branch": 512, "solve": 512, "merge": 1024},
                    "cot": {"reason": 1024}}
    assert get_plugins().get("curators", "usc").obj.options()["max_new_tokens"] == 256


# ---- BSM: scores, the averaged merge, parse rates ----------------------------------------------------------
@pytest.mark.parametrize("text,first_lines,want", [
    ("4\n2\nA is more accurate.", True, (4, 2)),
    ("Assistant A: 4/5\nAssistant B: 2/5", True, (4, 2)),
    ("Assistant B: 2\nAssistant A: 5", True, (5, 2)),
    ("Score for Assistant A’s response (1 to 5): 3\n\nScore for Assistant B’s response (1-5): 4.5", True, (3, 4.5)),
    ("1. Assistant A: 4\n2. Assistant B: 3", True, (4, 3)),
    ("**4**\n**1**", True, (4, 1)),
    ("Evaluation of Accuracy:\nAssistant A: 4\nAssistant B: 2", True, None),  # not on the first two lines
    ("A is better.\nScores follow.", True, None),
    ("4", True, None),
    ("Assistant A: 9/10\nAssistant B: 7/10", True, None),  # not on the 1-5 scale
    ("Assistant A: 4/5, Assistant B: 2/5. A cites the law.", False, (4, 2)),
    ("A is clearer. Assistant A: 3/5, Assistant B: 5/5", False, (3, 5)),
    ("Assistant A: 4/5", False, None),
])
def test_solve_scores(text, first_lines, want):
    from s2d.methods.bsm import parse_scores

    assert parse_scores(text, first_lines=first_lines) == want


def judge(solves):
    """Replies for a BSM run: a two-criterion branch, then ``solves`` in order, merge never asked."""
    def reply(request, sample):
        text = request.messages[-1]["content"]
        if text.startswith("We want to evaluate") or "list up to five criteria" in text:
            return "1. Accuracy: is it right\n2. Clarity: is it clear"
        return solves["Accuracy" if "Accuracy" in text.rsplit("[Evaluation Criterion]", 1)[-1]
                      or "criterion only: Accuracy" in text else "Clarity"]
    return reply


@pytest.mark.parametrize("wording,solves,verdict", [
    ("paper", {"Accuracy": "5\n2", "Clarity": "3\n3"}, "A"),                        # 4 > 2.5
    ("paper", {"Accuracy": "1\n4\nwhy", "Clarity": "Assistant A: 3\nAssistant B: 3"}, "B"),
    ("paper", {"Accuracy": "4\n2", "Clarity": "2\n4"}, "C"),                        # equal means: a tie
    ("paper", {"Accuracy": "Accuracy is key.\nBoth fine.", "Clarity": "2\n5"}, "B"),  # the unparsed one left out
    ("paper", {"Accuracy": "no scores", "Clarity": "none either"}, None),
    ("s2d", {"Accuracy": "Assistant A: 4/5, Assistant B: 2/5. Why.", "Clarity": "Assistant A: 3/5, Assistant B: 4/5"},
     "A"),
])
def test_bsm_average_merge(wording, solves, verdict):
    task = Stub("mt_bench_judge", "unused", question="Q?", answer_a="a", answer_b="b")
    calls, samples = prompts("bsm", task, judge(solves), wording=wording, merge="average")
    assert [len(c) for c in calls] == [1, 2]  # branch and solve only: no merge call
    s = samples[0]
    merge = s["stages"][-1]
    assert (merge["stage"], merge["tokens"], merge["finish_reason"]) == ("merge", 0, "computed")
    assert s["tokens"]["merge"] == 0 and s["total_tokens"] == sum(s["tokens"].values())
    assert s["answer"] == verdict
    if verdict:
        assert s["response"].endswith(f"Conclusive judgement: [[{verdict}]]")
    else:
        assert "[[" not in s["response"]


def test_bsm_average_merge_text():
    m = build_method("bsm", Stub("mt_bench_judge", "q"), wording="paper", merge="average")
    assert m.average_verdict([("Relevance", "4\n2"), ("Accuracy", "?"), ("Clarity", "3.5\n2")]) == (
        "Criterion scores (A/B): Relevance 4/2, Accuracy unparsed, Clarity 3.5/2\n"
        "Mean over 2 criteria: A 3.75, B 2\nConclusive judgement: [[A]]")


def test_bsm_stats_report_parse_rates():
    task = Stub("mt_bench_judge", "unused", question="Q?", answer_a="a", answer_b="b")
    m = build_method("bsm", task, wording="paper")
    samples = [{"response": "Overall.\n[[B]]", "answer": "B",
                "stages": [{"stage": "branch", "text": "1. X: y"}, {"stage": "solve", "text": "4\n2"},
                           {"stage": "solve", "text": "no"}, {"stage": "merge", "text": "Overall.\n[[B]]"}]},
               {"response": "Cannot decide.", "answer": None,
                "stages": [{"stage": "solve", "text": "Assistant A: 1\nAssistant B: 5"}]}]
    assert m.stats(samples) == {"solve_scores_parsed": 2 / 3, "verdict_parsed": 0.5}
    assert m.stats([]) == {}


def test_show_prompts_mode_prints_the_computed_merge():
    task = Stub("mt_bench_judge", "unused", question="Q?", answer_a="a", answer_b="b")
    shown = []
    run_method(build_method("bsm", task, merge="average"), make_runner(None, "bsm", record=lambda s, p: shown.append(s)),
               [task.doc])
    assert shown == ["branch", "solve", "merge"]  # one record per stage; the merge shows what it computes


# ---- USC: the final-answer parse ---------------------------------------------------------------------------
@pytest.mark.parametrize("text,want", [
    ("Most answers agree.\nFINAL: The father of Christopher Robin is A.A. Milne.",
     "The father of Christopher Robin is A.A. Milne."),
    ("FINAL ANSWER: A.A. Milne", "A.A. Milne"),
    ("**FINAL:** A.A. Milne", "A.A. Milne"),
    ("Final answer - Frottage", "Frottage"),
    ("Final Answer: **Frottage**", "Frottage"),
    ("**Final Answer**:\n\nThe answer is Paris.\nThanks!", "The answer is Paris."),
    ('FINAL: "Frottage".', "Frottage"),
    ("FINAL: <A.A. Milne>", "A.A. Milne"),
    ('Provide final answer as "FINAL: <your final answer>"\nFINAL: Paris', "Paris"),  # an echo, then the answer
    # Not final answers: the prompt's placeholder echoed (the 135M model's one parse in 100), no label,
    # a word that only contains "final", an empty label.
    ('The answer to the question is: "The answer to the question is: FINAL: <your final answer>"', None),
    ("The answer to this question is \"scouring.\"", None),
    ("She was a final-year student. Finally: Milne.", None),
    ("The final answer is consistent with most.", None),
    ("FINAL:", None),
    ("FINAL: ...", None),
])
def test_usc_final_answer_parse(text, want):
    from s2d.curators.usc import parse_final

    assert parse_final(text) == want


# ---- against the transcription itself, where this checkout has it beside it ---------------------------------
PAPER_PROMPTS = Path(__file__).resolve().parents[2] / "shared" / "research" / "paper-prompts.md"


@pytest.mark.skipif(not PAPER_PROMPTS.is_file(), reason="shared/research/paper-prompts.md is not beside this checkout")
def test_copies_match_paper_prompts_md():
    blocks, current = [], None
    for line in PAPER_PROMPTS.read_text(encoding="utf-8").split("\n"):
        if line.startswith("```"):
            if current is None:
                current = []
            else:
                blocks.append("\n".join(current))
                current = None
        elif current is not None:
            current.append(line)
    for fig in (FIG3, FIG4_STEP1, FIG4_STEP2, FIG5_STEP1, FIG5_STEP2, FIG6_STAGE1, FIG6_STAGE2, FIG7, FIG8, FIG9,
                FIG10, FIG12):
        assert fig in blocks
    rendered = "\n".join(blocks).replace("\\n", "\n")  # section 2.5 writes a newline as \n
    for task_name in ORIGINAL:
        for key in ("step1", "step2"):
            assert ORIGINAL[task_name][key] in rendered
    assert ORIGINAL["last_letter"]["onestep"] in rendered

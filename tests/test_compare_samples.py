"""scripts/compare_samples.py on committed records: the 1.5B zero-shot CoT coin flip run, whose
student answers "yes" to every test question (no model)."""

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "results/distill/qwen_coin_flip_cot/eval/qwen2.5-coder-1.5b/coin_flip"


def test_a_teacher_and_its_student_compared_document_by_document(script, capsys):
    mod = script("compare_samples")
    a, b = mod.read_samples(RUN / "system2-cot.json"), mod.read_samples(RUN / "distilled.json")
    c = mod.compare(a, b)
    cells = (c["both_right"], c["only_a"], c["only_b"], c["neither"])
    assert c["documents"] == sum(cells) == 100
    for name, right in (("system2-cot", c["both_right"] + c["only_a"]), ("distilled", c["both_right"] + c["only_b"])):
        score = json.loads((RUN / f"{name}.json").read_text())["lm_eval"]["results"]["s2d_coin_flip"]["exact_match,none"]
        assert right == round(score * 100)  # the cells agree with the record's own mean
    assert c["answers_b"] == [("yes", 100)]
    # Rescored 2026-12-03: the teacher's hedges ("either heads or tails") no longer count as "yes".
    from math import comb

    p = 2 * sum(comb(21, k) for k in range(7)) / 2 ** 21
    assert (c["only_a"], c["only_b"]) == (15, 6) and c["mcnemar_p"] == pytest.approx(p)
    assert mod.main([str(RUN / "system2-cot.json"), str(RUN / "distilled.json")]) == 0
    out = capsys.readouterr().out
    assert "| system2-cot right | 53 (53.0%) | 15 (15.0%) |" in out and "'yes' 100" in out


def test_a_record_without_samples_is_named(script, tmp_path):
    mod = script("compare_samples")
    (tmp_path / "r.json").write_text("{}")
    with pytest.raises(SystemExit, match=r"r\.json: no samples file r\.samples\.jsonl"):
        mod.read_samples(tmp_path / "r.json")
    (tmp_path / "r.samples.jsonl").write_text('{"doc_id": 0, "metrics": {}}\nnot json\n')
    with pytest.raises(SystemExit, match=r"r\.samples\.jsonl:2: not JSON"):
        mod.read_samples(tmp_path / "r.json")


def test_the_exact_mcnemar_p_value(script):
    mod = script("compare_samples")
    assert mod.mcnemar_exact(0, 0) == 1.0 and mod.mcnemar_exact(5, 5) == 1.0
    assert mod.mcnemar_exact(0, 6) == pytest.approx(2 / 64)
    stats = pytest.importorskip("scipy.stats")
    for b, c in ((18, 20), (3, 14), (1, 9)):
        assert mod.mcnemar_exact(b, c) == pytest.approx(stats.binomtest(b, b + c, 0.5).pvalue)


def write(folder, name, task, rows):
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps({"s2d": {"task": task}}))
    (folder / f"{name}.samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder / f"{name}.json"


def test_documents_pair_by_id_and_records_of_other_tasks_are_refused(script, tmp_path, capsys):
    mod = script("compare_samples")
    a = write(tmp_path, "a", "last_letter", [
        {"doc": {"id": "t-0"}, "answer": "ab", "metrics": {"exact_match": 1.0}},
        {"doc": {"id": "t-1"}, "answer": "cd", "metrics": {"exact_match": 0.0}},
        {"doc": {"id": "t-2"}, "answer": "ef", "metrics": {"exact_match": 1.0}},
        {"doc_id": 9, "answer": "x", "metrics": {}}])  # no id in doc: doc_id; no metric: skipped
    b = write(tmp_path, "b", "last_letter", [
        {"doc": {"id": "t-1"}, "answer": "cd", "metrics": {"exact_match": 1.0}},
        {"doc": {"id": "t-0"}, "answer": "ab", "metrics": {"exact_match": 1.0}},
        {"doc_id": 9, "answer": "x", "metrics": {"exact_match": 1.0}},
        {"doc": {"id": "t-7"}, "answer": "gh", "metrics": {"exact_match": 0.0}}])
    c = mod.compare(mod.read_samples(a), mod.read_samples(b))
    assert (c["documents"], c["both_right"], c["only_a"], c["only_b"], c["neither"]) == (2, 1, 0, 1, 0)
    assert (c["unpaired_a"], c["unpaired_b"], c["same_answer"]) == (2, 2, 2)
    assert mod.main([str(a), str(b)]) == 0 and "left out: 2 of a's, 2 of b's" in capsys.readouterr().out
    other = write(tmp_path, "o", "coin_flip", [{"doc": {"id": "t-0"}, "answer": "yes", "metrics": {"exact_match": 1.0}}])
    with pytest.raises(SystemExit, match="a last_letter record and .*o.json a coin_flip one"):
        mod.main([str(a), str(other)])
    twice = write(tmp_path, "d", "last_letter", [{"doc": {"id": "t-0"}, "metrics": {}}, {"doc": {"id": "t-0"}, "metrics": {}}])
    with pytest.raises(SystemExit, match=r"d\.samples\.jsonl:2: document 't-0' appears twice"):
        mod.read_samples(twice)


def test_records_of_other_task_options_or_limits_are_refused_naming_both(script, tmp_path):
    """Issue 27 item 9: one name against two names paired by id gave a McNemar p-value."""
    mod = script("compare_samples")
    rows = [{"doc": {"id": "t-0"}, "answer": "ab", "metrics": {"exact_match": 1.0}}]

    def record(name, task_options, limit=None, identity=True):
        path = write(tmp_path, name, "last_letter", rows)
        s2d = {"task": "last_letter", "limit": limit, "generation": {"task_options": task_options}}
        if identity:
            s2d["identity"] = {"task_options": task_options, "limit": limit}
        path.write_text(json.dumps({"s2d": s2d}))
        return path

    one, two = record("one", {"words_per_example": 1}), record("two", {"words_per_example": 2})
    with pytest.raises(SystemExit, match=r"one\.json .*'words_per_example': 1.*two\.json .*'words_per_example': 2"):
        mod.main([str(one), str(two)])
    short = record("short", {"words_per_example": 1}, limit=50)
    with pytest.raises(SystemExit, match=r"one\.json .*limit None.*short\.json .*limit 50"):
        mod.main([str(one), str(short)])
    old = record("old", {"words_per_example": 1}, identity=False)  # a record from before identities
    assert mod.main([str(one), str(old)]) == 0
    with pytest.raises(SystemExit, match="words_per_example"):
        mod.main([str(two), str(old)])


def test_the_judges_agreement_pairs_documents_by_their_share_of_votes(script, capsys):
    """The judge's per-document agreement is [hits, votes]: compared by share, tested by the sign test
    (McNemar's with 0/1 scores), on the committed Table 3 records of the 1.5B model."""
    mod = script("compare_samples")
    judge = ROOT / "results/reproduce/small/qwen2.5-coder-1.5b/table3_mt_bench_bsm/eval/qwen2.5-coder-1.5b/mt_bench_judge"
    a, b = mod.read_samples(judge / "system1.json"), mod.read_samples(judge / "system2-bsm.json")
    hits, votes = map(sum, zip(*(row["metrics"]["agreement"] for row in a.values())))
    record = json.loads((judge / "system1.json").read_text())["lm_eval"]["results"]["s2d_mt_bench_judge"]
    assert hits / votes == pytest.approx(record["agreement,none"])  # the lists are what the record sums
    c = mod.compare(a, b, "agreement")
    assert c["documents"] == 200 and c["shares"] and c["only_a"] > c["only_b"]
    assert c["only_a"] + c["only_b"] + c["both_right"] + c["neither"] <= 200
    assert mod.value([1, 2]) == 0.5 and mod.value(None) is None and mod.value(True) == 1.0
    with pytest.raises(SystemExit, match="a number or \\[hits, votes\\]"):
        mod.value(["82-a-b", "tie"])  # the inconsistency metric is not a score
    assert mod.main([str(judge / "system1.json"), str(judge / "system2-bsm.json"), "--metric", "agreement"]) == 0
    assert "exact sign test on the" in capsys.readouterr().out

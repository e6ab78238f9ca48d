"""scripts/rescore_samples.py: saved responses scored again with today's extractors (no model).
The 1.5B probe's records must agree with today's scorers (its zero-shot CoT coin-flip record was
remade after the coin-flip extractor fix; before it, that record stored 59.0% where its responses
score 73.0%)."""

import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROBE = ROOT / "results/eval/qwen2.5-coder-1.5b"


def test_the_committed_records_agree_with_todays_scorers(script):
    """Every committed eval record (both models' probes) stores what today's scorers read in its
    responses: a scorer fix must come with `rescore_samples.py --write` or a remade record."""
    mod = script("rescore_samples")
    paths = sorted(p for p in (ROOT / "results/eval").rglob("*.json") if p.with_suffix(".samples.jsonl").is_file())
    rows = [r for r in (mod.rescore(p) for p in paths) if r]
    assert len(rows) >= 14 and any(r["record"].startswith(str(PROBE)) for r in rows)
    stale = [(r["record"], r["stored"], r["now"]) for r in rows
             if (r["stored"] is None) != (r["now"] is None) or (r["now"] is not None and abs(r["stored"] - r["now"]) > 1e-9)
             or mod.changed(r)]
    assert not stale, stale  # every document's metrics and parsed answer, not only the means
    cot = next(r for r in rows if r["record"].endswith("coin_flip/cot+limit=100.json"))
    assert cot["answers"].get("no", 0) > 10  # the reasoning model's "tails up" conclusions count as no


def test_write_stores_todays_scores_and_what_it_replaced(script, tmp_path):
    mod = script("rescore_samples")
    src = PROBE / "coin_flip" / "system1+limit=100.json"
    samples = src.with_name(src.stem + ".samples.jsonl")
    for path in (src, samples):
        shutil.copy(path, tmp_path / path.name)
    record, lines = tmp_path / src.name, tmp_path / samples.name
    # What a record scored by an older extractor looks like: one document's answer and metric, and the mean.
    rec = json.loads(record.read_text())
    rec["lm_eval"]["results"]["s2d_coin_flip"]["exact_match,none"] = 0.5
    record.write_text(json.dumps(rec))
    rows = [json.loads(x) for x in lines.read_text().splitlines()]
    true = {"doc_id": rows[0]["doc_id"], "answer": rows[0]["answer"], "metrics": dict(rows[0]["metrics"])}
    rows[0]["answer"], rows[0]["metrics"]["exact_match"] = "stale", 1.0 - true["metrics"]["exact_match"]
    lines.write_text("".join(json.dumps(r) + "\n" for r in rows))

    row = mod.rescore(record)
    assert row["stored"] == 0.5 and mod.changed(row)
    assert mod.write(row) == {"exact_match": 0.5, "unparseable": rec["lm_eval"]["results"]["s2d_coin_flip"][
        "unparseable,none"]}
    again = mod.rescore(record)
    assert not mod.changed(again) and again["stored"] == again["now"] == mod.rescore(src)["now"]
    first = json.loads(lines.read_text().splitlines()[0])
    assert {k: first[k] for k in true} == true and first["response"] == rows[0]["response"]
    saved = json.loads(record.read_text())
    assert [e["before"]["exact_match"] for e in saved["s2d"]["rescored"]] == [0.5] and "_path" not in saved


def test_refresh_summaries_fills_a_missing_target_accuracy_from_the_kept_records(script, tiny_data, tmp_path):
    """A TriviaQA curation made when target accuracy was a string compare (None for alias lists)
    gets the task scorer's share of right targets, in summary.json and sft.summary.json alike."""
    from s2d.plugins import get_plugins

    mod = script("refresh_summaries")
    task = get_plugins().get("tasks", "triviaqa_bias").obj(test_questions=2)
    plain = [d for d in task.docs("train") if d["template"] == "plain"]
    curation = {"curator": "usc", "kept_inputs": 2, "target_accuracy": None}
    summary = {"run": "r", "settings": {"task": "triviaqa_bias", "task_options": {"test_questions": 2},
                                        "split": "train"}, "rows": [], "error": None, "curation": dict(curation)}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    (tmp_path / "sft.summary.json").write_text(json.dumps(curation))
    texts = [f"It is {plain[0]['answers'][0]}.", "I do not know."]
    (tmp_path / "sft.jsonl").write_text("".join(
        json.dumps({"prompt": [], "completion": [{"role": "assistant", "content": t}], "s2d": {"id": d["id"]}}) + "\n"
        for d, t in zip(plain, texts)))
    changes = mod.refresh(tmp_path / "summary.json")
    assert changes == ["round 1 target accuracy: None -> 0.500 (2 judged)"]
    for written in (json.loads((tmp_path / "summary.json").read_text())["curation"],
                    json.loads((tmp_path / "sft.summary.json").read_text())):
        assert (written["target_accuracy"], written["targets_judged"]) == (0.5, 2)
    assert mod.refresh(tmp_path / "summary.json") == []  # filled: nothing more to do


def test_refresh_summaries_reads_an_eval_runs_records_where_its_summary_names_them(script, tmp_path):
    """An eval run exported without its records (results/search/runs) names them repo-relative in
    `records`: a rescored record's score reaches its summary too."""
    mod = script("refresh_summaries")
    named = "results/eval/qwen2.5-coder-1.5b/coin_flip/system1+limit=100.json"
    score = json.loads((ROOT / named).read_text())["lm_eval"]["results"]["s2d_coin_flip"]["exact_match,none"]
    summary = {"run": "r", "settings": {"task": "coin_flip"}, "error": None, "curation": None,
               "rows": [{"condition": "system1", "metric": "exact_match", "score": score + 0.25, "metrics": {}}],
               "records": {"system1": named}}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    assert mod.refresh(tmp_path / "summary.json") == [f"system1: {score + 0.25} -> {score}"]
    assert json.loads((tmp_path / "summary.json").read_text())["rows"][0]["score"] == score
    assert mod.refresh(tmp_path / "summary.json") == []

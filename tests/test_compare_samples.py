"""scripts/compare_samples.py on committed records: the 1.5B zero-shot CoT coin flip run, whose
student answers "yes" to every test question (no model)."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "results/distill/qwen_coin_flip_cot/eval/qwen2.5-coder-1.5b/coin_flip"


def load():
    spec = importlib.util.spec_from_file_location("compare_samples", ROOT / "scripts" / "compare_samples.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_a_teacher_and_its_student_compared_document_by_document(capsys):
    mod = load()
    a, b = mod.read_samples(RUN / "system2-cot.json"), mod.read_samples(RUN / "distilled.json")
    c = mod.compare(a, b)
    cells = (c["both_right"], c["only_a"], c["only_b"], c["neither"])
    assert c["documents"] == sum(cells) == 100
    for name, right in (("system2-cot", c["both_right"] + c["only_a"]), ("distilled", c["both_right"] + c["only_b"])):
        score = json.loads((RUN / f"{name}.json").read_text())["lm_eval"]["results"]["s2d_coin_flip"]["exact_match,none"]
        assert right == round(score * 100)  # the cells agree with the record's own mean
    assert c["answers_b"] == [("yes", 100)]
    k, n = min(c["only_a"], c["only_b"]), c["only_a"] + c["only_b"]
    assert c["mcnemar_p"] == pytest.approx(min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n))
    assert mod.main([str(RUN / "system2-cot.json"), str(RUN / "distilled.json")]) == 0
    out = capsys.readouterr().out
    assert "| system2-cot right | 58 (58.0%) | 15 (15.0%) |" in out and "'yes' 100" in out


def test_a_record_without_samples_is_named(tmp_path):
    mod = load()
    (tmp_path / "r.json").write_text("{}")
    with pytest.raises(SystemExit, match=r"r\.json: no samples file r\.samples\.jsonl"):
        mod.read_samples(tmp_path / "r.json")
    (tmp_path / "r.samples.jsonl").write_text('{"doc_id": 0, "metrics": {}}\nnot json\n')
    with pytest.raises(SystemExit, match=r"r\.samples\.jsonl:2: not JSON"):
        mod.read_samples(tmp_path / "r.json")

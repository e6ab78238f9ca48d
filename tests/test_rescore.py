"""scripts/rescore_samples.py: saved responses scored again with today's extractors (no model).
The 1.5B probe's records must agree with today's scorers (its zero-shot CoT coin-flip record was
remade after the coin-flip extractor fix; before it, that record stored 59.0% where its responses
score 73.0%)."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROBE = ROOT / "results/eval/qwen2.5-coder-1.5b"


def load():
    spec = importlib.util.spec_from_file_location("rescore_samples", ROOT / "scripts" / "rescore_samples.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_probe_records_agree_with_todays_scorers():
    mod = load()
    rows = [mod.rescore(p) for p in sorted(PROBE.rglob("*.json")) if not p.name.endswith(".samples.json")]
    rows = [r for r in rows if r]
    assert len(rows) == 14
    stale = [(r["record"], r["stored"], r["now"]) for r in rows if abs(r["stored"] - r["now"]) > 1e-9]
    assert not stale, stale
    cot = next(r for r in rows if r["record"].endswith("coin_flip/cot+limit=100.json"))
    assert cot["answers"].get("no", 0) > 10  # the reasoning model's "tails up" conclusions count as no

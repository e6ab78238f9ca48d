"""scripts/rescore_samples.py on a committed record: the saved responses scored again with today's
extractor (no model). The 1.5B model's zero-shot CoT on coin flip was stored at 59.0% under the
extractor that read the restated premise as the answer."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECORD = ROOT / "results/eval/qwen2.5-coder-1.5b/coin_flip/cot+limit=100.json"


def test_rescoring_a_committed_record_shows_the_fixed_coin_flip_extractor():
    spec = importlib.util.spec_from_file_location("rescore_samples", ROOT / "scripts" / "rescore_samples.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    row = mod.rescore(RECORD)
    assert round(row["stored"], 2) == 0.59 and round(row["now"], 2) == 0.73
    assert row["answers"] == {"yes": 84, "no": 16}

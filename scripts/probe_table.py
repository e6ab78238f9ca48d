"""The probe's tables from its eval records: per task and condition, the headline score, mean
generated tokens, the share of responses cut by the token cap per stage, and BSM's parse rates;
then the prompt-sensitivity table (each RaR/CoT wording on last letter and coin flip).

    python scripts/probe_table.py results/eval/qwen2.5-coder-1.5b > results/eval/qwen2.5-coder-1.5b/probe.md
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    from s2d.store import headline_metric, load_records, metrics_of

    folder = Path(sys.argv[1])
    records = [r for r in load_records(folder) if "decoding" in str(r["s2d"].get("identity", {}))]
    lines = [f"| task | condition | n | score | mean #tokens | cut by the cap (per stage) | other |",
             "|---|---|---|---|---|---|---|"]
    for r in sorted(records, key=lambda r: (r["s2d"]["task"], r["s2d"]["condition"])):
        s, m = r["s2d"], metrics_of(r)
        key = headline_metric(m)
        cut = ", ".join(f"{k} {100 * v:.0f}%" for k, v in (s.get("cap_hit_share_by_stage") or {}).items())
        other = ", ".join(f"{k} {100 * v:.1f}%" for k, v in sorted(m.items())
                          if k != key and k.startswith(("acc_", "unparseable", "inconsistent")) and v == v)
        other += "".join(f", {k} {100 * v:.0f}%" for k, v in (s.get("method_stats") or {}).items())
        lines.append(f"| {s['task']} | {s['condition']} | {s['n_examples']} | {key} {100 * m[key]:.1f}% | "
                     f"{s['mean_generated_tokens']:.1f} | {cut} | {other.strip(', ')} |")
    print("\n".join(lines))
    print("\nPrompt sensitivity (exact match, mean tokens; the same questions):\n")
    print("| task | method | s2d | paper | original |\n|---|---|---|---|---|")
    by = {(r["s2d"]["task"], r["s2d"]["method"], (r["s2d"].get("method_options") or {}).get("wording", "s2d")): r
          for r in records if not (r["s2d"].get("method_options") or {}).keys() - {"wording"}}
    for task in ("last_letter", "coin_flip"):
        for method in ("cot", "rar1", "rar2"):
            cells = []
            for wording in ("s2d", "paper", "original"):
                r = by.get((task, method, wording))
                cells.append(f"{100 * metrics_of(r)['exact_match']:.1f}% ({r['s2d']['mean_generated_tokens']:.0f})"
                             if r else "-")
            if any(c != "-" for c in cells):
                print(f"| {task} | {method} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

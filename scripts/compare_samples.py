"""Compare two `s2d eval` records document by document: where a student beats its teacher, or ties
it by luck. Reads the records' `*.samples.jsonl` (written by `--log-samples`, and by every
`s2d distill` eval), loads no model.

    python scripts/compare_samples.py results/distill/RUN/eval/MODEL/TASK/system2-cot.json \\
        results/distill/RUN/eval/MODEL/TASK/distilled.json

Prints Markdown: the 2x2 table of right and wrong on the documents both records scored, how often
the two parsed answers are the same, the exact McNemar test on the documents where exactly one is
right (a two-sided binomial test of the discordant pairs: a score difference of a few documents is
often no difference at all), and each record's most frequent answers (a student that learnt a
prior, such as "yes" to every coin flip, shows here).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path


def read_samples(record: Path) -> dict:
    """{document id: sample line} of a record's samples file; a clear error if there is none."""
    path = record.with_name(record.stem + ".samples.jsonl")
    if not path.is_file():
        raise SystemExit(f"{record}: no samples file {path.name} (evaluate with --log-samples)")
    out = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise SystemExit(f"{path}:{n}: not JSON ({e})") from None
        doc = row.get("doc") or {}
        out[str(doc.get("id", row.get("doc_id")))] = row
    return out


def compare(a: dict, b: dict, metric: str = "exact_match") -> dict:
    """Counts over the documents both sample sets hold (a document without ``metric`` is skipped)."""
    from scipy.stats import binomtest

    both = [k for k in a if k in b and metric in a[k]["metrics"] and metric in b[k]["metrics"]]
    right = collections.Counter((a[k]["metrics"][metric] > 0, b[k]["metrics"][metric] > 0) for k in both)
    only_a, only_b = right[(True, False)], right[(False, True)]
    discordant = only_a + only_b
    return {
        "documents": len(both), "only_in_a": len(a) - len(both), "only_in_b": len(b) - len(both),
        "both_right": right[(True, True)], "only_a": only_a, "only_b": only_b, "neither": right[(False, False)],
        "same_answer": sum(a[k].get("answer") == b[k].get("answer") for k in both),
        "mcnemar_p": binomtest(only_a, discordant, 0.5).pvalue if discordant else 1.0,
        "answers_a": collections.Counter(str(a[k].get("answer")) for k in both).most_common(3),
        "answers_b": collections.Counter(str(b[k].get("answer")) for k in both).most_common(3),
    }


def report(c: dict, name_a: str, name_b: str, metric: str) -> str:
    n = c["documents"]

    def share(k):
        return f"{c[k]} ({c[k] / n:.1%})" if n else "0"

    def top(answers):
        return ", ".join(f"{a!r} {k}" for a, k in answers)

    lines = [f"{n} documents in both records ({metric})"
             + (f"; {c['only_in_a']} only in {name_a}, {c['only_in_b']} only in {name_b}"
                if c["only_in_a"] or c["only_in_b"] else ""), "",
             f"| | {name_b} right | {name_b} wrong |", "|---|---|---|",
             f"| {name_a} right | {share('both_right')} | {share('only_a')} |",
             f"| {name_a} wrong | {share('only_b')} | {share('neither')} |", "",
             f"- {name_a} {(c['both_right'] + c['only_a']) / max(n, 1):.1%}, "
             f"{name_b} {(c['both_right'] + c['only_b']) / max(n, 1):.1%}; the same parsed answer on {share('same_answer')}",
             f"- exact McNemar test on the {c['only_a'] + c['only_b']} documents where one is right: "
             f"p = {c['mcnemar_p']:.3g}",
             f"- most frequent answers: {name_a} {top(c['answers_a'])}; {name_b} {top(c['answers_b'])}"]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", type=Path, help="an s2d eval record (.json), e.g. the teacher's System 2 row")
    ap.add_argument("b", type=Path, help="another, e.g. the distilled row")
    ap.add_argument("--metric", default="exact_match")
    args = ap.parse_args(argv)
    a, b = read_samples(args.a), read_samples(args.b)
    c = compare(a, b, args.metric)
    if not c["documents"]:
        raise SystemExit(f"{args.a} and {args.b} share no document scored by {args.metric}")
    print(report(c, args.a.stem, args.b.stem, args.metric))
    return 0


if __name__ == "__main__":
    sys.exit(main())

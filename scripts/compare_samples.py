"""Compare two `s2d eval` records document by document: where a student beats its teacher, or ties
it by luck. Reads the records' `*.samples.jsonl` (written by `--log-samples`, and by every
`s2d distill` eval), loads no model.

    python scripts/compare_samples.py results/distill/RUN/eval/MODEL/TASK/system2-cot.json \\
        results/distill/RUN/eval/MODEL/TASK/distilled.json

Prints Markdown: the 2x2 table of right and wrong on the documents both records scored, how often
the two parsed answers are the same, the exact McNemar test on the documents where exactly one is
right (a two-sided binomial test of the discordant pairs: a score difference of a few documents is
often no difference at all), and each record's most frequent answers (a student that learnt a
prior, such as "yes" to every coin flip, shows here). A document is right when its metric is above
0, so `--metric` must be one where higher is better (exact_match, acc). The judge's `agreement`
is per document [hits, votes] (the share of its human votes the verdict matches): documents are
then compared by share, and the test is the exact sign test on those whose shares differ (McNemar's
test is its 0/1 case). Both records must be of the same task, task options and limit; documents are
paired by their id.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
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
        if not isinstance(row, dict):
            raise SystemExit(f"{path}:{n}: not a sample line (a JSON object)")
        key = (row.get("doc") or {}).get("id", row.get("doc_id"))
        if key is None:
            raise SystemExit(f"{path}:{n}: no document id (doc.id or doc_id)")
        if str(key) in out:
            raise SystemExit(f"{path}:{n}: document {key!r} appears twice")
        out[str(key)] = row
    return out


def task_of(record: Path) -> str | None:
    try:
        return json.loads(record.read_text(encoding="utf-8"))["s2d"]["task"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def settings_of(record: Path) -> tuple[dict, int | None]:
    """The record's task options and limit: what decides which documents it holds and what each
    asks (its identity; a record from before identities: its generation settings)."""
    try:
        s2d = json.loads(record.read_text(encoding="utf-8"))["s2d"]
        identity = s2d.get("identity") or {"task_options": (s2d.get("generation") or {}).get("task_options"),
                                           "limit": s2d.get("limit")}
        return dict(identity.get("task_options") or {}), identity.get("limit")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}, None


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: the binomial test of b successes in b + c at 1/2."""
    n, k = b + c, min(b, c)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)


def value(metric) -> float | None:
    """A document's score: a number, or ``[hits, votes]`` (the judge's agreement: the share of the
    document's human votes its verdict matches) as hits / votes; None where it has none."""
    if metric is None:
        return None
    if isinstance(metric, (int, float)):  # bool too
        return float(metric)
    if isinstance(metric, (list, tuple)) and len(metric) == 2 and all(isinstance(x, (int, float)) for x in metric):
        return metric[0] / metric[1] if metric[1] else None
    raise SystemExit(f"a per-document metric must be a number or [hits, votes], got {metric!r}")


def compare(a: dict, b: dict, metric: str = "exact_match") -> dict:
    """Counts over the documents both sample sets hold (a document without ``metric`` is skipped).
    "only_a": documents where a scores higher than b (with 0/1 scores: a right, b wrong), so the test
    on only_a against only_b is McNemar's, and for shares of votes the exact sign test."""
    scores = {k: (value((a[k].get("metrics") or {}).get(metric)), value((b[k].get("metrics") or {}).get(metric)))
              for k in a if k in b}
    both = [k for k, (x, y) in scores.items() if x is not None and y is not None]
    right = collections.Counter((scores[k][0] > scores[k][1]) - (scores[k][0] < scores[k][1]) for k in both)
    only_a, only_b = right[1], right[-1]
    return {
        "documents": len(both), "unpaired_a": len(a) - len(both), "unpaired_b": len(b) - len(both),
        "both_right": sum(scores[k][0] == scores[k][1] > 0 for k in both), "only_a": only_a, "only_b": only_b,
        "neither": sum(scores[k][0] == scores[k][1] == 0 for k in both),
        "shares": any(0 < x < 1 for k in both for x in scores[k]),
        "score_a": sum(scores[k][0] for k in both) / max(len(both), 1),
        "score_b": sum(scores[k][1] for k in both) / max(len(both), 1),
        "same_answer": sum(a[k].get("answer") == b[k].get("answer") for k in both),
        "mcnemar_p": mcnemar_exact(only_a, only_b),
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
             + (f"; left out: {c['unpaired_a']} of {name_a}'s, {c['unpaired_b']} of {name_b}'s (not in the other "
                f"record, or without {metric})" if c["unpaired_a"] or c["unpaired_b"] else ""), "",
             f"| | {name_b} right | {name_b} wrong |", "|---|---|---|",
             f"| {name_a} right | {share('both_right')} | {share('only_a')} |",
             f"| {name_a} wrong | {share('only_b')} | {share('neither')} |", "",
             f"- {name_a} {c['score_a']:.1%}, {name_b} {c['score_b']:.1%} (the mean per document); the same parsed "
             f"answer on {share('same_answer')}",
             (f"- scores are shares of a document's votes: \"right\" above means the higher score, \"both right\" "
              f"equal and above 0; exact sign test on the {c['only_a'] + c['only_b']} documents whose scores differ: "
              f"p = {c['mcnemar_p']:.3g}") if c["shares"] else
             (f"- exact McNemar test on the {c['only_a'] + c['only_b']} documents where one is right: "
              f"p = {c['mcnemar_p']:.3g}"),
             f"- most frequent answers: {name_a} {top(c['answers_a'])}; {name_b} {top(c['answers_b'])}"]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", type=Path, help="an s2d eval record (.json), e.g. the teacher's System 2 row")
    ap.add_argument("b", type=Path, help="another, e.g. the distilled row")
    ap.add_argument("--metric", default="exact_match", help="a per-document metric where higher is better")
    args = ap.parse_args(argv)
    tasks = task_of(args.a), task_of(args.b)
    if None in tasks:
        raise SystemExit(f"{args.a if tasks[0] is None else args.b}: not an s2d eval record")
    if tasks[0] != tasks[1]:
        raise SystemExit(f"{args.a} is a {tasks[0]} record and {args.b} a {tasks[1]} one: nothing to pair")
    settings = settings_of(args.a), settings_of(args.b)
    if settings[0] != settings[1]:  # ids repeat across options (one name or two): pairs would ask other questions
        (opts_a, limit_a), (opts_b, limit_b) = settings
        raise SystemExit(f"{args.a} has task options {opts_a} and limit {limit_a}, {args.b} task options {opts_b} "
                         f"and limit {limit_b}: their documents are not the same questions")
    a, b = read_samples(args.a), read_samples(args.b)
    c = compare(a, b, args.metric)
    if not c["documents"]:
        raise SystemExit(f"{args.a} and {args.b} share no document scored by {args.metric}")
    print(report(c, args.a.stem, args.b.stem, args.metric))
    return 0


if __name__ == "__main__":
    sys.exit(main())

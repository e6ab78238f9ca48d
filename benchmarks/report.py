"""Shared by the benchmark scripts: a run's metadata and its Markdown + JSON report."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path


def run_meta(**extra) -> dict:
    """Command, date, machine, versions and commit of this run (stored beside every figure)."""
    from s2d.envinfo import git_commit, versions

    return {"command": "python " + " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "loadavg": os.getloadavg()},
            "versions": versions(), "git_commit": git_commit(), **extra}


def markdown_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_report(out_dir: str, stem: str, title: str, table: str, figures: dict, rows: dict, meta: dict,
                 notes: str = "") -> None:
    """Print the table and figures; write <stem>.md and <stem>.json (every printed figure) to out_dir."""
    print(table)
    print(json.dumps(figures, indent=2))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps({**figures, "rows": rows, "meta": meta}, indent=2, default=str) + "\n")
    (out / f"{stem}.md").write_text(f"# {title}\n\nCommand: `{meta['command']}` ({meta['date']}, commit "
                                    f"{meta['git_commit']})\n\n{table}\n\n{notes}\nVersions: "
                                    f"{json.dumps(meta['versions'])}\n")

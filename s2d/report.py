"""Reports over finished work: `s2d leaderboard`, a Markdown table and a plot of every `s2d eval`
record under a folder, with the accuracy/cost curve of each `s2d route` result beside them."""

from __future__ import annotations

from pathlib import Path

from s2d.files import atomic_write
from s2d.routing import draw_route, load_routings
from s2d.store import HEADLINE_METRICS, headline_metric, load_records, metrics_of, record_source


def leaderboard(results_dir: str | Path, out_dir: str | Path | None = None,
                warn=None) -> tuple[str, Path, Path | None]:
    """Write leaderboard.md (and leaderboard.png when matplotlib is there) for every record; each
    file that looks like a record but cannot be used is named through ``warn`` with the reason."""
    skipped: list = []
    records = load_records(results_dir, skipped)
    for path, why in skipped:
        (warn or (lambda m: None))(f"s2d: leaderboard skips {path}: {why}")
    if not records:
        raise FileNotFoundError(f"no s2d eval records under {results_dir}")
    out_dir = Path(out_dir or results_dir)
    lines = ["# s2d leaderboard", ""]
    by_task: dict[str, list[dict]] = {}
    for r in records:
        by_task.setdefault(r["s2d"]["task"], []).append(r)
    for task, rows in sorted(by_task.items()):
        metric_names = sorted({m for r in rows for m in metrics_of(r)},
                              key=lambda m: (m not in HEADLINE_METRICS, m))
        # Runs of `s2d distill` each hold a system1 and a distilled record: name the run.
        sources = {id(r): record_source(r, results_dir) for r in rows}
        runs = any(sources.values())
        lines += [f"## {task}", "", "| model | condition | " + ("run | " if runs else "") + "backend | n | " +
                  " | ".join(metric_names) + " | mean #tokens | wall s |",
                  "|" + "---|" * (len(metric_names) + 6 + runs)]
        for r in sorted(rows, key=lambda r: (r["s2d"]["model"], r["s2d"]["condition"], sources[id(r)])):
            m = metrics_of(r)
            s = r["s2d"]
            cells = [f"{100 * m[k]:.1f}%" if k in m and m[k] == m[k] else "-" for k in metric_names]
            opts = (s.get("generation") or {}).get("task_options") or {}
            n_cell = f"{s['n_examples']}" + (" (" + ", ".join(f"{k}={v}" for k, v in sorted(opts.items())) + ")"
                                             if opts else "")
            run_cell = f"{sources[id(r)] or '-'} | " if runs else ""
            lines.append(f"| {s['model']} | {s['condition']} | {run_cell}{s['backend']} | {n_cell} | " +
                         " | ".join(cells) + f" | {s['mean_generated_tokens']:.1f} | {s['wall_seconds']:.0f} |")
        lines.append("")
    table = "\n".join(lines)
    md = out_dir / "leaderboard.md"
    with atomic_write(md) as f:
        f.write(table)
    png = _plot(by_task, out_dir / "leaderboard.png", load_routings(results_dir))
    return table, md, png


def _plot(by_task: dict, path: Path, routings: dict | None = None) -> Path | None:
    """One panel per task: accuracy against mean tokens for every record, and the accuracy/cost
    curve of each `s2d route` result (routing.json) found beside them."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, len(by_task), figsize=(4 * len(by_task), 3.5), squeeze=False)
    for ax, (task, rows) in zip(axes[0], sorted(by_task.items())):
        for r in rows:
            m = metrics_of(r)
            key = headline_metric(m)
            if key is None:
                continue
            ax.scatter(r["s2d"]["mean_generated_tokens"], 100 * m[key])
            ax.annotate(r["s2d"]["condition"], (r["s2d"]["mean_generated_tokens"], 100 * m[key]), fontsize=7)
        for result in (routings or {}).get(task, []):
            draw_route(ax, result, rows=False)
            ax.legend(fontsize=6)
        ax.set_ylim(0, 100)  # a shared scale, so panels and conditions compare at a glance
        ax.set_xlim(left=0)
        ax.set_title(task)
        ax.set_xlabel("mean generated tokens")
        ax.set_ylabel("accuracy / agreement (%)")
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)
    return path

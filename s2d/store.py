"""What s2d keeps on disk between commands, and how it names it: path-safe names, the content hash
of a model or adapter folder, the run folder of `s2d distill`, and `s2d eval`'s records (reading,
checking and locking one). Nothing here builds a plugin or loads a model, so every layer above may
read a run or a record (the import contract in pyproject.toml)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path

from s2d.envinfo import git_commit, versions
from s2d.errors import ConfigError, RecordExistsError
from s2d.files import atomic_write, cache_dir, write_json
from s2d.locks import SUFFIX, hold

SAFE = re.compile(r"[^A-Za-z0-9._+=-]+")


def safe_name(text: str) -> str:
    """A path component that cannot climb out of the results folder."""
    name = SAFE.sub("_", text).strip("._") or "unnamed"
    return name[:120]


# -- the identity of weights ------------------------------------------------------------------------
# Files whose bytes decide what a model or adapter folder generates (weights, config, tokenizer).
_IDENTITY_FILES = ("*.safetensors", "*.bin", "config.json", "generation_config.json", "adapter_config.json",
                   "tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json",
                   "tokenizer.model", "vocab.json", "merges.txt")


def weights_fingerprint(path: str | os.PathLike) -> str:
    """A content hash of a model or adapter folder (or a single file): what the generation cache
    keys a model by, so retraining into the same folder never returns the old weights' samples.

    Hashing a 540 MB fp32 folder takes about a second; the digest is memoised under the s2d cache
    by (path, size, mtime) of every file, so a folder is hashed again only when it changes."""
    path = Path(path).resolve()
    files = sorted({f for pattern in _IDENTITY_FILES for f in path.glob(pattern) if f.is_file()}) \
        if path.is_dir() else [path]
    stats = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    memo = cache_dir() / "fingerprints" / (
        hashlib.sha256(json.dumps([str(path), stats]).encode()).hexdigest()[:32] + ".txt")
    if memo.is_file():
        return memo.read_text().strip()
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                digest.update(chunk)
    value = digest.hexdigest()[:24]
    with atomic_write(memo) as fh:
        fh.write(value + "\n")
    return value


def weights_identity(path: str | None) -> str | None:
    """``sha256:<digest>`` of a local model or adapter folder, else the reference itself."""
    if path and os.path.exists(path):
        return f"sha256:{weights_fingerprint(path)}"
    return path


# -- the run folder ---------------------------------------------------------------------------------
TRAINING_CONFIG = "s2d_training.json"  # what a trainer writes last in its output folder


def training_config(path: str | os.PathLike) -> dict | None:
    """The settings and data hash a finished training recorded in folder ``path``, None before."""
    p = Path(path) / TRAINING_CONFIG
    return json.loads(p.read_text()) if p.is_file() else None


# Settings that say how a run is computed, not what: a run started on 8 GPUs may resume on 4, or
# with less GPU memory. max_model_len stays compared (it can cut a prompt, so it changes outputs).
HOW_SETTINGS = ("train_processes", "accelerate_config")
HOW_ENGINE_OPTIONS = ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size",
                      "distributed_executor_backend", "gpu_memory_utilization", "enforce_eager")


def what_is_made(settings: dict) -> dict:
    """``settings`` (JSON-normalised) without the ones that only say how the run is computed."""
    out = {k: v for k, v in json.loads(json.dumps(settings)).items() if k not in HOW_SETTINGS}
    if isinstance(out.get("engine_options"), dict):
        out["engine_options"] = {k: v for k, v in out["engine_options"].items() if k not in HOW_ENGINE_OPTIONS}
    return out


def changed_settings(saved: dict, settings: dict, defaults: dict) -> list[str]:
    """The settings that make ``settings``' run another run than the one ``saved`` (as a run folder
    or summary keeps them; settings added since take their ``defaults``) made, sorted."""
    old, now = what_is_made({**defaults, **saved}), what_is_made(settings)
    return sorted(k for k in set(old) | set(now) if old.get(k) != now.get(k))


def in_round(name: str):
    """A :class:`RunFolder` method ``(r=1) -> Path``: ``name`` in round r's folder."""
    def path(self, r: int = 1) -> Path:
        return self.round_dir(r) / name

    path.__doc__ = f"Round r's ``{name}``."
    return path


class RunFolder:
    """A run's folder: where each round's files live, which stages are done, and the refusal to
    mix two runs (config.json holds the settings it was made with). No engine, no stage logic."""

    def __init__(self, path: str | Path, settings: dict):
        self.path, self.settings = Path(path), settings

    def round_dir(self, r: int) -> Path:
        """Round 1 lives in the folder itself, round r > 1 in ``round<r>/``."""
        return self.path if r == 1 else self.path / f"round{r}"

    # Round r's files: ``folder.traces(r)`` (round 1 by default).
    traces = in_round("traces.jsonl")
    curated = in_round("sft.jsonl")
    curation_summary = in_round("sft.summary.json")
    adapter = in_round("adapter")
    merged = in_round("merged")
    eval_dir = in_round("eval")

    def summary(self) -> Path:
        return self.path / "summary.json"

    # What is done: a stage counts as done only when its last file is written.
    def generated(self, r: int = 1) -> bool:
        return self.traces(r).is_file()

    def curation_done(self, r: int = 1) -> bool:
        # The summary is written last: a kill between the curated set and it redoes the stage.
        return self.curated(r).is_file() and self.curation_summary(r).is_file()

    def trained(self, r: int = 1) -> bool:
        return training_config(self.adapter(r)) is not None

    def curation(self, r: int = 1) -> dict | None:
        """The curate stage's summary, None before it has run."""
        path = self.curation_summary(r)
        return json.loads(path.read_text()) if path.is_file() else None

    def lock(self) -> Path:
        """The lock a run holds from its claim through its export (see :mod:`s2d.locks`)."""
        return self.path / SUFFIX

    def saved(self) -> dict | None:
        """The config.json the run folder was claimed with, None for a new or empty folder. Any other
        content is refused: a run never writes over (or reuses the traces of) something else."""
        if not self.path.exists():
            return None
        if not self.path.is_dir():
            raise ConfigError(f"run folder {self.path}: is a file, not a folder")
        path = self.path / "config.json"
        if not path.is_file():
            other = sorted(p.name for p in self.path.iterdir() if not p.name.startswith(SUFFIX))
            if other:
                raise ConfigError(f"run folder {self.path} holds {', '.join(other[:3])}"
                                  f"{' ...' if len(other) > 3 else ''} but no s2d run ({path} is missing); "
                                  f"choose a new or empty folder")
            return None
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ConfigError(f"run folder {self.path}: {path} is not an s2d run's config ({exc}); "
                              f"choose another folder or remove it yourself") from None
        if not isinstance(saved, dict) or not isinstance(saved.get("settings"), dict):
            raise ConfigError(f"run folder {self.path}: {path} is not an s2d run's config (no 'settings'); "
                              f"choose another folder or remove it yourself")
        return saved

    def claim(self, resolved: dict, defaults: dict) -> None:
        """Make the folder this run's: a new folder records the settings (config.json, and the
        config.yaml `s2d config show` prints) and ``resolved``, the method's options as the run
        resolves them; one holding other settings, or other content, is refused. ``defaults``:
        every setting's default, what a setting newer than the folder counts as there."""
        old = self.saved()
        self.path.mkdir(parents=True, exist_ok=True)
        path = self.path / "config.json"
        if old is not None:
            changed = changed_settings(old.get("settings", {}), self.settings, defaults)
            # A method default changed under the same method and options (a changed method or option
            # changes the resolved options too; naming both would only be noise).
            if ("method_resolved" in old and old["method_resolved"] != resolved
                    and not {"method", "method_options", "n", "temperature", "top_p", "templates"} & set(changed)):
                changed.append("the method's defaults (method_resolved)")
            if changed:
                raise ConfigError(f"{self.path} holds a run with other settings ({', '.join(changed)}); "
                                  f"use another --name or delete the folder")
            return
        write_json(path, {"settings": self.settings, "method_resolved": resolved, "versions": versions(),
                          "git_commit": git_commit(Path(__file__).parent),
                          "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
        import yaml

        with atomic_write(self.path / "config.yaml") as f:
            yaml.safe_dump(self.settings, f, sort_keys=False, default_flow_style=False)



def pct(x) -> str:
    """A share as a report cell: ``0.455`` -> ``45.5%``; anything not a number (None, a bool, NaN)
    -> ``-``. One spelling for the summary, the paper tables, the sweep report and the rescore table."""
    return f"{100 * x:.1f}%" if isinstance(x, (int, float)) and not isinstance(x, bool) and x == x else "-"


def target_accuracy_cell(curation: dict | None) -> str:
    """Target accuracy as a report cell, naming its denominator when some kept targets could not be
    judged (no parsed answer): ``17.6% of 68`` rather than a share that reads as over all 200."""
    cur = curation or {}
    cell, judged, kept = pct(cur.get("target_accuracy")), cur.get("targets_judged"), cur.get("kept_inputs")
    return f"{cell} of {judged}" if cell != "-" and isinstance(judged, int) and judged != kept else cell


# -- eval records -----------------------------------------------------------------------------------
def check_record(path: Path, identity: dict, overwrite: bool = False) -> None:
    """Refuse to replace a record made with other settings (unless ``overwrite``); a rerun of the
    same settings replaces it."""
    if overwrite or not path.is_file():
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8"))["s2d"]
    except (OSError, ValueError, KeyError, TypeError):
        raise RecordExistsError(f"{path} exists and is not an s2d eval record; move it or pass --overwrite") from None
    saved = old.get("identity") or {  # records of earlier versions: compare what they recorded
        "model": old.get("model"), "method": old.get("method"), "method_options": old.get("method_options") or {},
        "limit": old.get("limit"), "task_options": (old.get("generation") or {}).get("task_options") or {},
        "seed": old.get("seed")}
    differ = sorted(k for k in saved if k in identity and saved.get(k) != identity.get(k))
    if {"method", "method_options"} & set(differ):  # the resolved options follow; naming them is noise
        differ = [k for k in differ if k != "method_resolved"]
    if differ:
        shown = "; ".join(f"{k}: {saved.get(k)!r} there, {identity.get(k)!r} now" for k in differ)
        raise RecordExistsError(f"{path} holds a record made with other settings ({shown}); choose another "
                                f"--out-dir or --label, or pass --overwrite")


def record_lock(path: Path):
    """The lock `s2d eval` holds on a record from its check until it is written (a hidden file
    beside it), so two evals of one record cannot both pass the check and lose one result."""
    return hold(Path(path).with_name(f".{Path(path).name}{SUFFIX}"), f"the eval record {path}")


def load_record(path: str | Path, why: list | None = None) -> dict | None:
    """One `s2d eval` record, or None for any other (or unreadable) JSON file; ``why`` collects
    (path, reason) for files that look like records but cannot be read as one."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        if why is not None:
            why.append((str(path), f"unreadable: {exc}"))
        return None
    if not (isinstance(data, dict) and "s2d" in data and "lm_eval" in data):
        return None  # another kind of JSON file (a config, a summary)
    try:
        s = data["s2d"]
        float(s["mean_generated_tokens"]), str(s["task"]), str(s["condition"])
        data["lm_eval"]["results"][results_key(s)].items()
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        if why is not None:
            why.append((str(path), f"not an s2d eval record of this version ({type(exc).__name__}: {exc})"))
        return None
    data["_path"] = str(path)
    return data


def load_records(results_dir: str | Path, skipped: list | None = None) -> list[dict]:
    """Every record under ``results_dir``; ``skipped`` collects (path, why) for those it cannot use."""
    return [r for r in (load_record(p, skipped) for p in sorted(Path(results_dir).rglob("*.json"))) if r is not None]


def record_source(record: dict, results_dir: str | Path) -> str:
    """Where under ``results_dir`` a record sits, above its MODEL/TASK/CONDITION.json: the run
    folder of a `s2d distill` record (``RUN/eval/...``), "" for a plain `s2d eval` one."""
    parts = Path(record["_path"]).resolve().relative_to(Path(results_dir).resolve()).parts[:-3]
    return "/".join(parts[:-1] if parts and parts[-1] == "eval" else parts)


def results_key(s2d: dict) -> str:
    """The name a record's task has in its lm-eval results (records of earlier versions lack it)."""
    return s2d.get("lm_eval_task") or f"s2d_{s2d['task']}"


def metrics_of(record: dict) -> dict[str, float]:
    raw = record["lm_eval"]["results"].get(results_key(record["s2d"]), {})
    out = {}
    for key, value in raw.items():
        if "_stderr" in key or key in ("alias", "sample_len") or not isinstance(value, (int, float)):
            continue
        out[key.split(",")[0]] = value
    return out


# The score a task is ranked by, in this order (acc_biased: triviaqa_bias's leak-free biased score).
HEADLINE_METRICS = ("exact_match", "acc_biased", "acc", "agreement")


def headline_metric(metrics: dict[str, float]) -> str | None:
    """The name of a record's headline score among ``metrics_of(record)`` (None if it has none)."""
    return next((k for k in HEADLINE_METRICS if k in metrics), None)

"""A content-addressed, append-only store of generations, so a killed run resumes where it stopped.

Each line of ``<dir>/generations.jsonl`` is one sample: its key, the text and the token counts. The
key hashes what decides the output -- model (engine, weights, dtype, adapter), method, stage, the
rendered prompt, sampling settings, the run seed and the sample index -- and nothing that does not
(batch size, memory settings, chunking, the order of inputs). Samples are seeded by their index, so
asking later for samples 8..15 of a prompt adds to samples 0..7 instead of redoing them.

Appends are flushed and fsynced per chunk under a file lock. A kill can leave a torn last line; it
is detected on load (no trailing newline, or not JSON), cut off the file and never parsed as data.
A bad line anywhere else is corruption and raises an error naming the file and line.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from s2d.files import InputError

FILE_NAME = "generations.jsonl"


def cache_key(identity: dict) -> str:
    """sha256 of the canonical JSON of everything that decides one sample's text."""
    blob = json.dumps(identity, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class GenerationCache:
    """``get(key)`` / ``put(records)`` over one JSONL file; loads lazily, appends atomically per line."""

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)
        self.path = self.dir / FILE_NAME
        self._data: dict[str, dict] | None = None
        self.discarded_torn_line = False

    def _load(self) -> dict[str, dict]:
        if self._data is not None:
            return self._data
        data: dict[str, dict] = {}
        if self.path.exists():
            with open(self.path, "rb") as f:
                raw = f.read()
            lines = raw.split(b"\n")
            # The piece after the last newline is complete only if it is empty.
            tail, complete = lines[-1], lines[:-1]
            good_bytes = len(raw) - len(tail)
            if tail:
                self._truncate(good_bytes)
            for lineno, line in enumerate(complete, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    key = rec["key"]
                except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
                    if lineno == len(complete):  # a torn final line that happens to end in "\n"
                        self._truncate(good_bytes - len(line) - 1)
                        break
                    raise InputError(f"{self.path}:{lineno}: corrupt generation cache line ({exc}); "
                                     f"delete the line or the file to regenerate") from None
                data[key] = rec
        self._data = data
        return data

    def _truncate(self, size: int) -> None:
        from filelock import FileLock

        with FileLock(str(self.path) + ".lock"):
            with open(self.path, "r+b") as f:
                f.truncate(size)
        self.discarded_torn_line = True

    def get(self, key: str) -> dict | None:
        return self._load().get(key)

    def __contains__(self, key: str) -> bool:
        return key in self._load()

    def __len__(self) -> int:
        return len(self._load())

    def put(self, records: list[dict]) -> None:
        """Append records (each with a ``key``) and make them durable before returning."""
        if not records:
            return
        from filelock import FileLock

        data = self._load()
        self.dir.mkdir(parents=True, exist_ok=True)
        payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
        with FileLock(str(self.path) + ".lock"):
            with open(self.path, "ab") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
        for r in records:
            data[r["key"]] = r

"""A content-addressed store of generations, so a killed run resumes where it stopped.

Each row of ``<dir>/generations.sqlite`` is one sample: its key, the text and the token counts. The
key hashes what decides the output -- model (engine, weights, dtype, adapter), method, stage, the
rendered prompt, sampling settings, the run seed and the sample index -- and nothing that does not
(batch size, memory settings, chunking, the order of inputs). Samples are seeded by their index, so
asking later for samples 8..15 of a prompt adds to samples 0..7 instead of redoing them.

SQLite in WAL mode (stdlib ``sqlite3``) makes it safe for several processes at once: each put is one
transaction (``INSERT OR IGNORE`` on the key, so a sample two runs made is stored once), a kill
loses at most the transaction in flight, and readers look keys up instead of loading the store.
A cache in the old one-file JSONL layout (``generations.jsonl``) is imported on first open and the
file is kept, renamed ``generations.jsonl.imported``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path

from s2d.errors import InputError

FILE_NAME = "generations.sqlite"
LEGACY_NAME = "generations.jsonl"


def cache_key(identity: dict) -> str:
    """sha256 of the canonical JSON of everything that decides one sample's text."""
    blob = json.dumps(identity, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class GenerationCache:
    """``get(key)`` / ``put(records)`` over one SQLite file shared by every process that opens it."""

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)
        self.path = self.dir / FILE_NAME
        self._db: sqlite3.Connection | None = None
        self.imported = 0  # records taken over from a legacy JSONL cache on first open

    def _conn(self) -> sqlite3.Connection:
        if self._db is not None:
            return self._db
        self.dir.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # durable at each WAL checkpoint; a kill loses no commit
            db.execute("CREATE TABLE IF NOT EXISTS samples (key TEXT PRIMARY KEY, record TEXT NOT NULL)")
            self._import_legacy(db)  # before the connection is kept: a failed import is never skipped later
        except sqlite3.DatabaseError as exc:
            db.close()
            raise InputError(f"{self.path}: not a usable generation cache ({exc}); move it away to start "
                             f"a new one") from None
        except BaseException:
            db.close()
            raise
        self._db = db
        return db

    def _import_legacy(self, db: sqlite3.Connection) -> None:
        """Take over a JSONL cache of earlier s2d versions (complete lines only), once."""
        legacy = self.dir / LEGACY_NAME
        if not legacy.is_file():
            return
        from filelock import FileLock

        with FileLock(str(legacy) + ".lock"):
            if not legacy.is_file():  # another process imported it while we waited
                return
            raw = legacy.read_bytes()
            lines = raw.split(b"\n")
            records = []
            for lineno, line in enumerate(lines[:-1], 1):  # the piece after the last newline is torn
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    key = rec["key"]
                except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
                    if lineno == len(lines) - 1:  # a torn final line that happens to end in "\n"
                        break
                    raise InputError(f"{legacy}:{lineno}: corrupt generation cache line; delete the line or "
                                     f"the file to regenerate") from None
                records.append((key, json.dumps(rec, ensure_ascii=False)))
            with db:
                db.execute("BEGIN IMMEDIATE")
                db.executemany("INSERT OR IGNORE INTO samples (key, record) VALUES (?, ?)", records)
            kept, k = legacy.with_name(LEGACY_NAME + ".imported"), 1
            while kept.exists():  # an earlier import's copy is never replaced
                kept, k = legacy.with_name(f"{LEGACY_NAME}.imported.{k}"), k + 1
            os.replace(legacy, kept)
            self.imported = len(records)

    def get(self, key: str) -> dict | None:
        row = self._conn().execute("SELECT record FROM samples WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def get_many(self, keys: list[str]) -> dict[str, dict]:
        """The stored records among ``keys`` (one query per 500 keys)."""
        out: dict[str, dict] = {}
        unique = list(dict.fromkeys(keys))
        for i in range(0, len(unique), 500):
            chunk = unique[i:i + 500]
            marks = ",".join("?" * len(chunk))
            for key, record in self._conn().execute(f"SELECT key, record FROM samples WHERE key IN ({marks})",
                                                    chunk):
                out[key] = json.loads(record)
        return out

    def __contains__(self, key: str) -> bool:
        return self._conn().execute("SELECT 1 FROM samples WHERE key = ?", (key,)).fetchone() is not None

    def __len__(self) -> int:
        return self._conn().execute("SELECT COUNT(*) FROM samples").fetchone()[0]

    def put(self, records: list[dict]) -> None:
        """Store records (each with a ``key``) in one transaction, committed before returning."""
        if not records:
            return
        rows = [(r["key"], json.dumps(r, ensure_ascii=False)) for r in records]
        db = self._conn()
        with db:
            db.execute("BEGIN IMMEDIATE")
            db.executemany("INSERT OR IGNORE INTO samples (key, record) VALUES (?, ?)", rows)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

"""On-disk answer cache (SQLite, WAL): one row per answer, committed as it arrives, so an
interrupted run resumes where it stopped and a rerun makes no new calls.

Key: ``(audio_sha256, model, prompt_sha256, temperature, sample_index)`` where ``audio_sha256`` is
the SHA-256 of the exact WAV bytes sent and ``prompt_sha256`` the SHA-256 of the messages' text
(system + user prompt). Stored per answer: the raw text, the parsed distribution as JSON
(``{label: p}``, NULL when unparseable), this answer's share of the request's reported prompt and
completion tokens (NULL when not reported) and a Unix timestamp.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    audio_sha256 TEXT NOT NULL,
    model TEXT NOT NULL,
    prompt_sha256 TEXT NOT NULL,
    temperature REAL NOT NULL,
    sample_index INTEGER NOT NULL,
    text TEXT NOT NULL,
    distribution TEXT,
    prompt_tokens REAL,
    completion_tokens REAL,
    created REAL NOT NULL,
    PRIMARY KEY (audio_sha256, model, prompt_sha256, temperature, sample_index)
)"""


@dataclass(frozen=True)
class CacheKey:
    """Everything that identifies one clip's answers except the sample index."""

    audio_sha256: str
    model: str
    prompt_sha256: str
    temperature: float


@dataclass(frozen=True)
class CachedAnswer:
    index: int
    text: str
    distribution: dict[str, float] | None
    prompt_tokens: float | None
    completion_tokens: float | None
    created: float


class AnswerCache:
    """Thread-safe (one connection behind a lock), usable from several processes (WAL, busy timeout)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(self.path), timeout=30.0, check_same_thread=False)
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute(_SCHEMA)
            self._conn.commit()

    def get(self, key: CacheKey) -> dict[int, CachedAnswer]:
        """All cached answers for ``key``, by sample index."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT sample_index, text, distribution, prompt_tokens, completion_tokens, created FROM answers"
                " WHERE audio_sha256=? AND model=? AND prompt_sha256=? AND temperature=?",
                (key.audio_sha256, key.model, key.prompt_sha256, float(key.temperature)),
            ).fetchall()
        return {r[0]: CachedAnswer(r[0], r[1], json.loads(r[2]) if r[2] else None, r[3], r[4], r[5]) for r in rows}

    def put(
        self,
        key: CacheKey,
        answers: Iterable[tuple[int, str, dict[str, float] | None]],
        prompt_tokens: float | None = None,
        completion_tokens: float | None = None,
    ) -> None:
        """Store ``(sample_index, text, distribution)`` answers of one request and commit; tokens are
        per-answer shares. An index already stored keeps its first answer."""
        now = time.time()
        rows = [
            (
                key.audio_sha256,
                key.model,
                key.prompt_sha256,
                float(key.temperature),
                int(i),
                str(text),
                None if dist is None else json.dumps(dist),
                prompt_tokens,
                completion_tokens,
                now,
            )
            for i, text, dist in answers
        ]
        with self._lock:
            self._conn.executemany("INSERT OR IGNORE INTO answers VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
            self._conn.commit()

    def count(self) -> int:
        """Number of stored answers."""
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM answers").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> AnswerCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

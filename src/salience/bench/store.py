"""`ResultStore`: every benchmark result row in one embedded SQLite file.

A row is written and committed the moment its value is computed, so a run killed at any
point loses at most the batch in flight. The store runs in WAL mode with a long busy
timeout, so several processes (the ranks of a ``torchrun`` launch) write to the same file
safely: SQLite serialises their short write transactions. A UNIQUE key over
(image, model, method, params, metric, metric params) and an upsert make a re-run unable to
duplicate rows: a value computed again replaces the stored one.

``value`` is NULL where a metric does not apply (an image without masks for a mask
metric); ``extra`` holds JSON (the reason for a NULL, the insertion / deletion curve).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..errors import SalienceError

SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY,
    run TEXT NOT NULL,
    image TEXT NOT NULL,
    model TEXT NOT NULL,
    method TEXT NOT NULL,
    params TEXT NOT NULL,
    metric TEXT NOT NULL,
    metric_params TEXT NOT NULL,
    value REAL,
    seconds REAL,
    method_seconds REAL,
    extra TEXT,
    created REAL NOT NULL,
    UNIQUE (image, model, method, params, metric, metric_params)
);
"""
INDEX = "CREATE INDEX IF NOT EXISTS results_unit ON results (model, method, params);"

COLUMNS = ("run", "image", "model", "method", "params", "metric", "metric_params",
           "value", "seconds", "method_seconds", "extra")
KEY = ("image", "model", "method", "params", "metric", "metric_params")
UPDATE = ", ".join(f"{c} = excluded.{c}" for c in (*COLUMNS, "created") if c not in KEY)
BUSY_TIMEOUT_S = 300.0


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no spaces: equal parameters give equal strings."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_jsonable)


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    return str(obj)


@dataclass
class ResultRow:
    """One stored number: a metric of one method's map of one image under one model."""

    image: str
    model: str
    method: str
    params: str
    metric: str
    metric_params: str
    value: float | None
    seconds: float | None = None
    method_seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    run: str = ""

    def key(self) -> tuple:
        return tuple(getattr(self, k) for k in KEY)


class ResultStore:
    """An open result store file (created if missing).

    Raises `SalienceError` with one line if the file exists but is not a readable SQLite
    database, or is a database without this store's table layout.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if self.path.is_dir():
            raise SalienceError(f"result store {self.path}: is a folder, not a file")
        if self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
            self.db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            self._retry_locked(lambda: self.db.execute("PRAGMA journal_mode = WAL"))
            self.db.execute("PRAGMA synchronous = NORMAL")
            self._retry_locked(lambda: self.db.executescript(SCHEMA))
            self._check_layout()
            self._retry_locked(lambda: self.db.executescript(INDEX))
        except sqlite3.DatabaseError as err:
            raise SalienceError(f"result store {self.path}: unreadable ({err}); move it away or pick another --store") from None

    @staticmethod
    def _retry_locked(setup) -> None:
        """Run one setup statement, retried while another rank holds the new file.

        Concurrent ranks race to switch a fresh file to WAL and to create the table; SQLite
        answers those with "database is locked" at once instead of waiting out the busy timeout.
        """
        for attempt in range(100):
            try:
                setup()
                return
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or attempt == 99:
                    raise
                time.sleep(0.1)

    def _check_layout(self) -> None:
        cols = {r[1] for r in self.db.execute("PRAGMA table_info(results)")}
        missing = set(COLUMNS) - cols
        if missing:
            raise SalienceError(
                f"result store {self.path}: not a salience result store (table 'results' lacks {', '.join(sorted(missing))})"
            )

    # -- writing ---------------------------------------------------------------------
    def add(self, rows: Iterable[ResultRow]) -> int:
        """Write rows in one committed transaction; a row whose key exists replaces its values.

        Returns how many rows were written.
        """
        now = time.time()
        values = [
            (r.run, r.image, r.model, r.method, r.params, r.metric, r.metric_params,
             None if r.value is None else float(r.value), r.seconds, r.method_seconds,
             canonical_json(r.extra) if r.extra else None, now)
            for r in rows
        ]
        if not values:
            return 0
        placeholders = ",".join("?" * (len(COLUMNS) + 1))
        with self._transaction():
            before = self.db.total_changes
            self.db.executemany(
                f"INSERT INTO results ({','.join(COLUMNS)}, created) VALUES ({placeholders}) "
                f"ON CONFLICT ({','.join(KEY)}) DO UPDATE SET {UPDATE}",
                values,
            )
            return self.db.total_changes - before

    def _transaction(self):
        store = self

        class _Tx:
            def __enter__(self):
                store.db.execute("BEGIN IMMEDIATE")  # take the write lock now (waits up to the busy timeout)

            def __exit__(self, exc_type, *_):
                store.db.execute("COMMIT" if exc_type is None else "ROLLBACK")

        return _Tx()

    # -- reading ---------------------------------------------------------------------
    def done_keys(self, model: str, method: str, params: str) -> set[tuple[str, str, str]]:
        """(image, metric, metric_params) of every row stored for this model and method."""
        cur = self.db.execute(
            "SELECT image, metric, metric_params FROM results WHERE model = ? AND method = ? AND params = ?",
            (model, method, params),
        )
        return set(cur.fetchall())

    def rows(self, run: str | None = None) -> list[ResultRow]:
        """All rows (of one run, when given), in insertion order."""
        sql = f"SELECT {','.join(COLUMNS)} FROM results"
        args: tuple = ()
        if run is not None:
            sql += " WHERE run = ?"
            args = (run,)
        out = []
        for r in self.db.execute(sql + " ORDER BY id", args):
            d = dict(zip(COLUMNS, r))
            d["extra"] = json.loads(d["extra"]) if d["extra"] else {}
            out.append(ResultRow(**d))
        return out

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM results").fetchone()[0]

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "ResultStore":
        return self

    def __exit__(self, *_) -> None:
        self.close()

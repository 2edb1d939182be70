"""Running `salience.bench` in a subprocess, as a user would, killing it mid-run, reading its store."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from salience.bench.store import KEY

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}", "OMP_NUM_THREADS": "1"}


def table(path: str | Path) -> dict[tuple, float | None]:
    """key -> value of every row, read with plain sqlite3; asserts no key appears twice."""
    db = sqlite3.connect(str(path))
    rows = db.execute(f"SELECT {','.join(KEY)}, value FROM results").fetchall()
    db.close()
    out = {r[:-1]: r[-1] for r in rows}
    assert len(out) == len(rows), "duplicate keys in the store"
    return out


def stored_rows(store: str | Path) -> int:
    """Rows in a result store (0 while it is being created)."""
    if not Path(store).exists():
        return 0
    try:
        return sqlite3.connect(store, timeout=1).execute("SELECT COUNT(*) FROM results").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def kill_bench_midway(config: Path, store: str | Path, rows: int, timeout: float) -> None:
    """Start ``bench --config config``, SIGKILL it once ``store`` holds ``rows`` results
    (it must still be running then: the kill lands mid-run)."""
    proc = subprocess.Popen([sys.executable, "-m", "salience.bench", "bench", "--config", str(config)],
                            cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and stored_rows(store) < rows:
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-500:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

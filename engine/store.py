"""The results database: the DuckDB schema and every query Prunescope runs.

One process owns the file (DuckDB locks it). Inside it, worker threads and the main thread share
one `Store`: each thread gets its own cursor, and writes are serialized by a lock. Every value is
bound as a parameter. JSON columns go in and come out as Python objects. Timestamps are naive UTC.
"""

from __future__ import annotations

import json
import math
import re
import threading
import uuid
import weakref
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pandas as pd

from engine.errors import StoreError

STATUSES = ("running", "done", "failed", "interrupted", "cancelled")
# Keys `add_subnet` accepts; all but `hash` may be missing (stored as NULL).
SUBNET_FIELDS = ("hash", "encoding", "flops", "params", "accuracy", "loss", "sampler")
SUBNET_FIELDS += ("seconds_materialize", "seconds_recalibrate", "seconds_evaluate", "error")
SUBNET_FIELDS += ("runtime_flops",)  # a later column: stored after created_at
SUBNET_FIELDS += ("depth", "screen_accuracy")  # later still: after test_accuracy
INTERRUPTED_MESSAGE = "The process running this run ended before it finished."

# Read-write Stores open in this process, by resolved path: only the first marks stale runs.
_OPEN: dict[Path, int] = {}
_OPEN_LOCK = threading.Lock()
_JSON_COLUMNS = ("config", "space", "encoding", "recipe", "report", "history")
FINETUNE_STATUSES = ("running", "done", "failed", "interrupted", "cancelled")
_MAGIC = b"DUCK"  # every DuckDB file carries this at bytes 8..12

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY, created_at TIMESTAMP, updated_at TIMESTAMP, heartbeat TIMESTAMP,
    status VARCHAR, message VARCHAR, model VARCHAR, weights VARCHAR, dataset VARCHAR,
    constraint_text VARCHAR, sampler VARCHAR, num_subnets INTEGER, parent_accuracy DOUBLE,
    parent_loss DOUBLE, parent_flops DOUBLE, parent_params BIGINT, budget DOUBLE,
    config JSON, space JSON);
CREATE TABLE IF NOT EXISTS subnets (
    run_id VARCHAR, subnet_id INTEGER, hash VARCHAR, encoding JSON, flops DOUBLE, params BIGINT,
    accuracy DOUBLE, loss DOUBLE, sampler VARCHAR, seconds_materialize DOUBLE,
    seconds_recalibrate DOUBLE, seconds_evaluate DOUBLE, error VARCHAR, created_at TIMESTAMP,
    PRIMARY KEY (run_id, hash), UNIQUE (run_id, subnet_id));
CREATE TABLE IF NOT EXISTS finetunes (
    finetune_id VARCHAR PRIMARY KEY, run_id VARCHAR, subnet_id INTEGER, recipe JSON,
    status VARCHAR, val_accuracy_before DOUBLE, val_accuracy_after DOUBLE,
    test_accuracy_before DOUBLE, test_accuracy_after DOUBLE, seconds DOUBLE,
    checkpoint VARCHAR, created_at TIMESTAMP, updated_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS exports (
    export_id VARCHAR PRIMARY KEY, run_id VARCHAR, subnet_id INTEGER, finetune_id VARCHAR,
    out_dir VARCHAR, int8 BOOLEAN, report JSON, created_at TIMESTAMP);
ALTER TABLE finetunes ADD COLUMN IF NOT EXISTS epochs_done INTEGER;
ALTER TABLE finetunes ADD COLUMN IF NOT EXISTS message VARCHAR;
ALTER TABLE finetunes ADD COLUMN IF NOT EXISTS history JSON;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS channel_block INTEGER;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS parent_runtime_flops DOUBLE;
ALTER TABLE subnets ADD COLUMN IF NOT EXISTS runtime_flops DOUBLE;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS parent_test_accuracy DOUBLE;
ALTER TABLE subnets ADD COLUMN IF NOT EXISTS test_accuracy DOUBLE;
ALTER TABLE subnets ADD COLUMN IF NOT EXISTS depth VARCHAR;
ALTER TABLE subnets ADD COLUMN IF NOT EXISTS screen_accuracy DOUBLE;
ALTER TABLE subnets ADD COLUMN IF NOT EXISTS tuned_accuracy DOUBLE;
"""
# Columns `save_finetune` writes; created_at is kept from the first write.
FINETUNE_FIELDS = ("finetune_id", "run_id", "subnet_id", "recipe", "status", "message")
FINETUNE_FIELDS += ("epochs_done", "history", "val_accuracy_before", "val_accuracy_after")
FINETUNE_FIELDS += ("test_accuracy_before", "test_accuracy_after", "seconds", "checkpoint")
EXPORT_FIELDS = ("export_id", "run_id", "subnet_id", "finetune_id", "out_dir", "int8", "report")

_INSERT_RUN = """
INSERT INTO runs (run_id, created_at, updated_at, heartbeat, status, model, weights, dataset,
    constraint_text, sampler, num_subnets, parent_accuracy, parent_loss, parent_flops,
    parent_params, budget, channel_block, parent_runtime_flops, parent_test_accuracy, config,
    space)
VALUES ($run_id, $now, $now, $now, 'running', $model, $weights, $dataset, $constraint_text,
    $sampler, $num_subnets, $parent_accuracy, $parent_loss, $parent_flops, $parent_params,
    $budget, $channel_block, $parent_runtime_flops, $parent_test_accuracy, $config, $space)"""

_INSERT_SUBNET = """
INSERT INTO subnets (run_id, subnet_id, hash, encoding, flops, params, runtime_flops, accuracy,
    loss, sampler, seconds_materialize, seconds_recalibrate, seconds_evaluate, error, created_at,
    depth, screen_accuracy)
VALUES ($run_id, $subnet_id, $hash, $encoding, $flops, $params, $runtime_flops, $accuracy, $loss,
    $sampler, $seconds_materialize, $seconds_recalibrate, $seconds_evaluate, $error, $created_at,
    $depth, $screen_accuracy)"""

_RUNS = """
SELECT r.*, coalesce(s.evaluated, 0) AS evaluated,
    coalesce(s.failed_subnets, 0) AS failed_subnets, s.best_accuracy
FROM runs r LEFT JOIN (
    SELECT run_id, count(*) AS evaluated, count(error) AS failed_subnets,
        max(accuracy) AS best_accuracy
    FROM subnets GROUP BY run_id) s ON s.run_id = r.run_id"""

_MARK_STALE = """
UPDATE runs SET status = 'interrupted', message = ?, updated_at = ?
WHERE status = 'running' AND coalesce(heartbeat, created_at) <= ?
RETURNING run_id"""


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _plain(value):
    """numpy/torch scalars -> Python; NaN -> None (NULL), so SQL aggregates stay meaningful."""
    if hasattr(value, "item"):
        value = value.item()
    return None if isinstance(value, float) and math.isnan(value) else value


def _json_default(obj):
    if hasattr(obj, "tolist"):  # numpy arrays and scalars, torch tensors
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"Cannot store {type(obj).__name__} as JSON")


def _dumps(obj) -> str | None:
    return None if obj is None else json.dumps(obj, default=_json_default)


def _loads(text):
    return json.loads(text) if isinstance(text, str) else None


def _parse_frame(df: pd.DataFrame) -> pd.DataFrame:
    for col in _JSON_COLUMNS:
        if col in df.columns:
            df[col] = pd.Series([_loads(v) for v in df[col]], index=df.index, dtype=object)
    return df


def _parse_row(cur, row) -> dict:
    names = [d[0] for d in cur.description]
    return {k: _loads(v) if k in _JSON_COLUMNS else v for k, v in zip(names, row, strict=True)}


def _not_duckdb(path: Path) -> StoreError:
    return StoreError(
        f"{path} is not a DuckDB database, so Prunescope will not use it (it was left untouched). "
        "Move it away or set PRUNESCOPE_DB to another file."
    )


def _open_error(path: Path, exc: Exception) -> StoreError:
    text = str(exc)
    if "Could not set lock" in text:
        pid = re.search(r"PID (\d+)", text)
        who = f" (PID {pid.group(1)})" if pid else ""
        return StoreError(
            f"The results database {path} is open in another Prunescope process{who}, the app or "
            "the CLI. Close that process, or point this one at another file with PRUNESCOPE_DB."
        )
    if "not a valid DuckDB database" in text:
        return _not_duckdb(path)
    if "different configuration" in text:
        return StoreError(f"{path} is already open in this process with another read-only mode.")
    return StoreError(f"Cannot open the results database {path}: {text}")


class Store:
    """Runs and their evaluated subnets in one DuckDB file. Usable as a context manager."""

    def __init__(self, path: str | Path, read_only: bool = False):
        self.path = Path(path).expanduser()
        self.read_only = read_only
        self._local = threading.local()  # .cursor: this thread's own connection
        self._lock = threading.RLock()  # serializes writes and cursor bookkeeping
        self._cursors: weakref.WeakSet = weakref.WeakSet()  # closed by close()
        self._con = self._key = None
        try:
            if self.path.is_file() and self.path.stat().st_size:
                with self.path.open("rb") as fh:  # refuse foreign files before DuckDB sees them
                    if fh.read(12)[8:12] != _MAGIC:
                        raise _not_duckdb(self.path)
            if read_only and not self.path.exists():
                raise StoreError(f"There is no results database at {self.path} yet.")
            if not read_only:
                self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"Cannot open the results database {self.path}: {exc}") from exc
        try:
            self._con = duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.Error as exc:
            raise _open_error(self.path, exc) from exc
        try:
            if not read_only:
                self._cursor().execute(_SCHEMA)
                with _OPEN_LOCK:
                    self._key = self.path.resolve()
                    first = not _OPEN.get(self._key)
                    _OPEN[self._key] = _OPEN.get(self._key, 0) + 1
                if first:  # runs left `running` lost their process: this one holds the lock now
                    self.mark_stale_runs_interrupted()
            elif not {"runs", "subnets"} <= set(self._cursor().execute("SHOW TABLES").df()["name"]):
                raise StoreError(f"{self.path} is a DuckDB file but holds no Prunescope results.")
        except BaseException:
            self.close()
            raise

    def _cursor(self):
        con = self._con
        if con is None:
            raise StoreError(f"The results database {self.path} is closed.")
        cur = getattr(self._local, "cursor", None)
        if cur is None:
            with self._lock:
                cur = self._local.cursor = con.cursor()
                self._cursors.add(cur)
        return cur

    @contextmanager
    def _transaction(self):
        """One serialized write transaction, committed on exit, rolled back if the body raises."""
        if self.read_only:
            raise StoreError(f"The results database {self.path} is open read-only.")
        cur = self._cursor()
        with self._lock:
            cur.execute("BEGIN TRANSACTION")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    def _require_run(self, cur, run_id: str) -> str:
        """The run's status; StoreError if there is no such run."""
        row = cur.execute("SELECT status FROM runs WHERE run_id = ?", [run_id]).fetchone()
        if row is None:
            raise StoreError(f"There is no run {run_id!r} in {self.path}.")
        return row[0]

    def close(self) -> None:
        with self._lock, _OPEN_LOCK:
            if self._key is not None:
                _OPEN[self._key] -= 1
                self._key = None
            for cur in list(self._cursors):
                cur.close()
            if self._con is not None:
                self._con.close()
                self._con = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def create_run(
        self,
        *,
        model: str,
        weights: str,
        dataset: str,
        constraint_text: str,
        sampler: str,
        num_subnets: int,
        parent_accuracy: float,
        parent_loss: float,
        parent_flops: float,
        parent_params: int,
        budget: float,
        config: dict,
        space: dict | list,
        channel_block: int | None = None,
        parent_runtime_flops: float | None = None,
        parent_test_accuracy: float | None = None,
        run_id: str | None = None,
    ) -> str:
        """Record a new run with status `running`; returns its id (12 hex chars unless given)."""
        values = {k: _plain(v) for k, v in locals().items() if k != "self"}  # the arguments
        values.update(run_id=run_id or uuid.uuid4().hex[:12], now=_now())
        values.update(config=_dumps(config), space=_dumps(space))
        with self._transaction() as cur:
            if cur.execute("SELECT 1 FROM runs WHERE run_id = ?", [values["run_id"]]).fetchone():
                raise StoreError(f"A run with id {values['run_id']!r} already exists.")
            cur.execute(_INSERT_RUN, values)
        return values["run_id"]

    def set_status(self, run_id: str, status: str, message: str | None = None) -> None:
        """Set status and message (None clears it); refreshes updated_at and heartbeat too."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {status!r}")
        sql = "UPDATE runs SET status = $status, message = $message, updated_at = $now, "
        sql += "heartbeat = $now WHERE run_id = $run_id"
        with self._transaction() as cur:
            self._require_run(cur, run_id)
            cur.execute(sql, dict(status=status, message=message, now=_now(), run_id=run_id))

    def heartbeat(self, run_id: str) -> None:
        with self._transaction() as cur:
            self._require_run(cur, run_id)
            cur.execute("UPDATE runs SET heartbeat = ? WHERE run_id = ?", [_now(), run_id])

    def mark_stale_runs_interrupted(self, older_than: float | None = None) -> list[str]:
        """Mark `running` runs `interrupted` and return their ids.

        `older_than=None` marks every running run: right only while this process runs none (the
        constructor calls it so). Given seconds, only runs whose heartbeat is that old are marked,
        e.g. the run of a worker thread that died without a word.
        """
        now = _now()
        cutoff = datetime.max if older_than is None else now - timedelta(seconds=older_than)
        with self._transaction() as cur:
            rows = cur.execute(_MARK_STALE, [INTERRUPTED_MESSAGE, now, cutoff]).fetchall()
            if older_than is None:  # fine-tunes have no heartbeat: only a fresh owner marks them
                sql = "UPDATE finetunes SET status = 'interrupted', message = ?, updated_at = ? "
                cur.execute(sql + "WHERE status = 'running'", [INTERRUPTED_MESSAGE, now])
        return sorted(r[0] for r in rows)

    def runs(self) -> pd.DataFrame:
        """One row per run, newest first, with `evaluated`, `failed_subnets`, `best_accuracy`."""
        return _parse_frame(
            self._cursor().execute(_RUNS + " ORDER BY r.created_at DESC, r.run_id").df()
        )

    def run(self, run_id: str) -> dict:
        """One run as a dict (the columns of `runs()`), config and space parsed."""
        cur = self._cursor()
        row = cur.execute(_RUNS + " WHERE r.run_id = ?", [run_id]).fetchone()
        if row is None:
            raise StoreError(f"There is no run {run_id!r} in {self.path}.")
        return _parse_row(cur, row)

    def delete_run(self, run_id: str, *, force: bool = False) -> None:
        """Delete a run with its subnets, finetunes and exports, in one transaction.

        A `running` run is refused unless `force`: its worker would keep writing to it.
        """
        with self._transaction() as cur:
            if self._require_run(cur, run_id) == "running" and not force:
                raise StoreError(f"Run {run_id!r} is still running; cancel it before deleting.")
            cur.execute("DELETE FROM exports WHERE run_id = ?", [run_id])
            cur.execute("DELETE FROM finetunes WHERE run_id = ?", [run_id])
            cur.execute("DELETE FROM subnets WHERE run_id = ?", [run_id])
            cur.execute("DELETE FROM runs WHERE run_id = ?", [run_id])

    def add_subnet(self, run_id: str, row: dict) -> int:
        """Insert one evaluated subnet, committed at once; returns its subnet_id.

        Ids count 1, 2, 3... per run in insertion order. A hash the run already has inserts
        nothing and returns the existing id, so a resumed run may replay rows safely.
        """
        if unknown := set(row) - set(SUBNET_FIELDS):
            raise ValueError(f"unknown subnet fields {sorted(unknown)}; expected {SUBNET_FIELDS}")
        if not row.get("hash"):
            raise ValueError("a subnet row needs its 'hash'")
        values = {k: _plain(row.get(k)) for k in SUBNET_FIELDS if k != "encoding"}
        values.update(run_id=run_id, encoding=_dumps(row.get("encoding")), created_at=_now())
        with self._transaction() as cur:
            self._require_run(cur, run_id)
            sql = "SELECT subnet_id FROM subnets WHERE run_id = ? AND hash = ?"
            if found := cur.execute(sql, [run_id, values["hash"]]).fetchone():
                return found[0]
            sql = "SELECT coalesce(max(subnet_id), 0) + 1 FROM subnets WHERE run_id = ?"
            values["subnet_id"] = cur.execute(sql, [run_id]).fetchone()[0]
            cur.execute(_INSERT_SUBNET, values)
        return values["subnet_id"]

    def set_test_accuracy(self, run_id: str, subnet_id: int, accuracy: float) -> None:
        """Record a subnet's accuracy on the reporting test split (scored on demand)."""
        with self._transaction() as cur:
            self._require_subnet(cur, run_id, subnet_id)
            sql = "UPDATE subnets SET test_accuracy = ? WHERE run_id = ? AND subnet_id = ?"
            cur.execute(sql, [_plain(accuracy), run_id, int(subnet_id)])

    def set_tuned_accuracy(self, run_id: str, subnet_id: int, accuracy: float) -> None:
        """Record a subnet's validation accuracy after the search's short fine-tune (its deepest
        rung, "finetune")."""
        with self._transaction() as cur:
            self._require_subnet(cur, run_id, subnet_id)
            sql = (
                "UPDATE subnets SET tuned_accuracy = ?, depth = 'finetune' "
                "WHERE run_id = ? AND subnet_id = ?"
            )
            cur.execute(sql, [_plain(accuracy), run_id, int(subnet_id)])

    def subnet_hashes(self, run_id: str) -> set[str]:
        rows = self._cursor().execute("SELECT hash FROM subnets WHERE run_id = ?", [run_id])
        return {r[0] for r in rows.fetchall()}

    def count_subnets(self, run_id: str) -> int:
        sql = "SELECT count(*) FROM subnets WHERE run_id = ?"
        return self._cursor().execute(sql, [run_id]).fetchone()[0]

    def subnets(self, run_id: str) -> pd.DataFrame:
        """All subnets of a run, ordered by subnet_id; `encoding` as Python lists."""
        sql = "SELECT * FROM subnets WHERE run_id = ? ORDER BY subnet_id"
        return _parse_frame(self._cursor().execute(sql, [run_id]).df())

    def subnet(self, run_id: str, subnet_id: int) -> dict:
        cur = self._cursor()
        sql = "SELECT * FROM subnets WHERE run_id = ? AND subnet_id = ?"
        row = cur.execute(sql, [run_id, int(subnet_id)]).fetchone()
        if row is None:
            raise StoreError(f"Run {run_id!r} has no subnet {subnet_id}.")
        return _parse_row(cur, row)

    # --- fine-tunes and exports ------------------------------------------------------------

    def save_finetune(self, row: dict) -> None:
        """Insert or update one fine-tune (keyed by finetune_id); its subnet must exist."""
        if unknown := set(row) - set(FINETUNE_FIELDS):
            raise ValueError(f"unknown finetune fields {sorted(unknown)}")
        if row.get("status") not in FINETUNE_STATUSES:
            raise ValueError(f"status must be one of {FINETUNE_STATUSES}")
        values = {k: _plain(row.get(k)) for k in FINETUNE_FIELDS}
        values.update(recipe=_dumps(row.get("recipe")), history=_dumps(row.get("history")))
        values["now"] = _now()
        columns = ", ".join(FINETUNE_FIELDS)
        updates = ", ".join(f"{k} = excluded.{k}" for k in FINETUNE_FIELDS[1:])
        sql = (
            f"INSERT INTO finetunes ({columns}, created_at, updated_at) VALUES "
            f"({', '.join('$' + k for k in FINETUNE_FIELDS)}, $now, $now) "
            f"ON CONFLICT (finetune_id) DO UPDATE SET {updates}, updated_at = $now"
        )
        with self._transaction() as cur:
            self._require_subnet(cur, values["run_id"], values["subnet_id"])
            cur.execute(sql, values)

    def finetune(self, finetune_id: str) -> dict | None:
        cur = self._cursor()
        row = cur.execute("SELECT * FROM finetunes WHERE finetune_id = ?", [finetune_id]).fetchone()
        return None if row is None else _parse_row(cur, row)

    def finetunes(self, run_id: str | None = None, subnet_id: int | None = None) -> pd.DataFrame:
        """Fine-tunes (of a run, of one subnet), newest first, with the subnet's flops/params."""
        sql = (
            "SELECT f.*, s.flops, s.params, s.runtime_flops, s.accuracy AS subnet_accuracy "
            "FROM finetunes f "
            "LEFT JOIN subnets s ON s.run_id = f.run_id AND s.subnet_id = f.subnet_id "
            "WHERE ($run_id IS NULL OR f.run_id = $run_id) "
            "AND ($subnet_id IS NULL OR f.subnet_id = $subnet_id) "
            "ORDER BY f.created_at DESC, f.finetune_id"
        )
        params = {"run_id": run_id, "subnet_id": None if subnet_id is None else int(subnet_id)}
        return _parse_frame(self._cursor().execute(sql, params).df())

    def add_export(self, row: dict) -> str:
        """Record one finished export; returns its id."""
        if unknown := set(row) - set(EXPORT_FIELDS):
            raise ValueError(f"unknown export fields {sorted(unknown)}")
        values = {k: _plain(row.get(k)) for k in EXPORT_FIELDS}
        values.update(export_id=row.get("export_id") or uuid.uuid4().hex[:12])
        values.update(report=_dumps(row.get("report")), now=_now())
        sql = (
            f"INSERT INTO exports ({', '.join(EXPORT_FIELDS)}, created_at) VALUES "
            f"({', '.join('$' + k for k in EXPORT_FIELDS)}, $now)"
        )
        with self._transaction() as cur:
            self._require_subnet(cur, values["run_id"], values["subnet_id"])
            cur.execute(sql, values)
        return values["export_id"]

    def exports(self, run_id: str | None = None) -> pd.DataFrame:
        sql = "SELECT * FROM exports WHERE ($run_id IS NULL OR run_id = $run_id) "
        sql += "ORDER BY created_at DESC, export_id"
        return _parse_frame(self._cursor().execute(sql, {"run_id": run_id}).df())

    def _require_subnet(self, cur, run_id: str, subnet_id) -> None:
        self._require_run(cur, run_id)
        sql = "SELECT 1 FROM subnets WHERE run_id = ? AND subnet_id = ?"
        if subnet_id is None or cur.execute(sql, [run_id, int(subnet_id)]).fetchone() is None:
            raise StoreError(f"Run {run_id!r} has no subnet {subnet_id}.")

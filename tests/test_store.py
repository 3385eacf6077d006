"""The results store against real DuckDB files in tmp_path: schema, runs, subnets, locking,
durability across SIGKILL, threads, and files that are not ours."""

import json
import random
import signal
import sqlite3
import subprocess
import sys
import threading

import duckdb
import numpy as np
import pytest

from engine.errors import StoreError
from engine.store import INTERRUPTED_MESSAGE, SUBNET_FIELDS, Store
from tests.conftest import REPO

RUN_COLUMNS = [
    "run_id",
    "created_at",
    "updated_at",
    "heartbeat",
    "status",
    "message",
    "model",
    "weights",
    "dataset",
    "constraint_text",
    "sampler",
    "num_subnets",
    "parent_accuracy",
    "parent_loss",
    "parent_flops",
    "parent_params",
    "budget",
    "config",
    "space",
    "channel_block",  # columns added later come after the original ones, in old files too
    "parent_runtime_flops",
    "parent_test_accuracy",
    "evaluated",
    "failed_subnets",
    "best_accuracy",
]
SUBNET_COLUMNS = ["run_id", "subnet_id", *SUBNET_FIELDS[:-3], "created_at", "runtime_flops"]
SUBNET_COLUMNS += ["test_accuracy", "depth", "screen_accuracy", "tuned_accuracy"]  # later still


def run_args(**overrides):
    args = dict(
        model="resnet20",
        weights="builtin",
        dataset="synthetic",
        constraint_text="flops=50%",
        sampler="guided",
        num_subnets=10,
        parent_accuracy=0.91,
        parent_loss=0.3,
        parent_flops=8.1e7,
        parent_params=270_000,
        budget=4.05e7,
        config={"model": {"name": "resnet20"}, "search": {"seed": 0}},
        space={"groups": [{"name": "layer1", "size": 16, "order": [3, 1, 0, 2]}]},
    )
    return {**args, **overrides}


def subnet_row(i, **overrides):
    row = dict(
        hash=f"h{i}",
        encoding=[8, 16, i],
        flops=1e6 * (i + 1),
        params=1000 * (i + 1),
        accuracy=0.5 + i / 100,
        loss=1.0,
        sampler="uniform",
        seconds_materialize=0.1,
        seconds_recalibrate=0.2,
        seconds_evaluate=0.3,
        error=None,
    )
    return {**row, **overrides}


def python(code, *args, **kwargs):
    """Run `code` in a fresh interpreter at the repository root."""
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        **kwargs,
    )


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "nested" / "results.duckdb") as s:
        yield s


def test_empty_store_has_typed_empty_frames(store):
    assert store.path.exists()
    assert list(store.runs().columns) == RUN_COLUMNS and store.runs().empty
    assert list(store.subnets("nope").columns) == SUBNET_COLUMNS and store.subnets("nope").empty
    assert store.subnet_hashes("nope") == set() and store.count_subnets("nope") == 0


def test_run_round_trip_and_reopen_is_idempotent(tmp_path):
    path = tmp_path / "r.duckdb"
    with Store(path) as s:
        run_id = s.create_run(**run_args())
        s.set_status(run_id, "done")
    with Store(path) as s:  # schema creation runs again on an existing file
        run = s.run(run_id)
    assert len(run_id) == 12 and int(run_id, 16) >= 0
    assert run["status"] == "done" and run["message"] is None
    assert run["config"] == run_args()["config"] and run["space"] == run_args()["space"]
    assert run["parent_params"] == 270_000 and run["budget"] == 4.05e7
    assert run["created_at"] <= run["updated_at"] and run["evaluated"] == 0
    assert list(run) == RUN_COLUMNS


def test_a_file_from_before_runtime_flops_gains_the_columns_and_keeps_its_rows(tmp_path):
    path = tmp_path / "old.duckdb"
    with Store(path) as s:
        run_id = s.create_run(**run_args())
        s.add_subnet(run_id, subnet_row(1))
    con = duckdb.connect(str(path))  # take the file back to the schema before runtime FLOPs
    for column in ("runtime_flops", "test_accuracy", "depth", "screen_accuracy", "tuned_accuracy"):
        con.execute(f"ALTER TABLE subnets DROP COLUMN {column}")
    for column in ("channel_block", "parent_runtime_flops", "parent_test_accuracy"):
        con.execute(f"ALTER TABLE runs DROP COLUMN {column}")
    con.close()
    with Store(path) as s:
        run, rows = s.run(run_id), s.subnets(run_id)
        assert run["channel_block"] is None and run["parent_runtime_flops"] is None
        assert list(rows.columns) == SUBNET_COLUMNS and rows["runtime_flops"].isna().all()
        assert rows.loc[0, "accuracy"] == subnet_row(1)["accuracy"]
        assert s.add_subnet(run_id, subnet_row(2, runtime_flops=3e7)) == 2
        assert s.subnets(run_id)["runtime_flops"].iloc[1] == 3e7


def test_run_errors(store):
    run_id = store.create_run(**run_args(run_id="abc"))
    assert run_id == "abc"
    with pytest.raises(StoreError, match="already exists"):
        store.create_run(**run_args(run_id="abc"))
    with pytest.raises(StoreError, match="'missing'"):
        store.run("missing")
    with pytest.raises(StoreError, match="'missing'"):
        store.set_status("missing", "done")
    with pytest.raises(ValueError, match="status"):
        store.set_status(run_id, "finished")
    with pytest.raises(StoreError, match="no subnet 7"):
        store.subnet(run_id, 7)
    with pytest.raises(StoreError, match="'missing'"):
        store.add_subnet("missing", subnet_row(1))
    with pytest.raises(ValueError, match="accuarcy"):
        store.add_subnet(run_id, {"hash": "x", "accuarcy": 0.5})


def test_add_subnet_numbers_rows_and_is_idempotent(store):
    run_id = store.create_run(**run_args())
    other = store.create_run(**run_args())
    assert [store.add_subnet(run_id, subnet_row(i)) for i in range(3)] == [1, 2, 3]
    assert store.add_subnet(run_id, subnet_row(1, accuracy=0.0)) == 2  # same hash: no insert
    assert store.add_subnet(other, subnet_row(1)) == 1  # numbering is per run
    # numpy values, NaN accuracy -> NULL, missing optional keys -> NULL
    failed = {
        "hash": "oom",
        "encoding": np.array([4, 4, 4]),
        "flops": np.float64(2e6),
        "params": np.int64(77),
        "accuracy": float("nan"),
        "error": "CUDA out of memory",
    }
    assert store.add_subnet(run_id, failed) == 4

    df = store.subnets(run_id)
    assert list(df.columns) == SUBNET_COLUMNS
    assert df["subnet_id"].tolist() == [1, 2, 3, 4] and df["hash"].is_unique
    assert df["encoding"].tolist() == [[8, 16, 0], [8, 16, 1], [8, 16, 2], [4, 4, 4]]
    assert df.loc[1, "accuracy"] == 0.51
    assert store.subnet_hashes(run_id) == {"h0", "h1", "h2", "oom"}
    assert store.count_subnets(run_id) == 4 and store.count_subnets(other) == 1
    row = store.subnet(run_id, 4)
    assert row["encoding"] == [4, 4, 4] and row["params"] == 77
    assert row["accuracy"] is None and row["loss"] is None and row["sampler"] is None
    assert list(row) == list(store.subnet(run_id, 2)) == SUBNET_COLUMNS

    runs = store.runs().set_index("run_id")
    assert runs.loc[run_id, "evaluated"] == 4 and runs.loc[run_id, "failed_subnets"] == 1
    assert runs.loc[run_id, "best_accuracy"] == pytest.approx(0.52)
    assert runs.loc[other, "evaluated"] == 1
    assert store.runs()["run_id"].tolist() == [other, run_id]  # newest first


def test_threads_share_one_store(store):
    run_id = store.create_run(**run_args())
    hashes = [f"h{i}" for i in range(40)]
    results, errors = [], []

    def worker(seed):
        try:
            order = random.Random(seed).sample(hashes, len(hashes))
            results.append({h: store.add_subnet(run_id, {"hash": h}) for h in order})
            store.heartbeat(run_id)
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(4)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        assert store.count_subnets(run_id) <= 40  # main thread reads meanwhile
    for t in threads:
        t.join()
    assert not errors
    df = store.subnets(run_id)
    stored = dict(zip(df["hash"], df["subnet_id"].tolist(), strict=True))
    assert sorted(stored.values()) == list(range(1, 41))
    assert all(r == stored for r in results)  # every thread saw the same ids


def test_status_heartbeat_and_stale_runs(store):
    run_id = store.create_run(**run_args())
    store.set_status(run_id, "cancelled", "stopped by user")
    assert store.run(run_id)["message"] == "stopped by user"
    store.set_status(run_id, "running")  # resume clears the message
    assert store.run(run_id)["message"] is None
    before = store.run(run_id)["heartbeat"]
    store.heartbeat(run_id)
    assert store.run(run_id)["heartbeat"] >= before
    assert store.mark_stale_runs_interrupted(older_than=3600) == []
    assert store.mark_stale_runs_interrupted(older_than=0) == [run_id]
    run = store.run(run_id)
    assert run["status"] == "interrupted" and run["message"] == INTERRUPTED_MESSAGE


def test_second_store_in_the_same_process_keeps_live_runs(tmp_path):
    path = tmp_path / "r.duckdb"
    first = Store(path)
    run_id = first.create_run(**run_args())
    with Store(path) as second:  # e.g. a page opening its own Store while a job runs
        assert second.run(run_id)["status"] == "running"
        second.add_subnet(run_id, subnet_row(1))
    assert first.count_subnets(run_id) == 1  # closing one Store leaves the other working
    first.close()
    with Store(path) as again:  # nobody in this process had it open any more
        assert again.run(run_id)["status"] == "interrupted"


def test_delete_run_removes_everything_it_owns(tmp_path):
    path = tmp_path / "r.duckdb"
    with Store(path) as s:
        keep, gone = s.create_run(**run_args()), s.create_run(**run_args())
        for run_id in (keep, gone):
            s.add_subnet(run_id, subnet_row(1))
            s.set_status(run_id, "done")
    with duckdb.connect(str(path)) as con:  # the tables kept for later, filled by hand
        for run_id in (keep, gone):
            con.execute(
                "INSERT INTO finetunes (finetune_id, run_id) VALUES (?, ?)", [f"f-{run_id}", run_id]
            )
            con.execute(
                "INSERT INTO exports (export_id, run_id) VALUES (?, ?)", [f"e-{run_id}", run_id]
            )
    with Store(path) as s:
        s.delete_run(gone)
        with pytest.raises(StoreError, match=gone):
            s.delete_run(gone)
        assert s.runs()["run_id"].tolist() == [keep] and s.subnets(gone).empty
        running = s.create_run(**run_args())
        with pytest.raises(StoreError, match="still running"):
            s.delete_run(running)
        s.delete_run(running, force=True)
    with duckdb.connect(str(path), read_only=True) as con:
        for table in ("runs", "subnets", "finetunes", "exports"):
            sql = "SELECT list(DISTINCT run_id) FROM " + table
            assert con.execute(sql).fetchone()[0] == [keep], table


def test_read_only(tmp_path):
    path = tmp_path / "r.duckdb"
    with pytest.raises(StoreError, match="no results database"):
        Store(path, read_only=True)
    assert not path.exists()
    with Store(path) as s:
        run_id = s.create_run(**run_args())
    with duckdb.connect(str(path)) as con:  # leave it "running", as a crash would
        con.execute("UPDATE runs SET status = 'running'")
    with Store(path, read_only=True) as s:
        assert s.run(run_id)["status"] == "running"  # read-only never rewrites history
        with pytest.raises(StoreError, match="read-only"):
            s.set_status(run_id, "done")
    other = tmp_path / "other.duckdb"
    duckdb.connect(str(other)).close()
    with pytest.raises(StoreError, match="no Prunescope results"):
        Store(other, read_only=True)


def test_sigkill_keeps_committed_subnets_and_marks_the_run_interrupted(tmp_path):
    path = tmp_path / "r.duckdb"
    code = (
        "import json, os, signal, sys\n"
        "from engine.store import Store\n"
        "s = Store(sys.argv[1])\n"
        "run_id = s.create_run(**json.loads(sys.argv[2]))\n"
        "s.add_subnet(run_id, json.loads(sys.argv[3]))\n"
        "print(run_id, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    result = python(code, path, json.dumps(run_args()), json.dumps(subnet_row(5)))
    assert result.returncode == -signal.SIGKILL, result.stderr
    run_id = result.stdout.strip()
    with Store(path) as s:
        assert s.subnet(run_id, 1)["encoding"] == [8, 16, 5]
        run = s.run(run_id)
        assert run["status"] == "interrupted" and run["message"] == INTERRUPTED_MESSAGE


def test_second_process_gets_a_clear_error(tmp_path):
    path = tmp_path / "r.duckdb"
    code = "import sys\nfrom engine.store import Store\ns = Store(sys.argv[1])\n"
    code += "print('ready', flush=True)\nsys.stdin.read()\n"
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(path)],
        cwd=REPO,
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        for read_only in (False, True):
            with pytest.raises(StoreError, match="another Prunescope process") as info:
                Store(path, read_only=read_only)
            assert str(path) in info.value.message and "PID" in info.value.message
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    Store(path).close()  # free again once the owner exits


def make_sqlite(path):
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE notes (body TEXT)")
    con.commit()
    con.close()


@pytest.mark.parametrize("content", [b"", b"x", b"not a database\n" * 100, "sqlite"])
def test_foreign_files_are_refused_and_left_untouched(tmp_path, content):
    path = tmp_path / "results.duckdb"
    if content == "sqlite":
        make_sqlite(path)
    else:
        path.write_bytes(content)
    before = path.read_bytes()
    for read_only in (False, True):
        with pytest.raises(StoreError, match="not a DuckDB database"):
            Store(path, read_only=read_only)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_closed_store_raises(tmp_path):
    s = Store(tmp_path / "r.duckdb")
    s.close()
    s.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        s.runs()

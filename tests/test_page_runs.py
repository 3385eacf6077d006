"""AppTest of the Runs page: the run table, overlaid fronts, resume and delete.

Each test points the app at its own results file (the `db` fixture).
"""

from tests.apptest import (
    button,
    figures,
    open_page,
    trace_names,
)
from tests.factories import make_run


def test_runs_table_overlay_and_interrupted_run(db):
    done = make_run(db, seed=1)
    stale = make_run(db, n=12, status="running", seed=2)  # its process died: no worker here
    at = open_page("pages/runs.py")
    table = at.dataframe[0].value
    assert set(table["run"]) == {done, stale}
    assert table.set_index("run").at[stale, "status"] == "interrupted"
    assert "subnet" in table.set_index("run").at[done, "best under budget"]
    assert len(trace_names(figures(at)[0])) == 4  # two fronts, two parent markers
    at.selectbox(key="runs_target").set_value(stale).run()
    assert not button(at, "Resume").disabled
    at.selectbox(key="runs_target").set_value(done).run()
    assert button(at, "Resume").disabled
    button(at, "Open in Explore").click().run()
    assert at.title[0].value == "Explore"
    assert at.selectbox(key="_run_picker").value == done


def test_runs_delete_asks_first_then_clears_caches(db):
    keep, gone = make_run(db, seed=1), make_run(db, n=10, seed=3)
    at = open_page("pages/runs.py")
    at.selectbox(key="runs_target").set_value(gone).run()
    button(at, "Delete…").click().run()
    assert "cannot be undone" in at.warning[0].value
    button(at, "Keep it").click().run()
    assert not at.warning and len(at.dataframe[0].value) == 2
    button(at, "Delete…").click().run()
    button(at, "Yes, delete").click().run()
    assert not at.exception
    assert f"Deleted run {gone}" in at.success[0].value
    assert list(at.dataframe[0].value["run"]) == [keep]

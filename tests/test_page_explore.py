"""AppTest of the Explore page: the front chart, the budget slider, axes, widths, following a live search.

Each test points the app at its own results file (the `db` fixture).
"""

import pytest

from engine.config import Constraint, SearchConfig
from engine.pareto import pareto_front
from engine.store import Store
from tests.apptest import (
    button,
    figures,
    open_page,
    subnets_of,
    trace_names,
    values,
)
from tests.factories import GROUPS, PARENT_FLOPS, SAMPLERS, make_run, real_run
from ui.jobs import registry


def test_explore_chart_marks_front_parent_knee_and_budget(db):
    make_run(db)
    at = open_page("pages/explore.py")
    chart = figures(at)[0]
    names = trace_names(chart)
    for name in (
        "uniform",
        "random",
        "guided",
        "Pareto front",
        "Parent",
        "Knee",
        "Best under budget",
    ):
        assert name in names
    assert (
        sum(len(values(t["x"])) for t in chart["data"] if t["name"] in SAMPLERS) == 40
    )  # not the OOM
    rect = next(s for s in chart["layout"]["shapes"] if s["type"] == "rect")
    assert rect["x0"] == pytest.approx(PARENT_FLOPS / 2)  # the run's budget, shaded above
    hover = next(t for t in chart["data"] if t["name"] == "guided")["hovertemplate"]
    assert all(word in hover for word in ("Subnet", "FLOPs", "params", "accuracy"))


def test_explore_marks_each_depth_and_picks_from_the_deepest_rung(db):
    run_id = make_run(db, rungs=True)
    with Store(db) as store:
        rows = store.subnets(run_id)
    tuned = rows[rows["tuned_accuracy"].notna()]
    pick = tuned.sort_values("tuned_accuracy").iloc[-1]
    assert pick["accuracy"] < tuned["accuracy"].max()  # not the most accurate before tuning
    at = open_page("pages/explore.py")
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Best under budget"] == f"Subnet {int(pick['subnet_id'])}"
    assert any("short fine-tune" in c.value for c in at.caption)
    chart = figures(at)[0]
    names = trace_names(chart)
    assert "Hollow: one-shot screen only" in names
    finalists = next(t for t in chart["data"] if t["name"].startswith("Search finalists"))
    assert sorted(values(finalists["y"])) == sorted(tuned["tuned_accuracy"])
    guided = next(t for t in chart["data"] if t["name"] == "guided")
    assert "circle-open" in guided["marker"]["symbol"] and "circle" in guided["marker"]["symbol"]


def test_explore_slider_snaps_to_best_subnet_under_budget(db):
    make_run(db)
    at = open_page("pages/explore.py")
    slider = next(s for s in at.slider if s.label == "FLOP budget")
    assert slider.value == 50  # the run's constraint
    first = {m.label: m.value for m in at.metric}
    slider.set_value(20).run()
    assert not at.exception
    second = {m.label: m.value for m in at.metric}
    assert second["Best under budget"] != first["Best under budget"]
    assert float(second["FLOPs saved"].rstrip("%")) >= 80.0
    assert float(second["Accuracy lost"].split()[0]) > float(first["Accuracy lost"].split()[0])
    rect = next(s for s in figures(at)[0]["layout"]["shapes"] if s["type"] == "rect")
    assert rect["x0"] == pytest.approx(0.2 * PARENT_FLOPS)
    table = at.markdown[0].value
    assert "| Parent |" in table and second["Best under budget"] in table and "saved" in table


def test_explore_axis_switches_and_width_chart(db):
    make_run(db)
    at = open_page("pages/explore.py")
    at.radio(key="explore_x").set_value("params")
    at.radio(key="explore_scale").set_value("relative").run()
    assert not at.exception
    assert any(s.label == "Parameter budget" for s in at.slider)
    chart = figures(at)[0]
    assert chart["layout"]["xaxis"]["title"]["text"] == "Params (% of parent)"
    parent = next(t for t in chart["data"] if t["name"] == "Parent")
    assert values(parent["x"]) == [pytest.approx(100.0)]
    picker = next(s for s in at.selectbox if s.label == "Subnet")
    subnet = next(o for o in picker.options if o.startswith("Subnet"))
    picker.set_value(int(subnet.split()[1].rstrip(" ·"))).run()
    widths = figures(at)[1]
    assert trace_names(widths) == ["Parent", subnet.split(" ·")[0]]
    assert values(widths["data"][0]["y"]) == [s for _, s in GROUPS]
    assert "Selected" in trace_names(figures(at)[0])


def test_explore_runtime_flops_axis_for_runs_that_have_them(db):
    old, new = make_run(db, seed=1), make_run(db, seed=2, block=16)
    at = open_page("pages/explore.py")
    at.selectbox(key="_run_picker").set_value(old).run()
    assert "runtime_flops" not in at.radio(key="explore_x").options  # stored before them
    at.selectbox(key="_run_picker").set_value(new).run()
    at.radio(key="explore_x").set_value("runtime_flops")
    at.radio(key="explore_scale").set_value("relative").run()
    assert not at.exception, at.exception
    slider = next(s for s in at.slider if s.label == "Runtime FLOP budget")
    slider.set_value(60).run()
    chart = figures(at)[0]
    assert chart["layout"]["xaxis"]["title"]["text"] == "Runtime FLOPs (% of parent)"
    with Store(db) as store:
        rows = store.subnets(new)
    fits = rows[rows["error"].isna() & (rows["runtime_flops"] <= 0.6 * PARENT_FLOPS)]
    best = fits.loc[fits["accuracy"].idxmax()]
    assert at.metric[0].value == f"Subnet {int(best['subnet_id'])}"
    assert at.metric[2].label == "Runtime FLOPs saved"
    saved = 1 - best["runtime_flops"] / PARENT_FLOPS
    assert at.metric[2].value == f"{100 * saved:.1f}%"
    table = " ".join(m.value for m in at.markdown)
    assert "| Runtime FLOPs (channels padded to 16) |" in table
    at.switch_page("pages/compare.py").run()
    compared = at.dataframe[0].value
    picked = [int(i.split()[1]) for i in compared.index[1:]]
    expected = rows.set_index("subnet_id").loc[picked, "runtime_flops"].tolist()
    assert compared["runtime FLOPs (padded to 16)"].tolist() == [PARENT_FLOPS, *expected]
    # unpadded FLOPs would have let a more accurate subnet in: the axis changes the answer
    unpadded = rows[rows["error"].isna() & (rows["flops"] <= 0.6 * PARENT_FLOPS)]
    assert unpadded["accuracy"].max() > best["accuracy"]


def test_explore_follows_a_search_running_elsewhere_until_it_ends(db):
    make_run(db, seed=1)
    at = open_page("pages/explore.py")
    live = make_run(db, n=12, status="running", seed=2)  # as a CLI search would leave it
    registry().bump()  # the app learns of the new run as it would after its own write
    at.run()
    at.selectbox(key="_run_picker").set_value(live).run()
    assert at.toggle(key="explore_follow").value
    assert "still searching (13 of 12 subnets)" in " ".join(
        c.value for c in at.caption
    )  # + 1 failed
    with Store(db) as store:
        store.set_status(live, "done")
    at.run()  # the fragment sees the run end, forgets the cached run list and redraws
    assert not at.exception, at.exception
    assert not at.get("toggle") and "still searching" not in " ".join(c.value for c in at.caption)


@pytest.mark.slow
def test_explore_scores_the_front_on_test_on_demand(db):
    run_id = real_run(
        db, search=SearchConfig(num_subnets=4, constraint=Constraint.parse("flops=60%"))
    )
    at = open_page("pages/explore.py")
    caption = " ".join(c.value for c in at.caption)
    assert "on search-validation (held-out training images)" in caption and "on test" in caption
    front = pareto_front(subnets_of(db, run_id))
    button(at, f"Score the {len(front)} front subnets on test").click().run(timeout=120)
    assert not at.exception, at.exception
    table = next(d.value for d in at.dataframe if "test" in d.value.columns)
    assert len(table) == len(front)
    with Store(db) as store:
        rows = store.subnets(run_id).set_index("subnet_id")
    scored = rows.loc[front["subnet_id"], "test_accuracy"]
    assert scored.notna().all() and table["test"].tolist() == [f"{100 * v:.2f}%" for v in scored]
    assert not any(b.label.startswith("Score the") for b in at.button)  # nothing left to score

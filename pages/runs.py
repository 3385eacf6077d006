"""Runs: every run in the database, their fronts overlaid; resume or delete a run."""

import pandas as pd
import streamlit as st

from engine.errors import PrunescopeError
from engine.pareto import best_pick
from engine.workspace import delete_run
from ui import jobs, resources
from ui.charts import overlay_figure, valid_rows
from ui.format import constraint_metric, pct, run_channel_block, run_label, validation_split
from ui.nav import through_app
from ui.widgets import axis_controls, select_run

through_app()

RESUMABLE = ("interrupted", "cancelled", "failed")

st.title("Runs")
store = resources.store()
registry = jobs.registry()
if deleted := st.session_state.pop("_deleted", None):
    st.success(f"Deleted run {deleted}.")
runs = resources.runs()
if runs.empty:
    st.info(f"No runs in {store.path} yet: start one on the Search page.")
    st.page_link("pages/search.py", label="Search", icon=":material/travel_explore:")
    st.stop()

records = runs.to_dict("records")
frames = {r["run_id"]: valid_rows(resources.subnets(r["run_id"])) for r in records}


def best_text(run: dict) -> str:
    best = best_pick(frames[run["run_id"]], run["budget"], x=constraint_metric(run))
    return "–" if best is None else f"{pct(best['accuracy'])} (subnet {int(best['subnet_id'])})"


table = pd.DataFrame(
    {
        "run": [r["run_id"] for r in records],
        "status": [r["status"] for r in records],
        "model": [r["model"] for r in records],
        "weights": [r["weights"] for r in records],
        "dataset": [r["dataset"] for r in records],
        "constraint": [r["constraint_text"] for r in records],
        "sampler": [r["sampler"] for r in records],
        "subnets": [f"{r['evaluated']} / {r['num_subnets']}" for r in records],
        "failed": [r["failed_subnets"] for r in records],
        "parent accuracy": [pct(r["parent_accuracy"]) for r in records],
        "parent test accuracy": [pct(r.get("parent_test_accuracy")) for r in records],
        "validated on": [validation_split(r) for r in records],
        "best under budget": [best_text(r) for r in records],
        "created (UTC)": [r["created_at"] for r in records],
        "message": [r["message"] or "" for r in records],
    }
)
st.dataframe(table, hide_index=True)

st.subheader("Fronts")
labels = {r["run_id"]: run_label(r) for r in records}
with_rows = [i for i in labels if len(frames[i])]
overlay = st.multiselect(
    "Runs to overlay", with_rows, default=with_rows[:3], format_func=labels.get, key="runs_overlay"
)
if overlay:
    by_id = {r["run_id"]: r for r in records}
    runtime = all(run_channel_block(by_id[i]) is not None for i in overlay)
    x, relative = axis_controls("runs", relative_first=True, runtime=runtime)
    fronts = [(i, by_id[i], frames[i]) for i in overlay]
    st.plotly_chart(overlay_figure(fronts, x=x, relative=relative), key="runs_overlay_chart")

st.subheader("Manage a run")
target = st.selectbox("Run", list(labels), format_func=labels.get, key="runs_target")
run = next(r for r in records if r["run_id"] == target)
job = registry.for_run(target)
working = job is not None and job.active
explore, resume, delete = st.columns(3)
if explore.button("Open in Explore", icon=":material/scatter_plot:"):
    select_run(target)
    st.switch_page("pages/explore.py")
resumable = run["status"] in RESUMABLE and not working
if resume.button(
    "Resume",
    icon=":material/play_arrow:",
    disabled=not resumable,
    help="Continue an interrupted, cancelled or failed run up to its subnet count.",
):
    try:
        st.session_state["job_id"] = registry.resume(store, target).job_id
    except PrunescopeError as exc:
        resources.show_error(exc)
    else:
        select_run(target)
        st.switch_page("pages/search.py")
if delete.button("Delete…", icon=":material/delete:", disabled=working):
    st.session_state["_confirm_delete"] = target
if st.session_state.get("_confirm_delete") == target:
    st.warning(
        f"Delete run {target}, its {run['evaluated']} subnets and its fine-tune and export "
        "files? This cannot be undone."
    )
    yes, no = st.columns(2)
    if yes.button("Yes, delete", type="primary"):
        try:
            delete_run(store, target)
        except PrunescopeError as exc:
            resources.show_error(exc)
        else:
            resources.cleared()
            for key in ("_confirm_delete", "runs_target"):
                st.session_state.pop(key, None)
            st.session_state["_deleted"] = target
            st.rerun()
    if no.button("Keep it"):
        del st.session_state["_confirm_delete"]
        st.rerun()

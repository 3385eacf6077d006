"""The Search page's live panel: a job's progress bar, ETA, result and growing front.

Reads `Job.snapshot()` from the registry; while the job works a fragment reruns every second,
and once it ends one full rerun drops the polling.
"""

from __future__ import annotations

import streamlit as st

from ui import jobs, resources
from ui.charts import front_figure
from ui.format import constraint_metric, duration, pct
from ui.widgets import select_run


def show_job(job_id: str) -> None:
    """Progress, result and the live front of one job (read from the registry)."""
    registry = jobs.registry()
    job = registry.get(job_id).snapshot()
    st.markdown(f"**{job['label']}**" + (f" · run `{job['run_id']}`" if job["run_id"] else ""))
    if job["phase"] == "training" and job["train"]:
        t = job["train"]
        done = (t["epoch"] - 1 + t["batch"] / max(t["batches"], 1)) / t["epochs"]
        st.progress(
            max(0.0, min(done, 1.0)),
            text=f"Training the parent: epoch {t['epoch']} of {t['epochs']}",
        )
    elif job["phase"] in ("training", "preparing"):
        st.progress(0.0, text="Preparing: loading the data and the model, building the space…")
    elif job["phase"] == "searching":
        st.progress(
            min(job["done"] / job["total"], 1.0),
            text=f"{job['done']} / {job['total']} subnets · "
            + (
                f"about {duration(job['eta'])} left"
                if job["eta"] is not None
                else "estimating time left…"
            ),
        )
    if job["active"]:
        if job["cancelling"]:
            st.caption("Cancelling after the current step…")
        elif st.button("Cancel", key=f"cancel_{job_id}"):
            registry.get(job_id).cancel.set()
    elif job["error"]:
        st.error(f"**{job['error'][0]}** — {job['error'][1]}")
    elif job["status"] == "done":
        st.success(f"Finished: {job['done']} subnets evaluated.")
    else:
        st.warning(f"Stopped ({job['status']}): {job['message'] or ''} {job['done']} subnets kept.")
    if job["best_accuracy"] is not None:
        st.caption(f"Best accuracy so far: {pct(job['best_accuracy'])}")
    if job["last_error"]:
        st.caption(f"Last subnet that failed to evaluate: {job['last_error']}")
    if job["run_id"] and (run := resources.run(job["run_id"])):
        if st.session_state.get("job_id") == job_id and st.session_state.get("_followed") != job_id:
            select_run(job["run_id"])  # Explore and Compare open on this run
            st.session_state["_followed"] = job_id
        metric = constraint_metric(run)
        figure = front_figure(
            resources.subnets(job["run_id"]),
            run,
            x=metric,
            relative=True,
            budget=run["budget"],
            height=380,
        )
        st.plotly_chart(figure, key=f"live_{job_id}")
        if not job["active"]:
            st.page_link(
                "pages/explore.py", label="Explore this run", icon=":material/scatter_plot:"
            )


@st.fragment(run_every="1s")
def follow(job_id: str) -> None:
    """Polls the registry every second while the job works."""
    show_job(job_id)
    if not jobs.registry().get(job_id).active:
        st.rerun()  # the whole page, once: drops this polling fragment


def job_panel() -> None:
    """This session's job, or else any running one: a second tab sees the search too."""
    registry = jobs.registry()
    own = registry.get(st.session_state.get("job_id"))
    running = registry.active()  # a second tab sees the job too
    job = own if own and (own.active or not running) else (running[0] if running else None)
    if job is None:
        st.info("No search running. Choose the settings and press **Start search**.")
    elif job.active:
        follow(job.job_id)
    else:
        show_job(job.job_id)

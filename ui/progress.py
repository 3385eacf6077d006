"""Live job panels: a search's progress bar, ETA, result and growing front; a fine-tune's epoch,
batch, loss and accuracy; an export's steps. Each with a Cancel button while it works.

Reads `Job.snapshot()` from the registry; while the job works a fragment reruns every second,
and once it ends one full rerun drops the polling.
"""

from __future__ import annotations

import streamlit as st

from engine.jobs import KINDS, Job
from ui import jobs, resources
from ui.charts import front_figure
from ui.format import constraint_metric, duration, parent_accuracy_text, pct
from ui.widgets import select_run

STALE_AFTER_S = 600  # a searching run that has not beaten its heart this long is dead

# What each export step is doing, for each of engine.export.STEPS.
EXPORT_STEPS = {
    "model": "Rebuilding the subnet, measuring its accuracy, saving the weights",
    "onnx": "Exporting to ONNX and running the full checker",
    "parity": "Comparing ONNX Runtime with PyTorch",
    "parent": "Exporting the parent for comparison",
    "int8": "Quantizing to INT8 (when asked)",
    "latency": "Timing ONNX Runtime on this CPU (parent, subnet and INT8 taking turns)",
    "card": "Writing the model card and the zip",
}
SESSION_KEYS = {"search": "job_id", "finetune": "finetune_job_id", "export": "export_job_id"}


def show_job(job_id: str) -> None:
    """Progress and result of one job (read from the registry)."""
    job = jobs.registry().get(job_id).snapshot()
    {"search": _search, "finetune": _finetune, "export": _export}[job["kind"]](job)


def _cancel(job: dict) -> None:
    """The Cancel button of a working job (or a note that it is stopping)."""
    if job["cancelling"]:
        st.caption("Cancelling after the current step…")
    elif st.button("Cancel", key=f"cancel_{job['job_id']}"):
        jobs.registry().get(job["job_id"]).cancel.set()


def _search(job: dict) -> None:
    """Progress, result and the live front of a search."""
    job_id = job["job_id"]
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
    elif job["phase"] == "searching" and job["tuning"]:
        done, total = job["tuning"]
        st.progress(
            done / max(total, 1),
            text=f"Short distilled fine-tune of the best subnets under the budget: {done} of "
            f"{total} done",
        )
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
        _cancel(job)
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
        st.caption(f"Parent: {parent_accuracy_text(run)}.")
        if not job["active"]:
            st.page_link(
                "pages/explore.py", label="Explore this run", icon=":material/scatter_plot:"
            )


def _finetune(job: dict) -> None:
    """Epoch, batch, running loss and accuracy of a fine-tune; its result once it ends."""
    st.markdown(f"**{job['label']}** · `{job['finetune_id']}`")
    t = job["train"]
    if job["phase"] == "finetuning" and t:
        done = (t["epoch"] - 1 + t["batch"] / max(t["batches"], 1)) / t["epochs"]
        st.progress(
            max(0.0, min(done, 1.0)),
            text=f"Epoch {t['epoch']} of {t['epochs']} · batch {t['batch']} of {t['batches']}",
        )
        cols = st.columns(3)
        cols[0].metric("Training loss", f"{t['loss']:.3f}")
        cols[1].metric("Training accuracy", pct(t["accuracy"]))
        if job["epoch"]:
            cols[2].metric(
                f"Validation after epoch {job['epoch']['epoch']}", pct(job["epoch"]["val_accuracy"])
            )
    elif job["active"]:
        st.progress(
            job["done"] / max(job["total"], 1),
            text="Preparing: rebuilding the parent, measuring the subnet before fine-tuning…",
        )
    if job["active"]:
        _cancel(job)
    elif job["error"]:
        st.error(f"**{job['error'][0]}** — {job['error'][1]}")
    elif job["status"] == "done":
        r = job["result"]
        st.success(
            f"Fine-tuned in {duration(r['seconds'] or 0)}: validation "
            f"{pct(r['val_accuracy_before'])} → {pct(r['val_accuracy_after'])}, test "
            f"{pct(r['test_accuracy_before'])} → {pct(r['test_accuracy_after'])}."
        )
    else:
        st.warning(
            f"Stopped ({job['status']}): {job['message'] or ''} Resume continues from there."
        )


def _export(job: dict) -> None:
    """Step progress of an export; its outcome once it ends."""
    st.markdown(f"**{job['label']}**")
    if job["active"]:
        step = EXPORT_STEPS.get(job["step"] or "model", job["step"])
        st.progress(
            min(job["done"] / max(job["total"], 1), 1.0),
            text=f"Step {job['done'] + 1} of {job['total']}: {step}…",
        )
        _cancel(job)
    elif job["error"]:
        st.error(f"**{job['error'][0]}** — {job['error'][1]}")
    elif job["status"] == "done":
        r = job["result"]
        st.success(
            f"Exported `{r['export_id']}`: parity "
            + ("passed" if r["parity"]["ok"] else "FAILED")
            + f", {r['latency']['speedup_batch_1']:.2f}× the parent's speed at batch 1. "
            "The report and the downloads are below."
        )
    else:
        st.warning(job["message"] or f"Stopped ({job['status']}).")


@st.fragment(run_every="1s")
def follow(job_id: str) -> None:
    """Polls the registry every second while the job works."""
    show_job(job_id)
    if not jobs.registry().get(job_id).active:
        st.rerun()  # the whole page, once: drops this polling fragment


@st.fragment(run_every="2s")
def follow_search(run_id: str, shown: int, total: int) -> None:
    """While a run searches (here or in another process), redraw the page as subnets arrive."""
    store = resources.store()
    store.mark_stale_runs_interrupted(older_than=STALE_AFTER_S)  # its process died unseen
    status = store.run(run_id)["status"]
    if status != "running":
        resources.cleared()  # the cached run list still says running
        st.rerun()
    if store.count_subnets(run_id) != shown:
        st.rerun()
    st.caption(f"This run is still searching ({shown} of {total} subnets); the chart follows it.")


def job_panel(kind: str = "search", empty: str | None = None, keep=None) -> Job | None:
    """This session's job of `kind`, or else any running one: a second tab sees it too.

    A finished job of this session shows only while `keep(job)` is true (default: always);
    `empty` is shown when there is no job. Returns the job shown.
    """
    registry = jobs.registry()
    own = registry.get(st.session_state.get(SESSION_KEYS[kind]))
    if own is not None and not own.active and keep is not None and not keep(own):
        own = None
    running = registry.active(kind)
    job = own if own and (own.active or not running) else (running[0] if running else None)
    if job is None:
        if empty:
            st.info(empty)
    elif job.active:
        follow(job.job_id)
    else:
        show_job(job.job_id)
    return job


def busy_note(what: str) -> bool:
    """True, with a caption naming it, while any job works (one at a time, all kinds)."""
    busy = jobs.registry().active()
    if busy:
        st.caption(
            f"{KINDS[busy[0].kind]} is running ({busy[0].label}); "
            f"{what} when it ends or after cancelling it."
        )
    return bool(busy)

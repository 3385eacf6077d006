"""Fine-tune & Export: fine-tune one subnet in the background, export it, download the files."""

from pathlib import Path

import pandas as pd
import streamlit as st

from engine.config import OPTIMIZERS, FinetuneRecipe
from engine.errors import PrunescopeError
from engine.finetune import finetune_id
from engine.jobs import Job
from engine.pareto import knee, pareto_front
from ui import forms, jobs, resources
from ui.charts import valid_rows, widths_figure
from ui.export_view import RECALIBRATED, exports_table, finetunes_table, show_report
from ui.format import FLOPS_NOTE, pct, recipe_epochs, recipe_text, si
from ui.nav import through_app
from ui.progress import SESSION_KEYS, busy_note, job_panel
from ui.widgets import picked_run, remember

through_app()

LIST_ALL_UP_TO = 1000  # subnets; beyond this only the front (and the preselected one) is offered
RESUMABLE = ("cancelled", "interrupted", "failed")
OPTIMIZER_LABELS = {"sgd": "SGD (momentum 0.9, Nesterov)", "adamw": "AdamW"}


def _optimizer_changed() -> None:
    st.session_state["fx_lr"] = forms.finetune_lr(st.session_state["fx_optimizer"])


def _follow_once(job: Job | None, key: str, value) -> None:
    """Once per finished job of this session: point widget `key` at what the job made."""
    followed = st.session_state.setdefault("_fx_followed", set())
    if job is None or job.active or job.status != "done" or job.job_id in followed:
        return
    own = st.session_state.get(SESSION_KEYS[job.kind]) == job.job_id
    if own:
        st.session_state[key] = value
        followed.add(job.job_id)


def status_of(r: dict, working: set) -> str:
    """A fine-tune's status; a "running" row that no worker here owns was cut off."""
    cut_off = r["status"] == "running" and r["finetune_id"] not in working
    return "interrupted" if cut_off else r["status"]


def records_of(frame: pd.DataFrame) -> list[dict]:
    """Rows as dicts with None, not NaN, where a value is missing."""
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


remember("fx_", forms.finetune_defaults())
registry = jobs.registry()
store = resources.store()
st.title("Fine-tune & Export")
run_id, run = picked_run()
subnets = resources.subnets(run_id)
if subnets.empty:
    st.info("This run has no evaluated subnets yet.")
    st.stop()

# --- the subnet --------------------------------------------------------------------------------
valid = valid_rows(subnets)
front = pareto_front(valid)
on_front = set(front["subnet_id"].astype(int))
knee_row = knee(front)
explored = st.session_state.get("_explored", {}).get(run_id)
preferred = (
    explored if explored is not None else (None if knee_row is None else int(knee_row["subnet_id"]))
)
offered = valid if len(valid) <= LIST_ALL_UP_TO else valid[valid["subnet_id"].isin(on_front)]
labels = {
    int(r.subnet_id): f"Subnet {int(r.subnet_id)} · {pct(r.accuracy)} · "
    f"{pct(r.flops / run['parent_flops'])} FLOPs"
    + (" · on the front" if r.subnet_id in on_front else "")
    for r in offered.sort_values("flops").itertuples()
}
if preferred is not None and preferred not in labels and (valid["subnet_id"] == preferred).any():
    labels[preferred] = f"Subnet {preferred}"
labels |= {
    int(r.subnet_id): f"Subnet {int(r.subnet_id)} · failed to evaluate"
    for r in subnets[~subnets.index.isin(valid.index)].itertuples()
}
pick_key = f"_fx_subnet_{run_id}"
if st.session_state.get(pick_key) not in labels:  # first visit, or back from Explore
    st.session_state[pick_key] = preferred if preferred in labels else next(iter(labels))
subnet_id = st.selectbox(
    "Subnet",
    list(labels),
    key=pick_key,
    format_func=labels.get,
    help="Opens on the subnet shown on Explore, else the knee of the front.",
)
row = subnets[subnets["subnet_id"] == subnet_id].iloc[0]
if not valid["subnet_id"].eq(subnet_id).any():
    why = row["error"] if isinstance(row["error"], str) else "it has no accuracy"
    st.error(
        f"**Subnet {subnet_id} failed to evaluate** — {why}. "
        "It cannot be fine-tuned or exported; pick another subnet."
    )
    st.stop()

numbers, widths = st.columns([2, 3], gap="large")
with numbers:
    top, bottom = st.columns(2), st.columns(2)
    top[0].metric(
        "Accuracy",
        pct(row["accuracy"], 2),
        f"{100 * (row['accuracy'] - run['parent_accuracy']):+.2f} pp vs the parent",
        help="On the search-validation split, after BatchNorm recalibration.",
    )
    top[1].metric("On the front", "yes" if subnet_id in on_front else "no")
    bottom[0].metric(
        "FLOPs",
        si(row["flops"]),
        f"{pct(row['flops'] / run['parent_flops'])} of the parent",
        delta_color="off",
        delta_arrow="off",
        help=FLOPS_NOTE,
    )
    bottom[1].metric(
        "Params",
        si(row["params"]),
        f"{pct(row['params'] / run['parent_params'])} of the parent",
        delta_color="off",
        delta_arrow="off",
    )
    st.caption(FLOPS_NOTE)
with widths:
    st.plotly_chart(
        widths_figure(
            run["space"]["groups"], {f"Subnet {subnet_id}": list(row["encoding"])}, height=300
        ),
        key="fx_widths",
    )

# --- fine-tune --------------------------------------------------------------------------------
st.subheader("Fine-tune")
tuned = resources.finetunes(run_id)
mine = tuned[tuned["subnet_id"] == subnet_id] if len(tuned) else tuned
working = {j.finetune_id for j in registry.active("finetune")}
settings, live = st.columns([2, 3], gap="large")
with settings:
    problems: list[tuple[str, str]] = []
    st.number_input("Epochs", 1, 1000, key="fx_epochs")
    st.radio(
        "Optimizer",
        OPTIMIZERS,
        format_func=OPTIMIZER_LABELS.get,
        horizontal=True,
        key="fx_optimizer",
        on_change=_optimizer_changed,
    )
    st.number_input(
        "Learning rate",
        0.0,
        10.0,
        step=0.001,
        format="%.4f",
        key="fx_lr",
        help="The starting rate; a cosine schedule takes it to zero over the epochs.",
    )
    distill = st.checkbox(
        "Distill from the parent",
        key="fx_distill",
        help="Add a KL term towards the parent's softened outputs: "
        "loss = α·T²·KL + (1 − α)·cross-entropy.",
    )
    if distill:
        left, right = st.columns(2)
        left.number_input("Temperature T", 0.0, 100.0, step=0.5, key="fx_temperature")
        right.slider("Weight α of the distillation term", 0.0, 1.0, step=0.05, key="fx_alpha")
    with st.expander("More settings"):
        st.number_input("Weight decay", 0.0, 1.0, step=1e-4, format="%.5f", key="fx_weight_decay")
        st.number_input("Batch size", 1, 4096, key="fx_batch")
        st.checkbox("Augment (random crop and flip)", key="fx_augment")
        st.number_input("Seed", 0, 2**31 - 1, key="fx_seed")
    ss = st.session_state
    recipe = None
    try:
        recipe = forms.finetune_recipe(ss)
    except PrunescopeError as exc:
        problems.append((exc.title, exc.message))
    for title, message in problems:
        st.error(f"**{title}** — {message}")
    if recipe is not None:
        same = mine[mine["finetune_id"] == finetune_id(run_id, subnet_id, recipe)]
        if len(same) and same.iloc[0]["status"] == "done":
            st.caption(
                "This subnet already has this exact fine-tune (listed below): starting it again "
                "shows that result at once. Change the recipe for a new one."
            )
        elif len(same):
            st.caption(
                f"This recipe stopped after {int(same.iloc[0]['epochs_done'] or 0)} epochs: "
                "starting it again resumes from there."
            )
    busy = busy_note("start a fine-tune")
    if st.button("Start fine-tune", type="primary", disabled=bool(problems or busy)):
        try:
            job = registry.start_finetune(store, run_id, subnet_id, recipe)
        except PrunescopeError as exc:
            resources.show_error(exc)
        else:
            ss[SESSION_KEYS["finetune"]] = job.job_id
            st.rerun()
with live:
    ft_job = job_panel(
        "finetune",
        "No fine-tune running. Choose a recipe and press **Start fine-tune**.",
        keep=lambda j: j.run_id == run_id and j.subnet_id == subnet_id,
    )

st.markdown(f"**Fine-tunes of subnet {subnet_id}**")
if mine.empty:
    st.caption("None yet.")
else:
    records = records_of(mine)
    st.dataframe(
        finetunes_table(records, [status_of(r, working) for r in records]), hide_index=True
    )
    for r in records:
        status = status_of(r, working)
        if status not in RESUMABLE:
            continue
        text, button = st.columns([5, 1], vertical_alignment="center")
        text.markdown(
            f"`{r['finetune_id']}` {status} after {int(r['epochs_done'] or 0)} of "
            f"{recipe_epochs(r['recipe'])} epochs" + (f": {r['message']}" if r["message"] else ".")
        )
        if button.button(
            "Resume",
            key=f"resume_{r['finetune_id']}",
            icon=":material/play_arrow:",
            disabled=bool(registry.active()),
            help="Continue from the last finished epoch.",
        ):
            try:
                recipe = FinetuneRecipe.from_dict(r["recipe"])  # ConfigError when unreadable
                job = registry.start_finetune(store, run_id, subnet_id, recipe)
            except PrunescopeError as exc:
                resources.show_error(exc)
            else:
                ss[SESSION_KEYS["finetune"]] = job.job_id
                st.rerun()

# --- export -----------------------------------------------------------------------------------
st.subheader("Export")
settings, live = st.columns([2, 3], gap="large")
with settings:
    sources = {RECALIBRATED: "As pruned, BatchNorm recalibrated (no fine-tune)"}
    sources |= {
        r["finetune_id"]: f"Fine-tune {r['finetune_id']} · {recipe_text(r['recipe'] or {})} · "
        + (
            f"validation {pct(r['val_accuracy_after'])}"
            if r["status"] == "done"
            else status_of(r, working)
        )
        for r in records_of(mine)
    }
    source_key = f"_fx_source_{run_id}_{subnet_id}"
    if ft_job is not None and ft_job.subnet_id == subnet_id and ft_job.finetune_id in sources:
        _follow_once(ft_job, source_key, ft_job.finetune_id)  # export what was just fine-tuned
    if st.session_state.get(source_key) not in sources:
        st.session_state[source_key] = RECALIBRATED
    source = st.selectbox("Source", list(sources), format_func=sources.get, key=source_key)
    problem = False
    if source != RECALIBRATED:
        tune = next(r for r in records_of(mine) if r["finetune_id"] == source)
        if tune["status"] != "done" or not Path(tune["checkpoint"] or "").is_file():
            problem = True
            state = "still running" if source in working else status_of(tune, working)
            st.error(
                f"**Fine-tune {source} is {state}** — it has finished "
                f"{int(tune['epochs_done'] or 0)} of {recipe_epochs(tune['recipe'])} epochs, "
                "so there are no fine-tuned weights to export"
                + (
                    " yet. Export it when it finishes"
                    if source in working
                    else " (or its weights file is gone). Resume it first"
                )
                + ", or export the recalibrated subnet."
            )
    st.checkbox(
        "Also make an INT8 model",
        key="fx_int8",
        help="ONNX Runtime static quantization (QDQ, per-channel), calibrated on training "
        "images; the report gives its accuracy drop, size and latency.",
    )
    busy = busy_note("export")
    if st.button("Export", type="primary", disabled=problem or busy):
        try:
            job = registry.start_export(
                store,
                run_id,
                subnet_id,
                finetune_id=None if source == RECALIBRATED else source,
                config=forms.export_config(ss),
            )
        except PrunescopeError as exc:
            resources.show_error(exc)
        else:
            ss[SESSION_KEYS["export"]] = job.job_id
            st.rerun()
    st.caption(
        "Writes ONNX (checked in full, dynamic batch), the weights as safetensors with a "
        "description to rebuild them, and a model card; times ONNX Runtime against the parent."
    )
with live:
    ex_job = job_panel(
        "export",
        "No export running. Choose the source and press **Export**.",
        keep=lambda j: j.run_id == run_id,
    )

st.subheader("Exports of this run")
exports = resources.exports(run_id)
if exports.empty:
    st.caption("None yet.")
    st.stop()
records = {r["export_id"]: r for r in records_of(exports)}


st.dataframe(exports_table(records), hide_index=True)
view_key = f"_fx_view_{run_id}"
if ex_job is not None and ex_job.result:
    _follow_once(ex_job, view_key, ex_job.result["export_id"])
if st.session_state.get(view_key) not in records:
    of_subnet = [i for i, r in records.items() if int(r["subnet_id"]) == subnet_id]
    st.session_state[view_key] = (of_subnet or list(records))[0]
shown = st.selectbox(
    "Report of",
    list(records),
    key=view_key,
    format_func=lambda i: (
        f"Export {i} · subnet {int(records[i]['subnet_id'])} · "
        f"{records[i]['finetune_id'] or RECALIBRATED} · {records[i]['created_at']:%Y-%m-%d %H:%M}"
    ),
)
show_report(records[shown])

"""Explore: one run's accuracy-vs-cost front, a budget slider, and a subnet's widths."""

import math

import streamlit as st

from engine.config import DEPTH_TEXT
from engine.errors import PrunescopeError
from engine.pareto import best_pick, knee, pareto_front
from ui import resources
from ui.charts import clicked_subnet, finished_finetunes, front_figure, valid_rows, widths_figure
from ui.format import (
    FLOPS_NOTE,
    METRIC_LABELS,
    constraint_metric,
    parent_accuracy_text,
    pct,
    run_channel_block,
    runtime_note,
    si,
    validation_split,
)
from ui.nav import through_app
from ui.progress import follow_search
from ui.widgets import axis_controls, picked_run

BUDGET_LABELS = {
    "flops": "FLOP budget",
    "params": "Parameter budget",
    "runtime_flops": "Runtime FLOP budget",
}

through_app()

st.title("Explore")
run_id, run = picked_run()
subnets = resources.subnets(run_id)
valid = valid_rows(subnets)
if run["status"] == "running" and st.toggle(
    "Follow the search", value=True, key="explore_follow", help="Redraw as new subnets arrive."
):
    follow_search(run_id, len(subnets), int(run["num_subnets"]))
if valid.empty:
    st.info("This run has no evaluated subnets yet.")
    st.stop()

block = run_channel_block(run)
x, relative = axis_controls("explore", runtime=block is not None)
parent_x = float(run[f"parent_{x}"])
lowest = min(100, math.ceil(100 * float(valid[x].min()) / parent_x))
default = round(100 * run["budget"] / parent_x) if constraint_metric(run) == x else 50
budget_pct = st.slider(
    BUDGET_LABELS[x],
    min(max(1, lowest), 99),
    100,
    value=max(lowest, min(default, 100)),
    step=1,
    format="%d%%",
    key=f"explore_budget_{run_id}_{x}",
    help="In % of the parent; the page shows the most accurate subnet that fits.",
)
budget = budget_pct / 100 * parent_x
best = best_pick(valid, budget, x=x)  # judged at the deepest rung it reached
front = pareto_front(valid, x=x)
knee_row = knee(front, x=x)

if best is None:
    st.warning(f"No evaluated subnet fits under {budget_pct}% of the parent's {METRIC_LABELS[x]}.")
else:
    acc_lost = float(run["parent_accuracy"]) - float(best["accuracy"])
    metrics = ["flops", "params"] + (["runtime_flops"] if block is not None else [])
    saved = {m: 1 - float(best[m]) / float(run[f"parent_{m}"]) for m in metrics}
    shown = "runtime_flops" if x == "runtime_flops" else "flops"
    cols = st.columns(4)
    cols[0].metric("Best under budget", f"Subnet {int(best['subnet_id'])}")
    cols[1].metric(
        "Accuracy lost",
        f"{100 * acc_lost:.2f} pp",
        help=f"{pct(best['accuracy'], 2)} against the parent's {parent_accuracy_text(run)}",
    )
    cols[2].metric(
        f"{METRIC_LABELS[shown]} saved",
        pct(saved[shown]),
        help=FLOPS_NOTE if shown == "flops" else runtime_note(block),
    )
    cols[3].metric("Params saved", pct(saved["params"]))
    table = (
        f"| | Parent | Subnet {int(best['subnet_id'])} | Change |\n|---|---:|---:|---|\n"
        f"| Accuracy | {pct(run['parent_accuracy'], 2)} | {pct(best['accuracy'], 2)} "
        f"| {abs(100 * acc_lost):.2f} pp {'lost' if acc_lost >= 0 else 'gained'} |\n"
    )
    for m in saved:
        label = METRIC_LABELS[m] + (
            f" (channels padded to {block})" if m == "runtime_flops" else ""
        )
        table += f"| {label} | {si(run[f'parent_{m}'])} | {si(best[m])} | {pct(saved[m])} saved |\n"
    st.markdown(table)
    depth = best.get("depth") if isinstance(best.get("depth"), str) else "val"
    tuned = best.get("tuned_accuracy")
    st.caption(
        f"Accuracies on search-validation: {validation_split(run)}. The parent: "
        f"{parent_accuracy_text(run)}. Subnet {int(best['subnet_id'])} was evaluated to: "
        f"{DEPTH_TEXT[depth]}"
        + (
            f" (picked on its accuracy after it, {pct(tuned, 2)})"
            if depth == "finetune" and tuned == tuned and tuned is not None
            else ""
        )
        + "."
    )

# A click on the chart picks a subnet: read before the picker below is drawn.
pick_key = f"explore_pick_{run_id}"
clicked = clicked_subnet(st.session_state.get("explore_chart"))
if clicked is not None and clicked != st.session_state.get("_explore_clicked"):
    st.session_state["_explore_clicked"] = st.session_state[pick_key] = clicked
marks = {} if best is None else {"Best under budget": best}
choices = ["best", *front["subnet_id"].astype(int).tolist()]
extra = st.session_state.get("_explore_clicked")
if extra is not None and extra not in choices and (valid["subnet_id"] == extra).any():
    choices.append(extra)
if st.session_state.get(pick_key) not in choices:
    st.session_state[pick_key] = "best"
picked = st.session_state[pick_key]
if picked != "best":
    marks["Selected"] = valid[valid["subnet_id"] == picked].iloc[0]

finetunes = resources.finetunes(run_id)
figure = front_figure(
    valid, run, x=x, relative=relative, budget=budget, marks=marks, finetunes=finetunes
)
st.plotly_chart(figure, key="explore_chart", on_select="rerun", selection_mode="points")
notes = [FLOPS_NOTE, f"{len(valid)} subnets, {len(front)} on the front."]
if x == "runtime_flops":
    notes.insert(1, runtime_note(block))
if tuned := len(finished_finetunes(finetunes)):
    notes.append(f"{tuned} fine-tune{'s' if tuned > 1 else ''}: diamonds over their subnets.")
if knee_row is not None:
    notes.append(
        f"Knee: subnet {int(knee_row['subnet_id'])} "
        f"({pct(knee_row['accuracy'])} at {pct(knee_row[x] / parent_x)} of the parent)."
    )
st.caption(" ".join(notes))

st.subheader("The front on test")
scored = front[front["test_accuracy"].notna()] if "test_accuracy" in front else front.iloc[:0]
if len(scored) < len(front) and st.button(
    f"Score the {len(front) - len(scored)} front subnets on test",
    help="Rebuilds each front subnet exactly as scored and measures it on the reporting test "
    "split, which the search never looked at. Tune on validation, report test.",
):
    with st.spinner("Scoring the front on the test split…"):
        try:
            resources.score_on_test(run_id, front["subnet_id"].astype(int).tolist())
        except PrunescopeError as exc:
            resources.show_error(exc)
        else:
            st.rerun()
if len(scored):
    st.dataframe(
        {
            "subnet": [int(s) for s in scored["subnet_id"]],
            f"{METRIC_LABELS[x]} (% of parent)": [pct(v / parent_x) for v in scored[x]],
            "search-validation": [pct(v, 2) for v in scored["accuracy"]],
            "test": [pct(v, 2) for v in scored["test_accuracy"]],
        },
        hide_index=True,
    )
    st.caption(f"Test: the reporting split; the parent scores {parent_accuracy_text(run)}.")

st.subheader("Widths of a subnet")
row = best if picked == "best" else marks["Selected"]
names = {
    int(r.subnet_id): f"Subnet {int(r.subnet_id)} · {pct(r.accuracy)} · "
    f"{pct(getattr(r, x) / parent_x)} of the parent's {METRIC_LABELS[x]}"
    for r in front.itertuples()
}
names["best"] = "Best under budget"  # a fixed label: the subnet behind it moves with the slider
st.selectbox(
    "Subnet",
    choices,
    key=pick_key,
    help="Or click a point on the chart.",
    format_func=lambda c: names.get(c) or f"Subnet {c}",
)
if row is not None:
    # Fine-tune & Export opens on the subnet shown here (a plain key: it outlives this page).
    st.session_state.setdefault("_explored", {})[run_id] = int(row["subnet_id"])
    st.plotly_chart(
        widths_figure(
            run["space"]["groups"], {f"Subnet {int(row['subnet_id'])}": list(row["encoding"])}
        ),
        key="explore_widths",
    )
    st.page_link(
        "pages/finetune_export.py",
        label=f"Fine-tune & export subnet {int(row['subnet_id'])}",
        icon=":material/model_training:",
    )

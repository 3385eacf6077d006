"""Compare: two to four subnets of one run side by side."""

import numpy as np
import pandas as pd
import streamlit as st

from engine.errors import PrunescopeError
from engine.pareto import knee, pareto_front
from ui import resources
from ui.charts import per_class_figure, valid_rows, widths_figure
from ui.format import FLOPS_NOTE, pct, run_channel_block
from ui.nav import through_app
from ui.widgets import picked_run

through_app()

LIST_ALL_UP_TO = 1000  # subnets; beyond this only the front is offered

st.title("Compare")
run_id, run = picked_run()
valid = valid_rows(resources.subnets(run_id)).set_index("subnet_id", drop=False)
if len(valid) < 2:
    st.info("This run needs at least two evaluated subnets to compare.")
    st.stop()

front = pareto_front(valid)
on_front = set(front["subnet_id"].astype(int))
offered = valid if len(valid) <= LIST_ALL_UP_TO else front
offered = offered.sort_values("flops")
labels = {
    int(r.subnet_id): f"Subnet {int(r.subnet_id)} · {pct(r.accuracy)} · "
    f"{pct(r.flops / run['parent_flops'])} FLOPs"
    for r in offered.itertuples()
}
knee_row = knee(front)
default = [int(knee_row["subnet_id"])] if knee_row is not None else []
default += [i for i in reversed(front["subnet_id"].astype(int).tolist()) if i not in default][:1]
default += [i for i in labels if i not in default][: 2 - len(default)]
picked = st.multiselect(
    "Subnets",
    list(labels),
    default=default,
    max_selections=4,
    format_func=labels.get,
    key=f"compare_{run_id}",
    help="Two to four; the knee and the most accurate front subnet first.",
)
if len(picked) < 2:
    st.info("Pick two to four subnets.")
    st.stop()

rows = valid.loc[picked]
table = pd.DataFrame(
    {
        "accuracy": [run["parent_accuracy"], *rows["accuracy"]],
        "accuracy lost (pp)": [0.0, *(100 * (run["parent_accuracy"] - rows["accuracy"]))],
        "FLOPs": [run["parent_flops"], *rows["flops"]],
        "FLOPs (% of parent)": [100.0, *(100 * rows["flops"] / run["parent_flops"])],
        "params": [run["parent_params"], *rows["params"]],
        "params (% of parent)": [100.0, *(100 * rows["params"] / run["parent_params"])],
        "sampler": ["", *rows["sampler"]],
        "on the front": [None, *(i in on_front for i in picked)],
    },
    index=["Parent", *(f"Subnet {i}" for i in picked)],
)
if block := run_channel_block(run):  # runs from before runtime FLOPs have no such column
    runtime = [run["parent_runtime_flops"], *rows["runtime_flops"]]
    table.insert(4, f"runtime FLOPs (padded to {block})", runtime)
    table.insert(5, "runtime FLOPs (% of parent)", 100 * np.array(runtime) / runtime[0])
formats = {
    "accuracy": "{:.2%}",
    "accuracy lost (pp)": "{:.2f}",
    "FLOPs": "{:,.0f}",
    "FLOPs (% of parent)": "{:.1f}",
    f"runtime FLOPs (padded to {block})": "{:,.0f}",
    "runtime FLOPs (% of parent)": "{:.1f}",
    "params": "{:,.0f}",
    "params (% of parent)": "{:.1f}",
}
st.dataframe(table.style.format({k: v for k, v in formats.items() if k in table}))
st.caption(FLOPS_NOTE)

st.subheader("Kept channels per group")
st.plotly_chart(
    widths_figure(
        run["space"]["groups"], {f"Subnet {i}": list(valid.at[i, "encoding"]) for i in picked}
    ),
    key="compare_widths",
)

st.subheader("Per-class accuracy (search-validation)")
if st.session_state.get("_per_class_run") != run_id:
    st.caption(
        "Rebuilds each subnet from the parent and recalibrates its BatchNorm: a few "
        "seconds of CPU per subnet, then cached."
    )
    if st.button("Compute per-class accuracy"):
        st.session_state["_per_class_run"] = run_id
        st.rerun()
else:
    path = str(resources.store().path)
    try:
        with st.spinner("Rebuilding the parent and the subnets…"):
            series = {"Parent": resources.class_accuracy(path, run_id, None)}
            series |= {
                f"Subnet {i}": resources.class_accuracy(path, run_id, int(i)) for i in picked
            }
            class_names = resources.parent(path, run_id).splits.class_names
    except PrunescopeError as exc:
        resources.show_error(exc)
    else:
        st.plotly_chart(per_class_figure(class_names, series), key="compare_per_class")

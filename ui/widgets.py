"""Shared widgets: the sidebar run picker, the x-axis switches, widget memory across pages.

The chosen run lives in `st.session_state["run_id"]` (a plain key, not a widget key), so it
survives pages where the picker is not drawn, and a page may set it to show a new run.
"""

from __future__ import annotations

import streamlit as st

from ui import resources
from ui.format import METRIC_LABELS, run_label

RUN_KEY = "run_id"  # the selected run id, shared by Explore and Compare
_PICKER_KEY = "_run_picker"


def select_run(run_id: str) -> None:
    """Make `run_id` the run Explore and Compare show (call before the picker is drawn)."""
    st.session_state[RUN_KEY] = run_id


def selected_run() -> str | None:
    return st.session_state.get(RUN_KEY)


def _picked() -> None:
    st.session_state[RUN_KEY] = st.session_state[_PICKER_KEY]


def run_picker() -> str | None:
    """Sidebar selectbox of every run, newest first; returns the selected run id."""
    runs = resources.runs()
    if runs.empty:
        st.sidebar.caption("No runs yet.")
        return None
    labels = {r["run_id"]: run_label(r) for r in runs.to_dict("records")}
    current = st.session_state.get(RUN_KEY)
    if current not in labels:
        current = next(iter(labels))
    st.session_state[RUN_KEY] = st.session_state[_PICKER_KEY] = current
    st.sidebar.selectbox(
        "Run",
        list(labels),
        key=_PICKER_KEY,
        format_func=labels.get,
        on_change=_picked,
        help="The run Explore and Compare show. Runs lists them all.",
    )
    return current


def picked_run() -> tuple[str, dict]:
    """The sidebar's run id and record; stops the page, pointing to Search, when there is none."""
    run_id = run_picker()
    run = resources.run(run_id) if run_id else None
    if run is None:
        st.info("No runs yet: start a search first.")
        st.page_link("pages/search.py", label="Search", icon=":material/travel_explore:")
        st.stop()
    return run_id, run


def axis_controls(
    key: str, relative_first: bool = False, runtime: bool = False
) -> tuple[str, bool]:
    """Two horizontal radios: x metric (FLOPs / params, and runtime FLOPs when every run shown
    has them) and scale (absolute / % of parent)."""
    left, right = st.columns(2)
    metrics = [m for m in METRIC_LABELS if runtime or m != "runtime_flops"]
    if st.session_state.get(f"{key}_x") not in metrics:
        st.session_state[f"{key}_x"] = metrics[0]
    x = left.radio(
        "x axis",
        metrics,
        format_func=METRIC_LABELS.get,
        horizontal=True,
        key=f"{key}_x",
    )
    scales = ["relative", "absolute"] if relative_first else ["absolute", "relative"]
    scale = right.radio(
        "Scale",
        scales,
        horizontal=True,
        key=f"{key}_scale",
        format_func={"absolute": "Absolute", "relative": "% of parent"}.get,
    )
    return x, scale == "relative"


def remember(prefix: str, defaults: dict | None = None) -> None:
    """Keep the values of widgets whose keys start with `prefix` across pages.

    Streamlit forgets a widget's value on the first page that does not draw it; re-assigning
    the value on every run makes it plain session state that outlives the page. `defaults` fill
    keys not set yet (widgets then take no default argument of their own).
    """
    for key, value in (defaults or {}).items():
        st.session_state.setdefault(key, value)
    for key in [k for k in st.session_state if isinstance(k, str) and k.startswith(prefix)]:
        st.session_state[key] = st.session_state[key]

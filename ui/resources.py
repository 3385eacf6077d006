"""Cached resources (the Store, rebuilt parents) and cached query frames.

One `Store` per DuckDB file and process, opened once. Frames are cached by `st.cache_data`
with keys that change when rows do: a run's subnets by its current row count; the run list,
fine-tunes and exports by the job registry's write counter. `cleared()` drops them after a
write such as a delete.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from engine.errors import PrunescopeError
from engine.evaluate import per_class_accuracy
from engine.store import Store
from engine.workspace import db_path, rebuild_parent, score_subnets_on_test, scored_subnet
from ui.jobs import registry


def show_error(exc: PrunescopeError) -> None:
    st.error(f"**{exc.title}** — {exc.message}")


@st.cache_resource(show_spinner=False)
def _open_store(path: str) -> Store:
    return Store(path)


def store() -> Store:
    """The Store of `db_path()`; a page that cannot open it shows why and stops."""
    try:
        return _open_store(str(db_path()))
    except PrunescopeError as exc:
        show_error(exc)
        st.stop()


@st.cache_data(show_spinner=False, max_entries=4)
def _runs(path: str, version: int) -> pd.DataFrame:
    return _open_store(path).runs()


def runs() -> pd.DataFrame:
    """Every run, newest first (see Store.runs)."""
    return _runs(str(store().path), registry().version)


def run(run_id: str) -> dict | None:
    """One run as a dict, from the cached run list; None if it is gone."""
    frame = runs()
    rows = frame[frame["run_id"] == run_id]
    return None if rows.empty else rows.iloc[0].to_dict()


@st.cache_data(show_spinner=False, max_entries=16)
def _subnets(path: str, run_id: str, count: int) -> pd.DataFrame:
    return _open_store(path).subnets(run_id)


def subnets(run_id: str) -> pd.DataFrame:
    """A run's subnets; the key holds the row count, so rows a search adds show up at once."""
    s = store()
    return _subnets(str(s.path), run_id, s.count_subnets(run_id))


@st.cache_data(show_spinner=False, max_entries=16)
def _finetunes(path: str, run_id: str, version: int) -> pd.DataFrame:
    return _open_store(path).finetunes(run_id)


def finetunes(run_id: str) -> pd.DataFrame:
    """A run's fine-tunes, newest first, with their subnet's flops/params/accuracy."""
    return _finetunes(str(store().path), run_id, registry().version)


@st.cache_data(show_spinner=False, max_entries=16)
def _exports(path: str, run_id: str, version: int) -> pd.DataFrame:
    return _open_store(path).exports(run_id)


def exports(run_id: str) -> pd.DataFrame:
    """A run's exports, newest first; `report` as a dict."""
    return _exports(str(store().path), run_id, registry().version)


def cleared() -> None:
    """Forget cached frames after a write."""
    _runs.clear()
    _subnets.clear()
    _finetunes.clear()
    _exports.clear()
    registry().bump()


@st.cache_resource(show_spinner=False, max_entries=2)
def parent(path: str, run_id: str):
    """The run's parent rebuilt in its stored space (model, data splits); seconds of CPU."""
    return rebuild_parent(_open_store(path).run(run_id))


def score_on_test(run_id: str, subnet_ids: list[int]) -> None:
    """Score these subnets on the reporting test split (stored with them), then refresh."""
    s = store()
    path = str(s.path)
    score_subnets_on_test(s, s.run(run_id), parent(path, run_id), subnet_ids)
    cleared()


@st.cache_data(show_spinner=False, max_entries=256)
def class_accuracy(path: str, run_id: str, subnet_id: int | None) -> list[float]:
    """Per-class accuracy on the search-validation split: of the parent when subnet_id is None."""
    p = parent(path, run_id)
    s = _open_store(path)
    run = s.run(run_id)
    val_x, val_y = p.splits.tensors("val")
    if subnet_id is None:
        model = p.model
    else:
        model = scored_subnet(p, run, s.subnet(run_id, subnet_id)["encoding"])
    return per_class_accuracy(model, val_x, val_y, p.splits.num_classes)

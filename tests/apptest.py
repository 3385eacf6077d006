"""Helpers for the page tests (Streamlit's AppTest): open a page through app.py, read its
charts, errors and buttons, fill and run the Search form, wait for background jobs."""

from __future__ import annotations

import base64
import json
import time

import numpy as np
from streamlit.testing.v1 import AppTest

from engine.store import Store
from tests.conftest import REPO
from ui.jobs import registry
from ui.nav import PAGES


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60).run()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def title_of(page: str) -> str:
    return next(p.title for p in PAGES if p.path == page)


def figures(at: AppTest) -> list[dict]:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def values(data) -> list:
    """A trace's array: plotly writes numpy arrays as base64 typed arrays."""
    if isinstance(data, dict) and "bdata" in data:
        return np.frombuffer(base64.b64decode(data["bdata"]), dtype=data["dtype"]).tolist()
    return list(data)


def trace_names(figure: dict) -> list[str]:
    return [t.get("name") for t in figure["data"]]


def errors(at: AppTest) -> str:
    return " ".join(e.value for e in at.error)


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def downloads(at: AppTest) -> dict[str, bool]:
    """Download button label -> enabled."""
    return {b.proto.label: not b.proto.disabled for b in at.get("download_button")}


def subnets_of(path, run_id):
    with Store(path) as store:
        return store.subnets(run_id)


def small_search(subnets: int = 6, images: int = 256, **text_inputs: str) -> AppTest:
    """The Search page filled for a quick search on random weights."""
    at = open_page("pages/search.py")
    at.radio(key="search_weights").set_value("random")
    for key, value in text_inputs.items():
        at.text_input(key=key).set_value(value)
    at.number_input(key="search_subnets").set_value(subnets)
    at.number_input(key="search_calib").set_value(images)
    return at.number_input(key="search_val").set_value(images).run()


def start_and_wait(at: AppTest) -> AppTest:
    button(at, "Start search").click().run()
    assert not at.exception, at.exception
    return wait(at)


def wait(at: AppTest, timeout: float = 120) -> AppTest:
    """Rerun `at` once no job works any more (or after `timeout` seconds)."""
    deadline = time.time() + timeout
    while registry().active() and time.time() < deadline:
        time.sleep(0.25)
    return at.run()


def wait_for(condition, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.1)

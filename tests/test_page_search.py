"""AppTest of the Search page: the form's errors, uploads, background searches, cancel and resume.

Each test points the app at its own results file (the `db` fixture).
"""

import time

import pytest
import torch
from safetensors.torch import save_file
from streamlit.testing.v1 import AppTest

from engine.config import ModelSpec
from engine.models import create_model
from engine.store import Store
from tests.apptest import (
    button,
    errors,
    figures,
    open_page,
    small_search,
    start_and_wait,
    trace_names,
    values,
    wait,
)
from ui.jobs import registry


def test_search_bad_constraint_is_an_error_not_a_traceback(db):
    at = open_page("pages/search.py")
    assert button(at, "Start search") is not None
    at.text_input(key="search_limit").set_value("150").run()
    assert "at most 100%" in errors(at)
    assert button(at, "Start search").disabled
    at.text_input(key="search_limit").set_value("half").run()
    assert "Cannot read" in errors(at)
    at.radio(key="search_mode").set_value("absolute")
    at.text_input(key="search_limit").set_value("2e7").run()
    assert not at.error


def _upload(at: AppTest, name: str, data: bytes) -> AppTest:
    at.radio(key="search_weights").set_value("file").run()
    at.file_uploader(key="upload_weights").set_value((name, data, "application/octet-stream"))
    return at.run()


class NotAStateDict:
    """Pickling an instance stores a reference to code; weights_only loading must refuse it."""


@pytest.mark.parametrize(
    "name, make, message",
    [
        ("evil.pt", lambda p: torch.save({"x": NotAStateDict()}, p), "run code"),
        ("notes.pt", lambda p: p.write_bytes(b"hello, not torch"), "not a readable"),
        ("bad.safetensors", lambda p: p.write_bytes(b"\x00" * 32), "not a readable safetensors"),
        (
            "resnet20-missing.safetensors",
            lambda p: save_file(
                {k: v for k, v in _resnet20_state().items() if k != "conv1.weight"}, str(p)
            ),
            "key 'conv1.weight' is missing",
        ),
    ],
)
def test_search_bad_upload_is_explained(db, tmp_path, name, make, message):
    path = tmp_path / name
    make(path)
    at = _upload(open_page("pages/search.py"), name, path.read_bytes())
    assert not at.exception
    assert message in errors(at)
    assert button(at, "Start search").disabled


def _resnet20_state() -> dict:
    model = create_model(ModelSpec(name="resnet20", weights="random"))
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def test_search_good_upload_is_saved_by_hash_and_accepted(db, tmp_path):
    path = tmp_path / "parent.safetensors"
    save_file(_resnet20_state(), str(path))
    at = _upload(open_page("pages/search.py"), "parent.safetensors", path.read_bytes())
    assert "fits resnet20" in at.success[0].value
    assert not at.error and not button(at, "Start search").disabled
    assert len(list((tmp_path / "home" / "uploads").glob("*.safetensors"))) == 1


@pytest.mark.parametrize(
    "folder, message",
    [("nowhere", "There is no folder"), ("empty", "No images found")],
)
def test_search_bad_imagefolder_fails_with_a_message(db, tmp_path, folder, message):
    (tmp_path / "empty" / "cats").mkdir(parents=True)  # a class folder without images
    at = open_page("pages/search.py")
    at.radio(key="search_weights").set_value("random")
    at.selectbox(key="search_dataset").set_value("imagefolder").run()
    assert "Enter the path" in errors(at)
    at.text_input(key="search_root").set_value(str(tmp_path / folder)).run()
    at = start_and_wait(at)
    assert "Dataset unavailable" in errors(at) and message in errors(at)


@pytest.mark.slow
def test_search_impossible_constraint_names_the_minimum(db):
    at = small_search(search_limit="0.5")
    at = start_and_wait(at)
    assert "Impossible constraint" in errors(at) and "smallest subnet" in errors(at)


@pytest.mark.slow
def test_search_runs_in_background_then_explore_and_compare_show_it(db):
    at = small_search(search_limit="60")
    at.radio(key="search_metric").set_value("runtime_flops")
    at.number_input(key="search_block").set_value(16).run()
    button(at, "Start search").click().run()
    job = registry().active()[0]
    assert at.session_state["job_id"] == job.job_id  # only the id lives in the session
    second_tab = open_page("pages/search.py")  # a new session sees the job's progress
    assert job.label in " ".join(m.value for m in second_tab.markdown)
    at = wait(at)
    assert "Finished: 6 subnets" in at.success[0].value
    with Store(db) as store:
        run = store.run(job.run_id)
        rows = store.subnets(job.run_id)
    assert run["constraint_text"] == "runtime_flops=60%" and run["channel_block"] == 16
    # the guided sampler starts from its peers' answers, all within the padded budget
    assert rows["runtime_flops"].notna().all()
    assert rows["runtime_flops"].max() <= run["budget"]  # nothing spent above the budget
    assert rows["sampler"].iloc[0].startswith("peer:")  # the peers' answers come first
    at.switch_page("pages/explore.py").run()
    assert not at.exception and at.metric[0].value.startswith("Subnet")
    assert at.radio(key="explore_x").options[-1] == "Runtime FLOPs"
    at.switch_page("pages/compare.py").run()
    button(at, "Compute per-class accuracy").click().run(timeout=120)
    assert not at.exception, at.exception
    per_class = figures(at)[-1]
    assert trace_names(per_class)[0] == "Parent" and len(per_class["data"]) == 3
    assert len(values(per_class["data"][0]["x"])) == 10  # the synthetic set's classes


@pytest.mark.slow
def test_cancel_then_resume_from_runs(db):
    at = small_search(subnets=500, images=128)
    button(at, "Start search").click().run()
    job = registry().get(at.session_state["job_id"])
    deadline = time.time() + 120
    while job.done - job.done_at_start < 2 and time.time() < deadline:
        time.sleep(0.2)
    at.run()
    assert "subnets · about" in at.get("progress")[0].proto.text
    button(at, "Cancel").click().run()
    at = wait(at)
    assert "cancelled" in at.warning[0].value
    run_id = job.run_id
    at.switch_page("pages/runs.py").run()
    table = at.dataframe[0].value.set_index("run")
    assert table.at[run_id, "status"] == "cancelled"
    at.selectbox(key="runs_target").set_value(run_id).run()
    button(at, "Resume").click().run()
    assert at.title[0].value == "Search"
    resumed = registry().get(at.session_state["job_id"])
    assert resumed.run_id == run_id and resumed.label.startswith("resume")
    while resumed.done <= job.done and time.time() < deadline + 60:
        time.sleep(0.2)
    resumed.cancel.set()
    at = wait(at)
    assert resumed.done > job.done  # kept the earlier subnets and added new ones

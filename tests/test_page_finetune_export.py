"""AppTest of the Fine-tune & Export page: fine-tune and export jobs, reports and downloads.

Each test points the app at its own results file (the `db` fixture).
"""

import shutil

import pytest

from engine.config import FinetuneRecipe
from engine.errors import ConfigError
from engine.finetune import finetune
from engine.pareto import knee, pareto_front
from engine.store import Store
from tests.apptest import (
    button,
    downloads,
    errors,
    figures,
    open_page,
    subnets_of,
    values,
    wait,
    wait_for,
)
from tests.factories import make_run, real_run
from ui.jobs import registry

PAGE = "pages/finetune_export.py"


def tiny_run(path) -> tuple[str, int]:
    """A real run (random ResNet-20, 3 uniform subnets) on tiny data; returns it and its knee."""
    run_id = real_run(path)
    return run_id, int(knee(pareto_front(subnets_of(path, run_id)))["subnet_id"])


def test_finetune_page_bad_inputs_are_errors_not_tracebacks(db):
    run_id = make_run(db)
    with Store(db) as store:
        store.save_finetune(
            {
                "finetune_id": "f00dcafe0001",
                "run_id": run_id,
                "subnet_id": 2,
                "recipe": FinetuneRecipe.with_training(epochs=3).to_dict(),
                "status": "cancelled",
                "message": "Cancelled by the user.",
                "epochs_done": 1,
                "val_accuracy_before": 0.8,
                "test_accuracy_before": 0.79,
            }
        )
    at = open_page(PAGE)
    assert at.title[0].value == "Fine-tune & Export" and not at.error
    picker = at.selectbox(key=f"_fx_subnet_{run_id}")
    assert picker.value == int(knee(pareto_front(subnets_of(db, run_id)))["subnet_id"])
    assert "FLOPs = 2 × multiply-accumulates" in " ".join(c.value for c in at.caption)

    picker.set_value(2).run()  # the half-width subnet, with a cancelled fine-tune
    assert "1 / 3" in at.dataframe[0].value["epochs"].tolist()
    assert not button(at, "Resume").disabled
    at.selectbox(key=f"_fx_source_{run_id}_2").set_value("f00dcafe0001").run()
    assert "Fine-tune f00dcafe0001 is cancelled" in errors(at) and "Resume it first" in errors(at)
    assert button(at, "Export").disabled

    at.number_input(key="fx_lr").set_value(0.0).run()
    assert "learning rate must be positive" in errors(at)
    assert button(at, "Start fine-tune").disabled

    assert "Subnet 41 · failed to evaluate" in picker.options  # make_run's out-of-memory row
    at.selectbox(key=f"_fx_subnet_{run_id}").set_value(41).run()
    assert not at.exception
    assert "failed to evaluate" in errors(at) and "out of memory" in errors(at)
    assert not any(b.label == "Start fine-tune" for b in at.button)


def test_finetune_page_preselects_the_subnet_shown_on_explore(db):
    run_id = make_run(db)
    at = open_page("pages/explore.py")
    picker = next(s for s in at.selectbox if s.label == "Subnet")
    picked = next(o for o in picker.options if o.startswith("Subnet"))
    picker.set_value(int(picked.split()[1])).run()
    at.switch_page(PAGE).run()
    assert at.selectbox(key=f"_fx_subnet_{run_id}").value == int(picked.split()[1])


@pytest.mark.slow
def test_finetune_in_background_with_progress_cancel_and_resume(db):
    run_id, subnet_id = tiny_run(db)
    at = open_page(PAGE)
    assert at.selectbox(key=f"_fx_subnet_{run_id}").value == subnet_id  # the knee
    assert "No fine-tune running" in at.info[0].value
    at.number_input(key="fx_epochs").set_value(1)
    at.number_input(key="fx_batch").set_value(16)  # 30 batches: time to watch and cancel
    at.checkbox(key="fx_distill").check().run()
    assert at.number_input(key="fx_temperature").value == 4.0
    button(at, "Start fine-tune").click().run()
    assert not at.exception, at.exception
    job = registry().get(at.session_state["finetune_job_id"])
    assert job.kind == "finetune" and job.subnet_id == subnet_id
    wait_for(lambda: job.train is not None and job.train["batch"] >= 2)
    at.run()
    bar = at.get("progress")[0].proto.text
    assert bar.startswith("Epoch 1 of 1 · batch ") and "of 30" in bar
    assert {m.label for m in at.metric} >= {"Training loss", "Training accuracy"}
    assert button(at, "Start fine-tune").disabled and button(at, "Export").disabled
    assert "A fine-tune is running" in " ".join(c.value for c in at.caption)
    with Store(db) as store, pytest.raises(ConfigError, match="A fine-tune is already running"):
        registry().start_export(store, run_id, subnet_id)  # one job at a time, of any kind
    at.selectbox(key=f"_fx_source_{run_id}_{subnet_id}").set_value(job.finetune_id).run()
    assert f"Fine-tune {job.finetune_id} is still running" in errors(at)  # not exportable yet

    button(at, "Cancel").click().run()
    at = wait(at)
    assert "cancelled" in at.warning[0].value
    table = at.dataframe[0].value
    assert table["status"].tolist() == ["cancelled"] and table["fine-tune"][0] == job.finetune_id
    assert "distilled T=4 α=0.5" in table["recipe"][0]

    button(at, "Resume").click().run()
    resumed = registry().get(at.session_state["finetune_job_id"])
    assert resumed is not job and resumed.finetune_id == job.finetune_id  # the same recipe
    at = wait(at, timeout=300)
    assert "Fine-tuned in" in at.success[0].value, [e.value for e in at.error]
    row = at.dataframe[0].value.iloc[0]
    assert row["status"] == "done" and row["epochs"] == "1 / 1"
    assert "→" in row["validation before → after"] and "→" in row["test before → after"]
    # the fine-tune just made is the export source now
    assert at.selectbox(key=f"_fx_source_{run_id}_{subnet_id}").value == job.finetune_id
    assert not button(at, "Export").disabled


@pytest.mark.slow
def test_export_report_downloads_explore_marker_and_missing_folder(db):
    run_id, subnet_id = tiny_run(db)
    with Store(db) as store:
        tuned = finetune(
            store, run_id, subnet_id, FinetuneRecipe.with_training(epochs=1, batch_size=64)
        )
    at = open_page(PAGE)
    assert "None yet." in [c.value for c in at.caption]  # no exports
    at.selectbox(key=f"_fx_source_{run_id}_{subnet_id}").set_value(tuned["finetune_id"])
    at.checkbox(key="fx_int8").check().run()
    button(at, "Export").click().run()
    job = registry().get(at.session_state["export_job_id"])
    assert job.kind == "export"
    at = wait(at, timeout=300)
    assert not at.exception, at.exception
    assert any(s.value.startswith("Exported") for s in at.success), [e.value for e in at.error]
    report = job.result
    assert report["finetune_id"] == tuned["finetune_id"] and report["int8"] is not None

    text = " ".join(m.value for m in at.markdown)
    for row in (
        "| FLOPs per image |",
        "| Params |",
        "| ONNX file |",
        "| ONNX Runtime latency, batch 1 |",
        "| ONNX Runtime latency, batch 32 |",
        f"(channels padded to multiples of {report['channel_block']}) |",
        "| Accuracy in ONNX Runtime (search-validation) |",  # the INT8 table
        "Model card: resnet20",  # MODEL_CARD.md rendered
    ):
        assert row in text, row
    speedup = f"{report['latency']['speedup_batch_1']:.2f}×"
    assert speedup in text
    listed = next(d.value for d in at.dataframe if "export" in d.value.columns).iloc[0]
    assert listed["speedup, batch 32"] == f"{report['latency']['speedup_batch_32']:.2f}×"
    assert f"{report['latency']['threads']} intra-op thread" in " ".join(
        c.value for c in at.caption
    )
    assert any("Parity passed" in s.value and "1e-04" in s.value for s in at.success)
    buttons = downloads(at)
    assert buttons == {
        "All files (.zip)": True,
        "model.onnx": True,
        "model.int8.onnx": True,
        "model.safetensors": True,
        "subnet.json": True,
        "MODEL_CARD.md": True,
        "model_card.json": True,
    }
    listed = at.dataframe[-1].value
    assert listed["export"].tolist() == [report["export_id"]]
    assert listed["parity"][0] == "passed" and listed["INT8"][0]

    at.switch_page("pages/explore.py").run()
    chart = figures(at)[0]
    marker = next(t for t in chart["data"] if t["name"] == "Fine-tuned")
    assert values(marker["y"]) == [pytest.approx(tuned["val_accuracy_after"])]
    assert tuned["finetune_id"] in marker["text"][0] and "1 epoch" in marker["text"][0]
    joined = next(t for t in chart["data"] if t["name"] == "Fine-tuned from")
    assert values(joined["y"])[:2] == [
        pytest.approx(v)
        for v in (
            subnets_of(db, run_id).set_index("subnet_id").at[subnet_id, "accuracy"],
            tuned["val_accuracy_after"],
        )
    ]

    with Store(db) as store:
        shutil.rmtree(store.exports(run_id).iloc[0]["out_dir"])
    at.switch_page(PAGE).run()
    assert not at.exception
    assert "Export files missing" in errors(at) and not downloads(at)
    assert "(missing)" in at.dataframe[-1].value["folder"][0]

"""A stored run: its configuration read back (any shape, old layouts too), rebuilt exactly as
scored, fine-tunes found, and a results file written before RunConfig opened with every row."""

import shutil
from pathlib import Path

import pytest

from engine.config import (
    Constraint,
    DataSpec,
    ExportConfig,
    FinetuneRecipe,
    ModelSpec,
    RunConfig,
    SearchConfig,
    SpaceConfig,
    TrainConfig,
    defaults,
)
from engine.errors import ConfigError
from engine.evaluate import accuracy_and_loss
from engine.finetune import finetune_id
from engine.jobs import Job, JobRegistry
from engine.store import Store
from engine.workspace import (
    finished_finetune,
    latest_finetune,
    rebuild_parent,
    run_config,
    scored_subnet,
)

BEFORE = Path(__file__).parent / "data" / "before-issue-13.duckdb"
LEGACY_RECIPE = {  # a recipe as fine-tunes stored it before it contained a TrainConfig
    "epochs": 1,
    "optimizer": "sgd",
    "lr": 0.01,
    "weight_decay": 0.0005,
    "batch_size": 128,
    "augment": True,
    "distill": True,
    "temperature": 4.0,
    "alpha": 0.5,
    "seed": 0,
    "schedule": "cosine",
    "train_images": 384,
}


def test_run_config_round_trips():
    config = RunConfig(
        model=ModelSpec(weights="random"),
        data=DataSpec(name="cifar10", root="/x", train_size=100),
        space=SpaceConfig(round_to=16, importance="taylor"),
        search=SearchConfig(num_subnets=7, constraint=Constraint.parse("params=2e5")),
    )
    assert RunConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    "stored, words",
    [
        (None, "lacks its model"),
        ({"model": {}, "data": {}}, "lacks its model"),
        ({"model": [], "data": {}, "search": {}}, "not a JSON object"),
        ({"model": {"depth": 3}, "data": {}, "search": {}}, "unknown fields: depth"),
        ({"model": {}, "data": {}, "search": {"constraint": "latency=5"}}, "Cannot read"),
        ({"model": {}, "data": {}, "search": {"sampler": "bayes"}}, "Unknown sampler"),
        ({"model": {}, "data": {}, "search": {}, "space": {"round_to": 0}}, "round_to"),
    ],
)
def test_a_stored_config_of_the_wrong_shape_is_a_clear_config_error(stored, words):
    with pytest.raises(ConfigError, match=words):
        run_config({"config": stored})


def test_a_config_stored_before_space_settings_reads_back():
    legacy = {
        "model": ModelSpec().to_dict(),
        "data": DataSpec().to_dict(),
        "search": {"num_subnets": 5, "round_to": 16, "importance": "bn_scale"}
        | {"constraint": "runtime_flops=25%", "channel_block": 16, "sampler": "random"},
    }
    config = RunConfig.from_dict(legacy)
    assert config.space == SpaceConfig(round_to=16, importance="bn_scale")
    assert config.search.constraint == Constraint("runtime_flops", 25, True)
    assert (config.search.num_subnets, config.search.channel_block) == (5, 16)


def test_recipes_stored_flat_read_back_and_keep_their_fine_tune_id():
    recipe = FinetuneRecipe.from_dict(LEGACY_RECIPE)
    assert recipe.train == TrainConfig(epochs=1, lr=0.01, schedule="cosine")
    assert recipe.distill and recipe.alpha == 0.5
    flat = {k: v for k, v in LEGACY_RECIPE.items() if k not in ("schedule", "train_images")}
    assert recipe.key() == flat  # ids were hashed from exactly these fields
    assert FinetuneRecipe.from_dict(recipe.to_dict()) == recipe
    with pytest.raises(ConfigError):
        FinetuneRecipe.from_dict({"epochs": 1, "momentum": 0.8})


def test_defaults_read_every_field_including_factories():
    assert defaults(SearchConfig)["constraint"] == Constraint()
    assert defaults(ExportConfig) == {
        "int8": False,
        "runs": 20,
        "threads": None,
        "int8_calibration_images": 512,
    }
    assert FinetuneRecipe().train.lr == 0.02 and FinetuneRecipe().train.lr_schedule == "cosine"


@pytest.mark.slow
def test_a_results_file_from_before_opens_with_every_row_and_rebuilds(tmp_path):
    """tests/data/before-issue-13.duckdb was written by the code before RunConfig (commit
    f06b39a): one tiny uniform search (3 subnets), a one-epoch distilled fine-tune, an export."""
    path = tmp_path / "before.duckdb"
    shutil.copy(BEFORE, path)
    with Store(path) as store:
        runs = store.runs()
        assert len(runs) == 1
        run = store.run(runs.iloc[0]["run_id"])
        subnets = store.subnets(run["run_id"])
        tuned = store.finetunes(run["run_id"])
        assert (len(subnets), len(tuned), len(store.exports(run["run_id"]))) == (3, 1, 1)
        config = run_config(run)
        assert config.space == SpaceConfig() and config.search.channel_block == 16
        row = tuned.iloc[0]
        recipe = FinetuneRecipe.from_dict(row["recipe"])
        assert finetune_id(run["run_id"], int(row["subnet_id"]), recipe) == row["finetune_id"]
        parent = rebuild_parent(run)
        stored = subnets.iloc[1]
        model = scored_subnet(parent, run, stored["encoding"])
        val_x, val_y = parent.splits.tensors("val")
        assert accuracy_and_loss(model, val_x, val_y)[0] == pytest.approx(stored["accuracy"])


def test_finished_and_latest_finetune_refuse_what_is_not_there(store, tiny_parent):
    from tests.factories import GROUPS, identity_space, record_run

    run_id = record_run(
        store, space=identity_space(), parent_flops=1e6, parent_params=10, num_subnets=1
    )
    store.add_subnet(run_id, {"hash": "a", "encoding": [s for _, s in GROUPS], "accuracy": 0.5})
    with pytest.raises(ConfigError, match="no finished fine-tune"):
        latest_finetune(store, run_id, 1)
    with pytest.raises(ConfigError, match="does not belong"):
        finished_finetune(store, run_id, 1, "nope")
    row = {"finetune_id": "f1", "run_id": run_id, "subnet_id": 1, "status": "running"}
    store.save_finetune(row)
    with pytest.raises(ConfigError, match="has not finished"):
        finished_finetune(store, run_id, 1, "f1")


def test_jobs_fold_progress_events_and_run_one_at_a_time():
    job = Job(job_id="j", label="a search", total=10)
    assert job.apply({"stage": "training", "epochs": 3}) is False and job.phase == "training"
    assert job.apply({"stage": "searching", "run_id": "r", "done": 2}) is True
    assert (job.run_id, job.done, job.done_at_start, job.phase) == ("r", 2, 2, "searching")
    job.apply({"run_id": "r", "done": 3, "total": 10, "subnet_id": 3, "accuracy": 0.7})
    job.apply({"run_id": "r", "done": 4, "total": 10, "subnet_id": 4, "error": "OOM"})
    assert job.best_accuracy == 0.7 and job.last_error == "subnet 4: OOM" and job.done == 4
    registry = JobRegistry()
    registry._add("first", 1, "finetune")
    with pytest.raises(ConfigError, match="A fine-tune is already running"):
        registry._add("second", 1, "export")

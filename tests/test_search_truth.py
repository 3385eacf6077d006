"""Issue 14's rules on tiny models: the peers' answers are inside the search, evaluations stay
within the budget, search-validation comes from images the parent never saw, and an impossible
constraint is refused before any image is loaded."""

import pytest
import torch

from engine import data
from engine import parent as parent_module
from engine.config import Constraint, DataSpec, ModelSpec, RunConfig, SearchConfig, TrainConfig
from engine.errors import ConstraintError
from engine.models import save_checkpoint
from engine.parent import validation_source
from engine.peers import PEER_NAMES, peer_allocations
from engine.search import run_search, start_run
from engine.train import train_parent
from tests.factories import TINY_DATA, TINY_MODEL


def _cost_of(parent):
    return lambda e: parent.cost.metric("flops", [e])[0]


def test_peer_allocations_are_unique_within_budget_and_never_the_parent(tiny_parent):
    budget = 0.4 * tiny_parent.cost.parent_flops
    peers = peer_allocations(tiny_parent, _cost_of(tiny_parent), budget)
    assert {name for _, name in peers} <= set(PEER_NAMES) and len(peers) >= 2
    assert len({e for e, _ in peers}) == len(peers)
    for encoding, _ in peers:
        assert _cost_of(tiny_parent)(encoding) <= budget
        assert encoding != tiny_parent.space.full()
        tiny_parent.space.validate(encoding)  # on the space's grid


def test_a_guided_run_starts_with_the_peers_and_stays_within_its_budget(store):
    cfg = SearchConfig(num_subnets=12, constraint=Constraint.parse("flops=35%"))
    run_id = run_search(store, RunConfig(model=TINY_MODEL, data=TINY_DATA, search=cfg))
    run, rows = store.run(run_id), store.subnets(run_id)
    peers = [s for s in rows["sampler"] if s.startswith("peer:")]
    assert peers and list(rows["sampler"][: len(peers)]) == peers  # evaluated first
    above = (rows["flops"] > run["budget"]).mean()
    assert above <= 0.05 and not (rows["flops"] >= run["parent_flops"]).any()
    assert run["parent_test_accuracy"] is not None  # the reference, measured once


def _checkpoint(tmp_path, spec: DataSpec, name: str) -> ModelSpec:
    path = tmp_path / name
    train_parent(TINY_MODEL, spec, TrainConfig(epochs=1, batch_size=64), path)
    return ModelSpec(weights="file", weights_path=str(path))


def test_validation_comes_from_images_the_parent_never_saw(tmp_path):
    random = ModelSpec(weights="random")
    assert validation_source(random, TINY_DATA) == "train"  # it saw nothing
    trained = _checkpoint(tmp_path, TINY_DATA, "here.safetensors")
    assert validation_source(trained, TINY_DATA) == "train"  # it never trained on val
    other_split = DataSpec(**{**TINY_DATA.to_dict(), "val_size": 64})
    assert validation_source(trained, other_split) == "test"  # its fit may hold these images
    brought = tmp_path / "brought.safetensors"  # trained elsewhere: no Prunescope metadata
    model = parent_module.create_model(TINY_MODEL)
    save_checkpoint(model, brought, {})
    spec = ModelSpec(weights="file", weights_path=str(brought))
    assert validation_source(spec, TINY_DATA) == "test"

    splits = data.load_dataset(DataSpec(**{**TINY_DATA.to_dict(), "val_from": "test"}))
    assert splits.val_from == "test" and len(splits.fit_idx) == len(splits.train_y)
    val_x, _ = splits.tensors("val")
    test_x, _ = splits.tensors("test")
    assert not set(splits.val_idx.tolist()) & set(splits.test_idx.tolist())  # halves
    pool = splits.test_x[splits.val_idx]
    assert torch.equal(splits.normalize(pool), val_x) and len(test_x) == len(splits.test_y) // 2


def test_a_brought_parents_run_records_where_it_validated(store, tmp_path):
    spec = _checkpoint(
        tmp_path, DataSpec(**{**TINY_DATA.to_dict(), "val_size": 64}), "p.safetensors"
    )
    cfg = SearchConfig(num_subnets=3, sampler="uniform", constraint=Constraint.parse("flops=60%"))
    run_id, parent = start_run(store, RunConfig(model=spec, data=TINY_DATA, search=cfg))
    run = store.run(run_id)
    assert run["config"]["data"]["val_from"] == "test" and parent.splits.val_from == "test"


def test_an_impossible_constraint_is_refused_before_any_image_is_loaded(store, monkeypatch):
    def no_data(spec):
        raise AssertionError("the dataset was loaded")

    monkeypatch.setattr(parent_module, "load_dataset", no_data)
    cfg = SearchConfig(constraint=Constraint.parse("flops=0.5%"))
    with pytest.raises(ConstraintError, match="smallest subnet"):
        start_run(store, RunConfig(model=TINY_MODEL, data=TINY_DATA, search=cfg))
    assert store.runs().empty

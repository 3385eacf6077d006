"""Search space and cost model: exact FLOPs/params, coupled channels, clear errors."""

import random

import pytest
import torch
from torch import nn

from engine.config import ModelSpec
from engine.cost import CostModel, measure
from engine.errors import ConfigError, SpaceError
from engine.models import create_model
from engine.runtime import runtime_flops
from engine.space import build_space, encoding_hash, materialize
from tests.models_tiny import TinyNet

EXAMPLE = torch.randn(1, 3, 32, 32)


def _random_encodings(space, n, seed=0):
    rng = random.Random(seed)
    encodings = {space.minimal(), space.full()}
    while len(encodings) < n:
        encodings.add(tuple(rng.choice(space.choices(i)) for i in range(len(space.groups))))
    return sorted(encodings)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet20", "resnet18", "mobilenet_v2"])
def test_cost_model_matches_torch_counter_on_50_encodings(name):
    torch.manual_seed(0)
    model = create_model(ModelSpec(name=name, weights="random"))
    space = build_space(model, EXAMPLE)
    cost = CostModel(model, space, EXAMPLE)
    for encoding in _random_encodings(space, 50):
        flops, params = cost.cost(encoding)
        real_flops, real_params = measure(materialize(model, space, encoding, EXAMPLE), EXAMPLE)
        assert flops == pytest.approx(real_flops, rel=0.005), encoding
        assert params == pytest.approx(real_params, rel=0.005), encoding


def test_groups_couple_residual_concat_and_depthwise():
    model = TinyNet()
    space = build_space(model, EXAMPLE, round_to=4)
    by_root = {g.name: g for g in space.groups}
    stem = next(g for g in space.groups if "stem.0" in g.members)
    assert "block.0" in stem.members  # residual add: same channels
    right = next(g for g in space.groups if "right.0" in g.members)
    assert "head.0" in right.members or "left.0" in right.members  # depthwise follows its input
    assert all("fc" not in g.name for g in space.groups)  # classifier outputs never pruned
    sub = materialize(model, space, space.minimal(), EXAMPLE)
    assert sub.stem[0].in_channels == 3 and sub(EXAMPLE).shape == (1, 4)
    assert sub.fc.out_features == 4
    assert len(by_root) == len(space.groups)


def test_tiny_net_costs_exact_for_every_encoding():
    model = TinyNet()
    space = build_space(model, EXAMPLE, round_to=4)
    cost = CostModel(model, space, EXAMPLE)
    for encoding in _random_encodings(space, 25, seed=1):
        assert cost.cost(encoding) == pytest.approx(
            measure(materialize(model, space, encoding, EXAMPLE), EXAMPLE)
        )


@pytest.mark.parametrize("name", ["tiny", "mobilenet_v2"])
def test_padded_flops_match_the_built_subnets(name):
    torch.manual_seed(0)
    model = TinyNet() if name == "tiny" else create_model(ModelSpec(name=name, weights="random"))
    space = build_space(model, EXAMPLE, round_to=4)
    cost = CostModel(model, space, EXAMPLE)
    encodings = _random_encodings(space, 6, seed=2)
    for block in (1, 8, 16):
        padded = cost.padded_flops(encodings, block)
        for encoding, flops in zip(encodings, padded, strict=True):
            built = materialize(model, space, encoding, EXAMPLE)
            assert flops == pytest.approx(runtime_flops(built, EXAMPLE, block)), (block, encoding)


def test_materialize_keeps_the_most_important_channels():
    model = TinyNet()
    space = build_space(model, EXAMPLE, round_to=4)
    index = next(i for i, g in enumerate(space.groups) if g.name == "head.0")
    encoding = list(space.full())
    encoding[index] = 8
    sub = materialize(model, space, encoding, EXAMPLE)
    kept = sorted(space.groups[index].order[:8])
    assert torch.equal(sub.head[0].weight, model.head[0].weight[kept])
    assert torch.equal(sub.fc.weight, model.fc.weight[:, kept])


def test_widths_respect_round_to_and_full_width():
    space = build_space(create_model(ModelSpec(name="resnet20", weights="random")), EXAMPLE)
    assert {tuple(space.choices(i)) for i in range(len(space.groups))} == {
        (8, 16),
        (8, 16, 24, 32),
        (8, 16, 24, 32, 40, 48, 56, 64),
    }
    with pytest.raises(ConfigError, match="not allowed"):
        space.validate([13] * len(space.groups))


@pytest.mark.parametrize("importance", ["bn_scale", "taylor", "activation", "gradient"])
def test_other_importances_give_permutations(importance):
    torch.manual_seed(0)
    model = TinyNet()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.1, 1.0)
    batches = [(torch.randn(8, 3, 32, 32), torch.randint(0, 4, (8,)))]
    space = build_space(model, EXAMPLE, importance=importance, batches=batches)
    l1 = build_space(model, EXAMPLE)
    for g in space.groups:
        assert sorted(g.order) == list(range(g.size))
    assert [g.order for g in space.groups] != [g.order for g in l1.groups]


def test_encoding_hash_is_stable():
    assert encoding_hash([16, 8, 32]) == encoding_hash((16, 8, 32))
    assert encoding_hash([16, 8, 32]) == "235763866555c1ca"  # stored hashes must never change
    assert len(encoding_hash([1])) == 16 and encoding_hash([1]) != encoding_hash([2])


def test_untraceable_model_names_the_module():
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2))
    with pytest.raises(SpaceError, match=r"module '0'"):
        build_space(model, EXAMPLE)

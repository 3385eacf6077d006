"""The parent of a search: model, data splits, search space and cost model, built once."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from engine.config import DataSpec, ModelSpec, SpaceConfig
from engine.cost import CostModel
from engine.data import Splits, load_dataset
from engine.errors import ConfigError
from engine.evaluate import accuracy_and_loss
from engine.models import create_model
from engine.space import SearchSpace, build_space

TAYLOR_IMAGES = 512  # calibration images whose gradients rank channels for Taylor importance


@dataclass
class Parent:
    model_spec: ModelSpec
    data_spec: DataSpec
    model: nn.Module  # the trained parent, eval mode; never modified (subnets are copies)
    splits: Splits
    space: SearchSpace
    cost: CostModel
    example_input: torch.Tensor  # one calibration image, for tracing
    accuracy: float  # search-validation top-1 of the parent as trained
    loss: float


def load_parent(
    model_spec: ModelSpec,
    data_spec: DataSpec,
    space_cfg: SpaceConfig | None = None,
    *,
    stored_space: dict | None = None,
    batch_size: int = 256,
) -> Parent:
    """Build everything a search needs: the space from `space_cfg`, or exactly `stored_space`
    (a `SearchSpace.to_dict()`) when rebuilding a stored run."""
    space_cfg = space_cfg or SpaceConfig()
    splits = load_dataset(data_spec)
    model_spec = _fit_dataset(model_spec, splits)
    model = create_model(model_spec)
    calib_x, calib_y = splits.tensors("calib")
    example = calib_x[:1]
    if stored_space is not None:
        search_space = SearchSpace.from_dict(stored_space)
    else:
        grads = None
        if space_cfg.importance == "taylor":
            n = min(TAYLOR_IMAGES, len(calib_x))
            grads = [(calib_x[i : i + 64], calib_y[i : i + 64]) for i in range(0, n, 64)]
        search_space = build_space(
            model,
            example,
            round_to=space_cfg.round_to,
            importance=space_cfg.importance,
            grad_batches=grads,
        )
    cost = CostModel(model, search_space, example)
    val_x, val_y = splits.tensors("val")
    accuracy, loss = accuracy_and_loss(model, val_x, val_y, batch_size)
    return Parent(model_spec, data_spec, model, splits, search_space, cost, example, accuracy, loss)


def _fit_dataset(spec: ModelSpec, splits: Splits) -> ModelSpec:
    """Image size follows the data; a fresh classifier takes its class count, weights must match."""
    spec = dataclasses.replace(spec, image_size=splits.image_size)
    if spec.num_classes == splits.num_classes:
        return spec
    if spec.weights in ("random", "pretrained"):
        return dataclasses.replace(spec, num_classes=splits.num_classes)
    raise ConfigError(
        f"The weights are for {spec.num_classes} classes but {splits.name} has "
        f"{splits.num_classes}: choose a matching dataset or other weights."
    )

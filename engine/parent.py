"""The parent of a search: model, data splits, search space and cost model, built once."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from engine.config import DataSpec, ModelSpec, SpaceConfig
from engine.cost import CostModel
from engine.data import Splits, load_dataset
from engine.errors import ConfigError, PrunescopeError
from engine.evaluate import accuracy_and_loss
from engine.models import builtin_weights_path, create_model, read_checkpoint_metadata
from engine.space import DATA_AWARE, SearchSpace, build_space

IMPORTANCE_IMAGES = 512  # calibration images the data-aware importances rank channels on
# DataSpec fields that decide which training images are held out of a parent trained here
SPLIT_FIELDS = ("name", "root", "seed", "val_size", "train_size", "image_size")


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
    test_accuracy: float | None = None  # on the reporting test split (None: not measured)


def load_parent(
    model_spec: ModelSpec,
    data_spec: DataSpec,
    space_cfg: SpaceConfig | None = None,
    *,
    stored_space: dict | None = None,
    batch_size: int = 256,
    measure_test: bool = False,
) -> Parent:
    """Build everything a search needs: the space from `space_cfg`, or exactly `stored_space`
    (a `SearchSpace.to_dict()`) when rebuilding a stored run. `measure_test`: also score the
    parent on the reporting test split (a new run records it)."""
    space_cfg = space_cfg or SpaceConfig()
    splits = load_dataset(data_spec)
    model_spec = fit_to_data(model_spec, splits.num_classes, splits.image_size, splits.name)
    model = create_model(model_spec)
    example = splits.tensors("calib")[0][:1]
    if stored_space is not None:
        search_space = SearchSpace.from_dict(stored_space)
    else:
        batches = None
        if space_cfg.importance in DATA_AWARE:
            batches = importance_batches(splits)
        search_space = build_space(
            model,
            example,
            round_to=space_cfg.round_to,
            importance=space_cfg.importance,
            batches=batches,
        )
    cost = CostModel(model, search_space, example)
    val_x, val_y = splits.tensors("val")
    accuracy, loss = accuracy_and_loss(model, val_x, val_y, batch_size)
    parent = Parent(
        model_spec, data_spec, model, splits, search_space, cost, example, accuracy, loss
    )
    if measure_test:
        parent.test_accuracy = accuracy_and_loss(model, *splits.tensors("test"), batch_size)[0]
    return parent


def importance_batches(splits: Splits) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The calibration images the data-aware importances rank channels on, in batches of 64."""
    x, y = splits.sample("calib", IMPORTANCE_IMAGES)
    return [(x[i : i + 64], y[i : i + 64]) for i in range(0, len(y), 64)]


def validation_source(model_spec: ModelSpec, data_spec: DataSpec) -> str:
    """Where search-validation images come from, so that the parent never saw them.

    Held-out training images ("train") only when that is known to be safe: random weights, or
    a checkpoint Prunescope trained on this very split (its metadata says so). Any other parent
    (pretrained, uploaded, trained elsewhere) may have trained on every training image: then an
    ImageFolder's own val/ folder ("folder") or a seeded half of the test split ("test").
    """
    if data_spec.val_from != "auto":
        return data_spec.val_from
    if model_spec.weights == "random" or _trained_here_on(model_spec, data_spec):
        return "train"
    root = Path(data_spec.root or "").expanduser()
    has_val = all((root / d).is_dir() for d in ("train", "val", "test"))
    return "folder" if data_spec.name == "imagefolder" and has_val else "test"


def _trained_here_on(model_spec: ModelSpec, data_spec: DataSpec) -> bool:
    path = builtin_weights_path(model_spec) if model_spec.weights == "builtin" else None
    path = Path(model_spec.weights_path) if model_spec.weights == "file" else path
    if path is None or not path.is_file():
        return False
    try:
        meta = read_checkpoint_metadata(path)
    except PrunescopeError:
        return False
    trained_on = meta.get("data") if isinstance(meta.get("train"), dict) else None
    if not isinstance(trained_on, dict) or trained_on.get("val_from", "train") != "train":
        return False
    ours = {**DataSpec().to_dict(), **data_spec.to_dict()}
    theirs = {**DataSpec().to_dict(), **trained_on}
    return all(_same(f, ours.get(f), theirs.get(f)) for f in SPLIT_FIELDS)


def _same(field: str, a, b) -> bool:
    if field == "root" and a and b:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    return a == b


def fit_to_data(spec: ModelSpec, num_classes: int, image_size: int, dataset: str) -> ModelSpec:
    """Image size follows the data; a fresh classifier takes its class count, weights must match."""
    spec = dataclasses.replace(spec, image_size=image_size)
    if spec.num_classes == num_classes:
        return spec
    if spec.weights in ("random", "pretrained"):
        return dataclasses.replace(spec, num_classes=num_classes)
    raise ConfigError(
        f"The weights are for {spec.num_classes} classes but {dataset} has "
        f"{num_classes}: choose a matching dataset or other weights."
    )

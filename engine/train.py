"""Train a parent here (the workflow behind `python -m engine train` and "Train here").

The checkpoint is a .safetensors file whose metadata holds the model and data specs, the recipe
and the accuracies, rewritten every epoch; an unfinished one of the same recipe resumes.
`train_or_reuse_parent` keeps one finished parent per (model, data, recipe) in the workspace's
parent cache, so the dashboard and `bench/` never train the same parent twice.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import warnings
from pathlib import Path

import torch

from engine.config import DataSpec, ModelSpec, TrainConfig
from engine.data import load_dataset
from engine.evaluate import accuracy_and_loss
from engine.loop import (
    Progress,
    load_training_state,
    make_optimizer,
    save_training_state,
    steps_per_epoch,
    train_epoch,
)
from engine.models import (
    apply_state_dict,
    create_model,
    read_checkpoint_metadata,
    read_state_dict,
    save_checkpoint,
)


def train_parent(
    model_spec: ModelSpec,
    data_spec: DataSpec,
    cfg: TrainConfig,
    checkpoint: str | Path,
    *,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    device: str = "cpu",
) -> dict:
    """Train `model_spec` from scratch on `data_spec` (on `device`: "cpu", "cuda"…); the
    checkpoint is rewritten every epoch.

    A checkpoint left unfinished by the same recipe is resumed from its last epoch (with the
    optimizer and schedule state saved beside it; without that state the schedule is replayed
    and momentum restarts).

    The checkpoint is a .safetensors file whose metadata holds the model and data specs, the
    recipe and the accuracies, so `ModelSpec(weights="file", weights_path=checkpoint)` rebuilds it.
    """
    torch.manual_seed(cfg.seed)
    splits = load_dataset(data_spec)
    spec = ModelSpec(
        **{
            **model_spec.to_dict(),
            "weights": "random",
            "weights_path": None,
            "num_classes": splits.num_classes,
            "image_size": splits.image_size,
        }
    )
    model = create_model(spec).to(device)
    per_epoch = steps_per_epoch(splits, cfg)
    opt, sched = make_optimizer(model, cfg, cfg.epochs * per_epoch)
    val_x, val_y = splits.tensors("val")
    test_x, test_y = splits.tensors("test")
    first, elapsed = _resume_parent_training(
        checkpoint, spec, data_spec, cfg, model, opt, sched, per_epoch
    )
    start, history, test_accuracy = time.perf_counter() - elapsed, [], None
    for epoch in range(first, cfg.epochs):
        stats = train_epoch(model, splits, cfg, opt, sched, epoch, progress=progress, cancel=cancel)
        stats["val_accuracy"], stats["val_loss"] = accuracy_and_loss(model, val_x, val_y)
        stats["epoch"], stats["seconds"] = epoch + 1, time.perf_counter() - start
        history.append(stats)
        test_accuracy = (
            accuracy_and_loss(model, test_x, test_y)[0] if epoch + 1 == cfg.epochs else None
        )
        meta = {
            "model": {**spec.to_dict(), "weights": "file"},
            "data": data_spec.to_dict(),
            "train": cfg.to_dict(),
            "epochs_done": epoch + 1,
            "val_accuracy": stats["val_accuracy"],
            "test_accuracy": test_accuracy,
            "seconds": stats["seconds"],
            "device": str(device),
        }
        save_training_state(_state_path(checkpoint), model, opt, sched, {})
        save_checkpoint(model, checkpoint, meta)
        if progress:
            progress({"stage": "epoch", **stats, "epochs": cfg.epochs})
    if first == cfg.epochs:  # already finished: report what the checkpoint says
        test_accuracy = read_checkpoint_metadata(checkpoint).get("test_accuracy")
    _state_path(checkpoint).unlink(missing_ok=True)
    return {
        "model": model.eval(),
        "history": history,
        "test_accuracy": test_accuracy,
        "seconds": time.perf_counter() - start,
        "checkpoint": str(checkpoint),
    }


def _state_path(checkpoint: str | Path) -> Path:
    return Path(checkpoint).with_suffix(".state.pt")


def _resume_parent_training(checkpoint, spec, data_spec, cfg, model, opt, sched, per_epoch):
    """(first epoch to train, seconds already spent) for an unfinished same-recipe checkpoint."""
    path = Path(checkpoint)
    if not path.is_file():
        return 0, 0.0
    meta = read_checkpoint_metadata(path)
    same = (
        meta.get("train") == cfg.to_dict()
        and meta.get("data") == data_spec.to_dict()
        and (meta.get("model") or {}).get("name") == spec.name
    )
    if not same:
        return 0, 0.0
    done = int(meta.get("epochs_done") or 0)
    apply_state_dict(model, read_state_dict(path))
    state = load_training_state(_state_path(path))
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
    else:
        with warnings.catch_warnings():  # stepping a schedule before the optimizer: intended
            warnings.simplefilter("ignore")
            for _ in range(done * per_epoch):
                sched.step()
    return done, float(meta.get("seconds") or 0.0)


def train_or_reuse_parent(
    model_spec: ModelSpec,
    data_spec: DataSpec,
    cfg: TrainConfig,
    *,
    path: str | Path | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> ModelSpec:
    """The spec of a parent trained with `cfg`: the cached checkpoint when it has finished,
    else trained (or resumed) now. `path`: where to keep it (default: the workspace's cache)."""
    from engine.workspace import finished_parent_spec, parent_checkpoint  # not needed to train

    path = Path(path) if path else parent_checkpoint(model_spec, data_spec, cfg)
    spec = finished_parent_spec(path, cfg.epochs)
    if spec is None:
        random = dataclasses.replace(model_spec, weights="random", weights_path=None)
        train_parent(random, data_spec, cfg, path, progress=progress, cancel=cancel)
        spec = finished_parent_spec(path, cfg.epochs)
    return spec

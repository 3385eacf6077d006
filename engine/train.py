"""Training loops shared by the parent trained here and subnet fine-tuning (engine.finetune).

Progress goes to a callback as plain dicts and a `threading.Event` cancels between batches, so
the same loop serves the CLI's progress bar and the dashboard's background worker.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from engine.config import DataSpec, ModelSpec
from engine.data import Splits, load_dataset
from engine.errors import ConfigError, WeightsError
from engine.evaluate import accuracy_and_loss
from engine.models import (
    apply_state_dict,
    create_model,
    read_checkpoint_metadata,
    read_state_dict,
    save_checkpoint,
)

Progress = Callable[[dict], None]


class Cancelled(Exception):
    """Raised inside a training loop when its cancel event is set."""


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30  # passes over the training split
    lr: float = 0.1  # peak learning rate (one-cycle schedule for SGD, cosine for AdamW)
    optimizer: str = "sgd"  # sgd (momentum 0.9, nesterov) | adamw
    weight_decay: float = 5e-4  # L2 on weights; also what makes magnitude ranking meaningful
    batch_size: int = 128  # images per step
    label_smoothing: float = 0.0  # softens targets; 0 keeps plain cross-entropy
    augment: bool = True  # random crop with padding + horizontal flip where labels allow it
    seed: int = 0  # shuffling and initialization

    def to_dict(self) -> dict:
        return asdict(self)


def make_optimizer(model: nn.Module, cfg: TrainConfig, steps: int, schedule: str | None = None):
    """SGD (momentum 0.9, nesterov) or AdamW over `steps` steps.

    `schedule`: "onecycle" or "cosine"; None picks one-cycle for SGD and cosine for AdamW.
    """
    if cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "sgd":
        opt = torch.optim.SGD(
            model.parameters(),
            lr=cfg.lr,
            momentum=0.9,
            nesterov=True,
            weight_decay=cfg.weight_decay,
        )
    else:
        raise ConfigError(f"optimizer must be 'sgd' or 'adamw', not {cfg.optimizer!r}.")
    schedule = schedule or ("cosine" if cfg.optimizer == "adamw" else "onecycle")
    if schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    else:
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=cfg.lr, total_steps=steps, pct_start=0.15
        )
    return opt, sched


def train_epoch(
    model: nn.Module,
    splits: Splits,
    cfg: TrainConfig,
    opt,
    sched,
    epoch: int,
    *,
    loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> dict:
    """One epoch over the fit split. `loss_fn(logits, y, x)` overrides cross-entropy."""
    model.train()
    batches = math.ceil(len(splits.fit_idx) / cfg.batch_size)
    seen = correct = 0
    total_loss = 0.0
    for i, (x, y) in enumerate(
        splits.batches(
            "fit", cfg.batch_size, augment=cfg.augment, shuffle=True, seed=cfg.seed * 1000 + epoch
        )
    ):
        if cancel is not None and cancel.is_set():
            raise Cancelled("cancelled by the user")
        logits = model(x)
        loss = (
            loss_fn(logits, y, x)
            if loss_fn
            else nn.functional.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        seen += len(y)
        correct += (logits.argmax(1) == y).sum().item()
        total_loss += loss.item() * len(y)
        if progress:
            progress(
                {
                    "stage": "train",
                    "epoch": epoch + 1,
                    "epochs": cfg.epochs,
                    "batch": i + 1,
                    "batches": batches,
                    "loss": total_loss / seen,
                    "accuracy": correct / seen,
                }
            )
    return {"train_loss": total_loss / max(seen, 1), "train_accuracy": correct / max(seen, 1)}


def train_parent(
    model_spec: ModelSpec,
    data_spec: DataSpec,
    cfg: TrainConfig,
    checkpoint: str | Path,
    *,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> dict:
    """Train `model_spec` from scratch on `data_spec`; the checkpoint is rewritten every epoch.

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
    model = create_model(spec)
    steps_per_epoch = math.ceil(len(splits.fit_idx) / cfg.batch_size)
    opt, sched = make_optimizer(model, cfg, cfg.epochs * steps_per_epoch)
    val_x, val_y = splits.tensors("val")
    test_x, test_y = splits.tensors("test")
    first, elapsed = _resume_parent_training(
        checkpoint, spec, data_spec, cfg, model, opt, sched, steps_per_epoch
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


def _resume_parent_training(checkpoint, spec, data_spec, cfg, model, opt, sched, steps_per_epoch):
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
            for _ in range(done * steps_per_epoch):
                sched.step()
    return done, float(meta.get("seconds") or 0.0)


def save_training_state(path: Path, model: nn.Module, opt, sched, extra: dict) -> None:
    """Weights, optimizer and schedule state (+ JSON-able `extra`), written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    state = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "extra": json.dumps(extra),
    }
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_training_state(path: Path) -> dict | None:
    """What `save_training_state` wrote (loaded with weights_only=True), or None."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(
            f"The training state {path} cannot be read ({exc}); delete it to start over."
        ) from exc
    return {**state, "extra": json.loads(state["extra"])}

"""The training loop shared by parent training (engine.train) and fine-tuning (engine.finetune):
optimizer and schedule, one epoch, and the resumable training state.

Progress goes to a callback as plain dicts and a `threading.Event` cancels between batches, so
the same loop serves the CLI's progress bar and the dashboard's background worker.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from engine.config import FinetuneRecipe, TrainConfig
from engine.data import Splits
from engine.errors import Cancelled, WeightsError

if TYPE_CHECKING:
    from engine.parent import Parent

Progress = Callable[[dict], None]
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def make_optimizer(model: nn.Module, cfg: TrainConfig, steps: int):
    """SGD (momentum 0.9, nesterov) or AdamW, on `cfg.lr_schedule` over `steps` steps."""
    if cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.SGD(
            model.parameters(),
            lr=cfg.lr,
            momentum=0.9,
            nesterov=True,
            weight_decay=cfg.weight_decay,
        )
    if cfg.lr_schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    else:
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=cfg.lr, total_steps=steps, pct_start=0.15
        )
    return opt, sched


def distillation_loss(teacher: nn.Module, recipe: FinetuneRecipe):
    """Hinton's loss: alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, y)."""
    t, alpha = recipe.temperature, recipe.alpha

    def loss(logits: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            soft = nn.functional.log_softmax(teacher(x) / t, dim=1)
        kl = nn.functional.kl_div(
            nn.functional.log_softmax(logits / t, dim=1),
            soft,
            reduction="batchmean",
            log_target=True,
        )
        return alpha * t * t * kl + (1 - alpha) * nn.functional.cross_entropy(logits, y)

    return loss


def training_setup(
    model: nn.Module, parent: Parent, recipe: FinetuneRecipe, steps: int | None = None
):
    """(optimizer, schedule, loss) for fine-tuning `model` with `recipe` (its schedule spread
    over `steps` batches, default all of its epochs); the loss is cross-entropy (None) or
    distillation from the parent."""
    cfg = recipe.train
    steps = steps or cfg.epochs * steps_per_epoch(parent.splits, cfg)
    opt, sched = make_optimizer(model, cfg, steps)
    loss_fn = distillation_loss(parent.model.eval(), recipe) if recipe.distill else None
    return opt, sched, loss_fn


def steps_per_epoch(splits: Splits, cfg: TrainConfig) -> int:
    return math.ceil(len(splits.fit_idx) / cfg.batch_size)


def train_epoch(
    model: nn.Module,
    splits: Splits,
    cfg: TrainConfig,
    opt,
    sched,
    epoch: int,
    *,
    loss_fn: LossFn | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    max_steps: int | None = None,
) -> dict:
    """One epoch over the fit split (its first `max_steps` batches when given), on the device
    the model is on. `loss_fn(logits, y, x)` overrides cross-entropy."""
    model.train()
    device = next(model.parameters()).device
    batches = min(steps_per_epoch(splits, cfg), max_steps or math.inf)
    seen = correct = 0
    total_loss = 0.0
    for i, (x, y) in enumerate(
        splits.batches(
            "fit", cfg.batch_size, augment=cfg.augment, shuffle=True, seed=cfg.seed * 1000 + epoch
        )
    ):
        if i >= batches:
            break
        if cancel is not None and cancel.is_set():
            raise Cancelled("cancelled by the user")
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
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

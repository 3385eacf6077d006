"""Fine-tune a stored subnet, optionally distilling from its parent; resumable per epoch.

A fine-tune is identified by (run, subnet, recipe): starting the same one again resumes it from
its last finished epoch (the state is written atomically after each epoch), or returns the
finished result at once. Accuracies are measured on the search-validation and test splits before
and after, and the row lands in the `finetunes` table as each epoch ends.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from engine.config import home_dir
from engine.errors import ConfigError
from engine.evaluate import SubnetEvaluator, accuracy_and_loss
from engine.models import apply_state_dict, read_state_dict, save_checkpoint
from engine.parent import Parent
from engine.search import resume_parent
from engine.space import materialize
from engine.store import Store
from engine.train import (
    Cancelled,
    Progress,
    TrainConfig,
    load_training_state,
    make_optimizer,
    save_training_state,
    train_epoch,
)

STATE_FILE = "state.pt"  # optimizer, schedule and weights after the last finished epoch
WEIGHTS_FILE = "model.safetensors"  # the finished fine-tuned subnet


@dataclass(frozen=True)
class FinetuneRecipe:
    epochs: int = 5  # passes over the training split
    optimizer: str = "sgd"  # sgd (momentum 0.9, nesterov) | adamw; cosine schedule for both
    lr: float = 0.02  # starting learning rate (a pruned net starts close to a good solution)
    weight_decay: float = 5e-4
    batch_size: int = 128
    augment: bool = True  # random crop + flip, as for the parent
    distill: bool = False  # add a KL term towards the parent's softened outputs
    temperature: float = 4.0  # softens both distributions in the KL term
    alpha: float = 0.5  # loss = alpha * T^2 * KL + (1 - alpha) * cross-entropy, when distilling
    seed: int = 0

    def __post_init__(self):
        if self.epochs < 1:
            raise ConfigError(f"Fine-tuning needs at least one epoch, got {self.epochs}.")
        if not self.lr > 0:
            raise ConfigError(f"The learning rate must be positive, got {self.lr}.")
        if not 0 <= self.alpha <= 1:
            raise ConfigError(
                f"The distillation weight alpha is between 0 and 1, got {self.alpha}."
            )
        if not self.temperature > 0:
            raise ConfigError(f"The temperature must be positive, got {self.temperature}.")
        if self.optimizer not in ("sgd", "adamw"):
            raise ConfigError(f"optimizer must be 'sgd' or 'adamw', not {self.optimizer!r}.")

    def to_dict(self) -> dict:
        return asdict(self)

    def train_config(self) -> TrainConfig:
        return TrainConfig(
            epochs=self.epochs,
            lr=self.lr,
            optimizer=self.optimizer,
            weight_decay=self.weight_decay,
            batch_size=self.batch_size,
            augment=self.augment,
            seed=self.seed,
        )


def finetune_id(run_id: str, subnet_id: int, recipe: FinetuneRecipe) -> str:
    key = json.dumps([run_id, int(subnet_id), recipe.to_dict()], sort_keys=True)
    return hashlib.sha1(key.encode()).hexdigest()[:12]


def finetune_dir(fid: str) -> Path:
    return home_dir() / "finetunes" / fid


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


def usable_subnet(store: Store, run_id: str, subnet_id: int) -> dict:
    """The stored subnet row; ConfigError when it failed to evaluate (nothing to build on)."""
    subnet = store.subnet(run_id, subnet_id)
    if subnet.get("error") or subnet.get("accuracy") is None:
        raise ConfigError(f"Subnet {subnet_id} of run {run_id} failed to evaluate; pick another.")
    return subnet


def training_setup(model: nn.Module, parent: Parent, recipe: FinetuneRecipe):
    """(TrainConfig, optimizer, cosine schedule, loss) for fine-tuning `model` with `recipe`;
    the loss is cross-entropy (None) or distillation from the parent."""
    cfg = recipe.train_config()
    steps = cfg.epochs * math.ceil(len(parent.splits.fit_idx) / cfg.batch_size)
    opt, sched = make_optimizer(model, cfg, steps, schedule="cosine")
    loss_fn = distillation_loss(parent.model.eval(), recipe) if recipe.distill else None
    return cfg, opt, sched, loss_fn


def cut_with_weights(
    architecture: nn.Module, space, encoding, example: torch.Tensor, weights: str | Path
) -> nn.Module:
    """`architecture` cut to `encoding` (only the shapes matter), then the saved weights loaded."""
    model = materialize(architecture, space, encoding, example)
    apply_state_dict(model, read_state_dict(weights))
    return model.eval()


def load_finetuned(parent: Parent, encoding, weights: str | Path) -> nn.Module:
    """The fine-tuned subnet: the parent's architecture cut to `encoding`, with saved weights."""
    return cut_with_weights(parent.model, parent.space, encoding, parent.example_input, weights)


def finetune(
    store: Store,
    run_id: str,
    subnet_id: int,
    recipe: FinetuneRecipe | None = None,
    *,
    parent: Parent | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> dict:
    """Fine-tune one stored subnet; returns its `finetunes` row. Resumes where it stopped."""
    recipe = recipe or FinetuneRecipe()
    subnet = usable_subnet(store, run_id, subnet_id)
    fid = finetune_id(run_id, subnet_id, recipe)
    folder = finetune_dir(fid)
    existing = store.finetune(fid)
    if existing and existing["status"] == "done" and Path(existing["checkpoint"] or "").is_file():
        return existing
    parent = parent or resume_parent(store.run(run_id))
    splits = parent.splits
    model = SubnetEvaluator(parent).build(subnet["encoding"])  # recalibrated, as scored
    val_x, val_y = splits.tensors("val")
    test_x, test_y = splits.tensors("test")
    cfg, opt, sched, loss_fn = training_setup(model, parent, recipe)
    row = {
        "finetune_id": fid,
        "run_id": run_id,
        "subnet_id": int(subnet_id),
        "recipe": {**recipe.to_dict(), "schedule": "cosine", "train_images": len(splits.fit_idx)},
        "status": "running",
        "message": None,
        "epochs_done": 0,
        "history": [],
        "val_accuracy_before": accuracy_and_loss(model, val_x, val_y)[0],
        "test_accuracy_before": accuracy_and_loss(model, test_x, test_y)[0],
        "val_accuracy_after": None,
        "test_accuracy_after": None,
        "seconds": 0.0,
        "checkpoint": None,
    }
    state = load_training_state(folder / STATE_FILE)
    if state is not None:  # resume after the last finished epoch
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        row.update(state["extra"], status="running", message=None)
    store.save_finetune(row)
    start = time.perf_counter() - row["seconds"]
    try:
        for epoch in range(row["epochs_done"], recipe.epochs):
            stats = train_epoch(
                model,
                splits,
                cfg,
                opt,
                sched,
                epoch,
                loss_fn=loss_fn,
                progress=progress,
                cancel=cancel,
            )
            stats["val_accuracy"], stats["val_loss"] = accuracy_and_loss(model, val_x, val_y)
            stats["epoch"], stats["seconds"] = epoch + 1, time.perf_counter() - start
            row.update(epochs_done=epoch + 1, seconds=stats["seconds"])
            row["history"] = [*row["history"], stats]
            extra = {k: row[k] for k in ("epochs_done", "history", "seconds")}
            save_training_state(folder / STATE_FILE, model, opt, sched, extra)
            store.save_finetune(row)
            if progress:
                progress({"stage": "epoch", "epochs": recipe.epochs, **stats})
    except Cancelled:
        store.save_finetune({**row, "status": "cancelled", "message": "Cancelled by the user."})
        raise
    except Exception as exc:
        store.save_finetune({**row, "status": "failed", "message": f"{type(exc).__name__}: {exc}"})
        raise
    weights = folder / WEIGHTS_FILE
    save_checkpoint(model, weights, _weights_metadata(parent, subnet, fid, recipe))
    row.update(
        status="done",
        val_accuracy_after=row["history"][-1]["val_accuracy"],
        test_accuracy_after=accuracy_and_loss(model, test_x, test_y)[0],
        checkpoint=str(weights),
        seconds=time.perf_counter() - start,
    )
    store.save_finetune(row)
    return store.finetune(fid)


def _weights_metadata(parent: Parent, subnet: dict, fid: str, recipe: FinetuneRecipe) -> dict:
    return {
        "kind": "finetuned-subnet",
        "finetune_id": fid,
        "model": parent.model_spec.to_dict(),
        "data": parent.data_spec.to_dict(),
        "encoding": subnet["encoding"],
        "hash": subnet["hash"],
        "recipe": recipe.to_dict(),
    }


def delete_run_and_files(store: Store, run_id: str, *, force: bool = False) -> None:
    """Delete a run's rows, then its fine-tune folders and the export folders Prunescope made.

    Export folders outside $PRUNESCOPE_HOME (a CLI `--out`) belong to the user and are kept.
    """
    finetunes, exports = store.finetunes(run_id), store.exports(run_id)
    store.delete_run(run_id, force=force)
    for fid in finetunes["finetune_id"]:
        shutil.rmtree(finetune_dir(fid), ignore_errors=True)
    managed = (home_dir() / "exports").resolve()
    for out_dir in exports["out_dir"].dropna():
        if Path(out_dir).resolve().is_relative_to(managed):
            shutil.rmtree(out_dir, ignore_errors=True)

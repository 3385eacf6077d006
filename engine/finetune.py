"""Fine-tune a stored subnet, optionally distilling from its parent; resumable per epoch.

A fine-tune is identified by (run, subnet, recipe): starting the same one again resumes it from
its last finished epoch (the state is written atomically after each epoch), or returns the
finished result at once. Accuracies are measured on the search-validation and test splits before
and after, and the row (its recipe stored exactly as given) lands in the `finetunes` table as
each epoch ends.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

from engine.config import FinetuneRecipe
from engine.errors import Cancelled
from engine.evaluate import accuracy_and_loss
from engine.loop import (
    Progress,
    load_training_state,
    save_training_state,
    train_epoch,
    training_setup,
)
from engine.models import save_checkpoint
from engine.parent import Parent
from engine.store import Store
from engine.workspace import (
    finetune_dir,
    rebuild_parent,
    scored_subnet,
    usable_subnet,
)

STATE_FILE = "state.pt"  # optimizer, schedule and weights after the last finished epoch
WEIGHTS_FILE = "model.safetensors"  # the finished fine-tuned subnet


def finetune_id(run_id: str, subnet_id: int, recipe: FinetuneRecipe) -> str:
    key = json.dumps([run_id, int(subnet_id), recipe.key()], sort_keys=True)
    return hashlib.sha1(key.encode()).hexdigest()[:12]


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
    run = store.run(run_id)
    parent = parent or rebuild_parent(run)
    splits = parent.splits
    model = scored_subnet(parent, run, subnet["encoding"])
    val_x, val_y = splits.tensors("val")
    test_x, test_y = splits.tensors("test")
    cfg = recipe.train
    opt, sched, loss_fn = training_setup(model, parent, recipe)
    row = {
        "finetune_id": fid,
        "run_id": run_id,
        "subnet_id": int(subnet_id),
        "recipe": recipe.to_dict(),
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
        for epoch in range(row["epochs_done"], cfg.epochs):
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
            stats["train_images"] = len(splits.fit_idx)
            row.update(epochs_done=epoch + 1, seconds=stats["seconds"])
            row["history"] = [*row["history"], stats]
            extra = {k: row[k] for k in ("epochs_done", "history", "seconds")}
            save_training_state(folder / STATE_FILE, model, opt, sched, extra)
            store.save_finetune(row)
            if progress:
                progress({"stage": "epoch", "epochs": cfg.epochs, **stats})
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

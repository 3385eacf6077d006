"""Evaluation depth: how far each candidate of a search is taken, cheapest first.

1. screen — recalibrate and score on a few hundred images (`SearchConfig.screen_images`);
2. val — the full calibration and validation splits, for candidates whose screen accuracy comes
   within `SCREEN_MARGIN` of the best screened subnet that costs no more (near the front);
3. finetune — when the search has spent its evaluations, the best `tune_top` subnets under the
   budget get a short fine-tune distilled from the parent (`tune_images` training images) and are
   scored on validation again; the pick under the budget is the best of them.

The peers' answers skip the bar: they always reach full validation, so the search can never lose
to them on its own validation split.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence

import pandas as pd

from engine.config import FINETUNE_LR, FinetuneRecipe, SearchConfig
from engine.evaluate import accuracy_and_loss, rebuild_subnet, recalibrate_batchnorm
from engine.loop import train_epoch, training_setup
from engine.parent import Parent
from engine.store import Store

SCREEN_MARGIN = 0.02  # about two standard errors of an accuracy measured on 512 images
TUNE_BATCH = 128  # images per step of the short fine-tune


def promotion_bar(screened: Sequence[tuple[float, float]], cost: float) -> float:
    """The screen accuracy a candidate costing `cost` needs to earn full validation: within
    SCREEN_MARGIN of the best screened (cost, accuracy) that costs no more; -inf if none does."""
    cheaper = [accuracy for c, accuracy in screened if c <= cost]
    return max(cheaper) - SCREEN_MARGIN if cheaper else -math.inf


def short_finetune_recipe(seed: int = 0) -> FinetuneRecipe:
    """The rung's recipe: SGD at the fine-tune rate on a cosine schedule, crop and flip,
    distilled from the parent."""
    return FinetuneRecipe.with_training(
        epochs=1,
        lr=FINETUNE_LR["sgd"],
        schedule="cosine",
        batch_size=TUNE_BATCH,
        seed=seed,
        distill=True,
    )


def tuned_accuracy(parent: Parent, encoding, images: int, batch_size: int = 256) -> float:
    """Validation accuracy of the subnet at `encoding` after a short distilled fine-tune on
    `images` training images (its BatchNorm statistics re-estimated after)."""
    model = rebuild_subnet(parent, encoding, batch_size)
    recipe = short_finetune_recipe()
    steps = max(1, math.ceil(images / TUNE_BATCH))
    opt, sched, loss_fn = training_setup(model, parent, recipe, steps)
    train_epoch(model, parent.splits, recipe.train, opt, sched, 0, loss_fn=loss_fn, max_steps=steps)
    recalibrate_batchnorm(model, parent.splits.tensors("calib")[0], batch_size)
    return accuracy_and_loss(model, *parent.splits.tensors("val"), batch_size)[0]


def finalists(rows: pd.DataFrame, budget: float, metric: str, top: int) -> pd.DataFrame:
    """The best `top` fully validated subnets within the budget, best first."""
    if rows.empty or top < 1:
        return rows.iloc[:0]
    ok = rows["error"].isna() & rows["accuracy"].notna() & (rows[metric] <= budget)
    ok &= rows["depth"].fillna("val").isin(["val", "finetune"])
    return rows[ok].sort_values(["accuracy", "subnet_id"], ascending=[False, True]).head(top)


def tune_finalists(
    store: Store,
    run_id: str,
    parent: Parent,
    cfg: SearchConfig,
    budget: float,
    *,
    progress: Callable[[dict], None] | None = None,
    cancel: threading.Event | None = None,
) -> None:
    """The finetune rung for a search that has spent its evaluations (finalists already tuned
    are kept, so a resumed run does only what is missing)."""
    metric = cfg.constraint.metric
    if not (cfg.tune_top and cfg.tune_images):
        return
    chosen = finalists(store.subnets(run_id), budget, metric, cfg.tune_top)
    for done, row in enumerate(chosen.itertuples(), start=1):
        if cancel is not None and cancel.is_set():
            return
        if pd.isna(row.tuned_accuracy):
            accuracy = tuned_accuracy(parent, row.encoding, cfg.tune_images, cfg.batch_size)
            store.set_tuned_accuracy(run_id, row.subnet_id, accuracy)
        if progress:
            progress(
                {
                    "stage": "tuning",
                    "run_id": run_id,
                    "subnet_id": int(row.subnet_id),
                    "done": done,
                    "total": len(chosen),
                }
            )

"""Materialize -> BatchNorm recalibration -> accuracy: one flat row per subnet.

Accuracy right after pruning reads far below what the same subnet reaches once its BatchNorm
statistics are re-estimated on a few thousand training images, so every score here is taken
after recalibration.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch import nn

from engine.space import encoding_hash, materialize


def _layout(x: torch.Tensor) -> torch.Tensor:
    """Images channels-last: pruned, narrow convolutions run far faster so on CPUs."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def _batches(x: torch.Tensor, batch_size: int):
    x = _layout(x)  # free when it already is
    for start in range(0, len(x), batch_size):
        yield x[start : start + batch_size]


def channels_last(model: nn.Module) -> nn.Module:
    """`model` with its 4-D weights stored channels-last (the layout `_batches` feeds): measured
    here 1.3-1.5x faster for pruned ResNet-20s, the same speed for the whole parent."""
    return model.to(memory_format=torch.channels_last)


def recalibrate_batchnorm(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> nn.Module:
    """Re-estimate every BatchNorm's running mean/variance on `x` (a cumulative average)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return model.eval()
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all calibration batches
    model.train()
    with torch.no_grad():
        for batch in _batches(x, batch_size):
            model(batch)
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    return model.eval()


@torch.inference_mode()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Logits on the CPU, computed on the device the model is on."""
    model.eval()
    device = next(model.parameters()).device
    return torch.cat([model(batch.to(device)).cpu() for batch in _batches(x, batch_size)])


def accuracy_and_loss(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256
) -> tuple[float, float]:
    """Top-1 accuracy (0..1) and mean cross-entropy."""
    logits = predict(model, x, batch_size)
    loss = nn.functional.cross_entropy(logits, y).item()
    return (logits.argmax(1) == y).float().mean().item(), loss


def per_class_accuracy(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int, batch_size: int = 256
) -> list[float]:
    hits = predict(model, x, batch_size).argmax(1) == y
    return [
        hits[y == c].float().mean().item() if (y == c).any() else float("nan")
        for c in range(num_classes)
    ]


def rebuild_subnet(
    parent, encoding: Sequence[int], batch_size: int = 256, timings: dict | None = None
) -> nn.Module:
    """The subnet of `parent` (engine.parent.Parent) at `encoding`, BatchNorm recalibrated on the
    calibration split: the one implementation behind every score, fine-tune and export.
    `timings` receives seconds_materialize and seconds_recalibrate when given."""
    start = time.perf_counter()
    model = channels_last(materialize(parent.model, parent.space, encoding, parent.example_input))
    middle = time.perf_counter()
    recalibrate_batchnorm(model, parent.splits.tensors("calib")[0], batch_size)
    if timings is not None:
        timings["seconds_materialize"] = middle - start
        timings["seconds_recalibrate"] = time.perf_counter() - middle
    return model


class SubnetEvaluator:
    """Scores encodings of a parent's space; a failing subnet becomes a row with `error` set.

    With `screen_images`, a candidate given a promotion `bar` is first recalibrated and scored on
    that many calibration and validation images (depth "screen"); it goes on to the full
    calibration and validation splits (depth "val") only when its screen accuracy reaches `bar`.
    A candidate without a bar goes to full depth, screened too so every row is comparable.
    """

    def __init__(self, parent, batch_size: int = 256, block: int | None = None, screen_images=0):
        self.parent = parent  # engine.parent.Parent
        self.batch_size = batch_size
        self.block = block  # ONNX Runtime's channel block for runtime FLOPs; None: not counted
        self.calib_x = _layout(parent.splits.tensors("calib")[0])  # converted once, not per call
        self.val_x, self.val_y = parent.splits.tensors("val")
        self.val_x = _layout(self.val_x)
        # screening only pays when the validation split is larger than the screen
        self.screen_images = screen_images if screen_images < len(self.val_y) else 0
        if self.screen_images:  # a random sample: a split's first images are often one class
            self.screen_calib = _layout(parent.splits.sample("calib", screen_images)[0])
            self.screen_x, self.screen_y = parent.splits.sample("val", screen_images)
            self.screen_x = _layout(self.screen_x)

    def __call__(self, encoding: Sequence[int], sampler: str = "", bar: float | None = None):
        encoding = [int(w) for w in encoding]
        flops, params = self.parent.cost.cost(encoding)
        row = {
            "hash": encoding_hash(encoding),
            "encoding": encoding,
            "flops": flops,
            "params": params,
            "runtime_flops": (
                float(self.parent.cost.padded_flops([encoding], self.block)[0])
                if self.block
                else None
            ),
            "accuracy": None,
            "loss": None,
            "sampler": sampler,
            "depth": None,
            "screen_accuracy": None,
            "seconds_materialize": None,
            "seconds_recalibrate": None,
            "seconds_evaluate": None,
            "error": None,
        }
        try:
            start = time.perf_counter()
            model = channels_last(
                materialize(
                    self.parent.model, self.parent.space, encoding, self.parent.example_input
                )
            )
            row["seconds_materialize"] = time.perf_counter() - start
            if self.screen_images:
                self._score(row, model, self.screen_calib, self.screen_x, self.screen_y)
                row["screen_accuracy"], row["depth"] = row["accuracy"], "screen"
                if bar is not None and row["accuracy"] < bar:
                    return row
            self._score(row, model, self.calib_x, self.val_x, self.val_y)
            row["depth"] = "val"
        except Exception as exc:  # OOM, a pruning corner case: record it, keep sweeping
            row["error"] = f"{exc.__class__.__name__}: {exc}"
        return row

    def _score(self, row: dict, model: nn.Module, calib_x, val_x, val_y) -> None:
        """Recalibrate on `calib_x`, score on `val_x`; seconds add up over the rungs."""
        start = time.perf_counter()
        recalibrate_batchnorm(model, calib_x, self.batch_size)
        middle = time.perf_counter()
        row["accuracy"], row["loss"] = accuracy_and_loss(model, val_x, val_y, self.batch_size)
        row["seconds_recalibrate"] = (row["seconds_recalibrate"] or 0.0) + middle - start
        row["seconds_evaluate"] = (row["seconds_evaluate"] or 0.0) + time.perf_counter() - middle

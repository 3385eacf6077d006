"""The answers a user could get elsewhere in one call, as encodings of the run's space, so a
search evaluates them first and can never lose to them on its own validation split:

- `uniform-l1`: Torch-Pruning's default, every group pruned by the same ratio (L1 ranking) —
  the largest uniform subnet within the budget;
- `taylor`: Torch-Pruning's global pruning with first-order Taylor importance, its ratio
  bisected to the budget; its kept widths per group;
- `sensitivity`: NVIDIA FastNAS's idea — each group shrunk alone, scored after BatchNorm
  recalibration, then the groups that cost least accuracy per unit of the metric shrunk first.

Each is an allocation (kept channels per group); which channels a group keeps follows the run's
importance, as for every encoding.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch_pruning as tp
from torch import nn

from engine.evaluate import accuracy_and_loss, recalibrate_batchnorm
from engine.parent import Parent, importance_batches
from engine.space import Encoding, SearchSpace, classifier_name, encoding_hash, materialize

MAX_RATIO = 0.9  # Torch-Pruning's max_pruning_ratio: no layer loses more than this share
BISECTIONS = 14  # steps of the ratio bisection (2^-14 of the range)
PROFILE_LEVELS = (0.75, 0.5, 0.25)  # widths (share of the group) each group is profiled at
PROFILE_IMAGES = 512  # calibration and validation images per profile evaluation
PEER_NAMES = ("peer:uniform-l1", "peer:taylor", "peer:sensitivity")


def with_taylor_gradients(parent: Parent) -> nn.Module:
    """A copy of the parent holding loss gradients on calibration images (for Taylor)."""
    model = copy.deepcopy(parent.model).eval()
    model.zero_grad()
    for x, y in importance_batches(parent.splits):
        nn.functional.cross_entropy(model(x), y).backward()
    return model


def tp_prune(source: nn.Module, example: torch.Tensor, ratio: float, kind: str) -> nn.Module:
    """Torch-Pruning's one-shot pruning of a copy of `source` (its gradients copied too):
    `kind` "l1" (uniform, magnitude) or "taylor" (global, first-order Taylor)."""
    model = copy.deepcopy(source).eval()
    for theirs, ours in zip(source.parameters(), model.parameters(), strict=True):
        ours.grad = None if theirs.grad is None else theirs.grad.clone()
    classifier = model.get_submodule(classifier_name(model))
    if kind == "l1":
        importance, global_pruning = tp.importance.GroupMagnitudeImportance(p=1), False
    else:
        importance, global_pruning = tp.importance.GroupTaylorImportance(), True
    pruner = tp.pruner.MagnitudePruner(  # = MetaPruner; the importance decides
        model,
        example,
        importance=importance,
        pruning_ratio=ratio,
        global_pruning=global_pruning,
        max_pruning_ratio=MAX_RATIO,
        ignored_layers=[classifier],
    )
    pruner.step()
    model.zero_grad(set_to_none=True)
    return model.eval()


def widths_of(model: nn.Module, space: SearchSpace) -> list[int]:
    """Kept channels per group of a pruned copy of the parent (each group's named layer)."""
    widths = []
    for group in space.groups:
        layer = model.get_submodule(group.name)
        widths.append(int(getattr(layer, "out_channels", getattr(layer, "out_features", 0))))
    return widths


def fit_encoding(widths, space: SearchSpace, cost_of, budget: float) -> Encoding | None:
    """`widths` on the space's grid (each rounded down to an allowed width), then shrunk one
    step at a time in the group kept widest (relative to its size) until within the budget."""
    choices = [np.array(space.choices(i)) for i in range(len(space.groups))]
    steps = [
        max(int(np.searchsorted(c, w, side="right")) - 1, 0)
        for c, w in zip(choices, widths, strict=True)
    ]
    while True:
        encoding = tuple(int(c[s]) for c, s in zip(choices, steps, strict=True))
        if cost_of(encoding) <= budget:
            return encoding
        movable = [i for i, s in enumerate(steps) if s > 0]
        if not movable:
            return None
        widest = max(movable, key=lambda i: (choices[i][steps[i]] / choices[i][-1], i))
        steps[widest] -= 1


def uniform_l1(space: SearchSpace, cost_of, budget: float) -> Encoding | None:
    """The largest uniform subnet within the budget (every group at the same share)."""
    best = None
    for ratio in np.linspace(0, 1, 257):
        encoding = space.uniform(float(ratio))
        if cost_of(encoding) <= budget:
            best = encoding
    return best


def taylor(parent: Parent, cost_of, budget: float) -> Encoding | None:
    """Global Taylor pruning's widths at the largest ratio-bisected subnet within the budget."""
    source = with_taylor_gradients(parent)
    lo, hi, best = 0.0, MAX_RATIO, None
    for _ in range(BISECTIONS):
        mid = (lo + hi) / 2
        model = tp_prune(source, parent.example_input, mid, "taylor")
        encoding = fit_encoding(widths_of(model, parent.space), parent.space, cost_of, np.inf)
        if encoding is not None and cost_of(encoding) <= budget:
            best, hi = encoding, mid
        else:
            lo = mid
    if best is None:  # the largest ratio misses the budget: start from it and shrink
        model = tp_prune(source, parent.example_input, MAX_RATIO, "taylor")
        best = fit_encoding(widths_of(model, parent.space), parent.space, cost_of, budget)
    return best


def sensitivity(parent: Parent, cost_of, budget: float, batch_size: int = 256):
    """FastNAS-style: the accuracy each group loses shrunk alone to PROFILE_LEVELS (after
    recalibration, on PROFILE_IMAGES images), then greedy shrinking of the group with the
    smallest loss per unit of the metric saved, until within the budget."""
    space, full = parent.space, parent.space.full()
    calib = parent.splits.sample("calib", PROFILE_IMAGES)[0]
    val_x, val_y = parent.splits.sample("val", PROFILE_IMAGES)
    base = accuracy_and_loss(parent.model, val_x, val_y, batch_size)[0]
    levels = [[group.size] for group in space.groups]  # per group: widths, whole width first
    drops = [[0.0] for _ in space.groups]  # accuracy lost at each of those widths
    for g in range(len(space.groups)):
        for share in PROFILE_LEVELS:
            width = space.uniform(share)[g]
            if width >= levels[g][-1]:
                continue
            encoding = tuple(width if i == g else w for i, w in enumerate(full))
            model = materialize(parent.model, space, encoding, parent.example_input)
            recalibrate_batchnorm(model, calib, batch_size)
            levels[g].append(width)
            drops[g].append(base - accuracy_and_loss(model, val_x, val_y, batch_size)[0])
    steps = [0] * len(space.groups)
    current = lambda: tuple(levels[g][s] for g, s in enumerate(steps))  # noqa: E731
    while cost_of(current()) > budget:
        here = cost_of(current())
        best, best_rate = None, np.inf
        for g, s in enumerate(steps):
            if s + 1 >= len(levels[g]):
                continue
            trial = list(current())
            trial[g] = levels[g][s + 1]
            saved = here - cost_of(tuple(trial))
            if saved > 0 and (rate := max(drops[g][s + 1] - drops[g][s], 0.0) / saved) < best_rate:
                best, best_rate = g, rate
        if best is None:  # every group at its lowest profiled width: shrink further on the grid
            return fit_encoding(current(), space, cost_of, budget)
        steps[best] += 1
    return fit_encoding(current(), space, cost_of, budget)


def peer_allocations(parent: Parent, cost_of, budget: float, batch_size: int = 256):
    """[(encoding, name)] of the peers' answers at the budget: unique, the parent left out."""
    found = [
        (uniform_l1(parent.space, cost_of, budget), PEER_NAMES[0]),
        (taylor(parent, cost_of, budget), PEER_NAMES[1]),
        (sensitivity(parent, cost_of, budget, batch_size), PEER_NAMES[2]),
    ]
    seen = {encoding_hash(parent.space.full())}
    out = []
    for encoding, name in found:
        if encoding is not None and encoding_hash(encoding) not in seen:
            seen.add(encoding_hash(encoding))
            out.append((tuple(int(w) for w in encoding), name))
    return out

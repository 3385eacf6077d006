"""Samplers propose encodings to evaluate, given everything evaluated so far.

Each `propose(history, rng)` returns one unseen encoding (a tuple of kept widths) and its sampler
name, or None when the sampler has nothing new to offer. Samplers keep no state of their own:
given the same history and the same random stream they propose the same thing, which is what
lets a killed search resume where it stopped.

Every proposal lies within the budget, and none is the unpruned parent (the run scores the
parent once, as its reference): evaluations spent above the budget answer nothing the user asked.

- `uniform`: every group at the same fraction of its width, swept across the range under the
  budget.
- `random`: independent widths per group, within the budget.
- `guided`: the uniform sweep as a first front (its largest subnets within the budget first, so
  evolution starts from the best simple answer), then evolution: mutations and crossovers of
  front members, half of them aimed just under the user's budget, half anywhere below it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from engine.config import SAMPLERS
from engine.cost import CostModel
from engine.errors import ConfigError
from engine.pareto import pareto_front
from engine.space import Encoding, SearchSpace, encoding_hash

RANDOM_BATCH = 2048  # candidates drawn at once and filtered by cost
GUIDED_SEED_SHARE = 0.2  # share of a guided run spent on the uniform sweep before evolving
GUIDED_FIRST = 2  # uniform subnets just within the budget, evaluated before the rest of the sweep
NEAR_BUDGET = 0.8  # guided "budget" proposals land between this share of the budget and the budget


@dataclass
class Evaluated:
    encoding: Encoding
    cost: float  # the constrained metric (FLOPs, params or runtime FLOPs)
    accuracy: float | None  # None when the evaluation failed


class Sampler:
    name = "base"

    def __init__(
        self,
        space: SearchSpace,
        cost: CostModel,
        metric: str,
        budget: float,
        total: int,
        block: int = 1,
    ):
        self.space, self.cost, self.metric = space, cost, metric
        self.budget, self.total = budget, total
        self.block = block  # ONNX Runtime's channel block, for metric "runtime_flops"
        self.choices = [np.array(space.choices(i)) for i in range(len(space.groups))]
        self.parent_hash = encoding_hash(space.full())

    def metric_of(self, encodings) -> np.ndarray:
        return self.cost.metric(self.metric, encodings, self.block)

    def allowed(self, encodings: list[Encoding]) -> list[Encoding]:
        """The encodings within the budget, the parent itself left out."""
        if not encodings:
            return []
        costs = self.metric_of(encodings)
        return [
            e
            for e, c in zip(encodings, costs, strict=True)
            if c <= self.budget and encoding_hash(e) != self.parent_hash
        ]

    def propose(
        self, history: list[Evaluated], rng: np.random.Generator
    ) -> tuple[Encoding, str] | None:
        raise NotImplementedError


def _unseen(candidates: Iterable[Encoding], seen: set[str]) -> Encoding | None:
    return next((c for c in candidates if encoding_hash(c) not in seen), None)


def _seen(history: list[Evaluated]) -> set[str]:
    return {encoding_hash(h.encoding) for h in history}


class UniformSampler(Sampler):
    """Same fraction in every group; visits the sweep coarse-to-fine so any prefix spans the range."""

    name = "uniform"

    _sweep: list[Encoding] | None = None

    def sweep(self) -> list[Encoding]:
        if self._sweep is None:
            points = list(dict.fromkeys(self.space.uniform(r) for r in np.linspace(0, 1, 513)))
            points = self.allowed(points)
            ordered = [points[i] for i in np.argsort(self.metric_of(points), kind="stable")]
            self._sweep = [ordered[i] for i in _coarse_to_fine(len(ordered))]
        return self._sweep

    def propose(self, history, rng):
        choice = _unseen(self.sweep(), _seen(history))
        return (choice, self.name) if choice else None


def _coarse_to_fine(n: int) -> list[int]:
    """0, n-1, then midpoints of the largest gaps: 0, 8, 4, 2, 6, 1, 3, ..."""
    if n <= 2:
        return list(range(n))
    order, gaps = [0, n - 1], [(0, n - 1)]
    while gaps:
        gaps.sort(key=lambda g: g[0] - g[1])
        lo, hi = gaps.pop(0)
        if hi - lo < 2:
            continue
        mid = (lo + hi) // 2
        order.append(mid)
        gaps += [(lo, mid), (mid, hi)]
    return order


class RandomSampler(Sampler):
    """Widths drawn per group around a random overall scale, kept when within the budget."""

    name = "random"

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        scale = rng.random((n, 1))
        jitter = np.clip(scale + rng.normal(0, 0.25, (n, len(self.choices))), 0, 1)
        return np.stack(
            [
                c[np.minimum((jitter[:, i] * len(c)).astype(int), len(c) - 1)]
                for i, c in enumerate(self.choices)
            ],
            axis=1,
        )

    def propose(self, history, rng):
        seen = _seen(history)
        for _ in range(20):
            candidates = self.draw(rng, RANDOM_BATCH)
            ok = candidates[self.metric_of(candidates) <= self.budget]
            seen.add(self.parent_hash)
            choice = _unseen((tuple(int(w) for w in row) for row in ok), seen)
            if choice:
                return choice, self.name
        return None


class GuidedSampler(Sampler):
    """The peers' answers, the uniform sweep, then evolution of the front, half of it aimed at
    the budget."""

    name = "guided"

    _seeds: list[Encoding] | None = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.uniform = UniformSampler(*args, **kwargs)
        self.random = RandomSampler(*args, **kwargs)
        self.peers: list[tuple[Encoding, str]] = []  # (encoding, "peer:…"), evaluated first

    def seeds(self) -> list[Encoding]:
        """The uniform sweep, led by its largest subnets within the budget."""
        if self._seeds is None:
            sweep = self.uniform.sweep()
            costs = self.metric_of(sweep)
            within = sorted(
                (i for i in range(len(sweep)) if costs[i] <= self.budget), key=lambda i: -costs[i]
            )
            first = [sweep[i] for i in within[:GUIDED_FIRST]]
            self._seeds = first + [e for e in sweep if e not in first]
        return self._seeds

    def propose(self, history, rng):
        seen = _seen(history)
        fresh = (p for p in self.peers if encoding_hash(p[0]) not in seen)
        peer = next((p for p in fresh if self.allowed([p[0]])), None)
        if peer:
            return peer
        seeds = max(4, int(GUIDED_SEED_SHARE * self.total))
        if sum(h.accuracy is not None for h in history) < seeds:
            choice = _unseen(self.seeds(), _seen(history))
            if choice:
                return choice, "uniform"
        seen = _seen(history)
        near_budget = rng.random() < 0.5
        for _ in range(200):
            child = self._child(history, rng, near_budget)
            if child is None:
                break
            cost = self.metric_of([child])[0]
            in_band = NEAR_BUDGET * self.budget <= cost
            fits = cost <= self.budget and encoding_hash(child) != self.parent_hash
            if fits and (in_band or not near_budget) and encoding_hash(child) not in seen:
                return child, self.name
        proposal = self.random.propose(history, rng)
        return (proposal[0], self.name) if proposal else None

    def _parents(self, history: list[Evaluated], near_budget: bool) -> list[Evaluated]:
        valid = [h for h in history if h.accuracy is not None]
        if near_budget:
            under = sorted((h for h in valid if h.cost <= self.budget), key=lambda h: -h.accuracy)
            return under[:8]
        if not valid:
            return []
        frame = pd.DataFrame(
            {
                "subnet_id": range(len(valid)),
                "flops": [h.cost for h in valid],
                "params": [h.cost for h in valid],
                "accuracy": [h.accuracy for h in valid],
            }
        )
        return [valid[i] for i in pareto_front(frame)["subnet_id"]]

    def _child(self, history, rng, near_budget) -> Encoding | None:
        parents = self._parents(history, near_budget) or self._parents(history, False)
        if not parents:
            return None
        a = np.array(parents[rng.integers(len(parents))].encoding)
        if len(parents) > 1 and rng.random() < 0.3:  # uniform crossover with another parent
            b = np.array(parents[rng.integers(len(parents))].encoding)
            a = np.where(rng.random(len(a)) < 0.5, a, b)
        steps = self._positions(a)
        mutate = rng.random(len(a)) < max(1.5 / len(a), 0.1)
        if not mutate.any():
            mutate[rng.integers(len(a))] = True
        over = self.metric_of([a])[0] > self.budget
        shift = (
            rng.choice([-2, -1, 1, 2], size=len(a))
            if not over
            else -rng.integers(1, 3, size=len(a))
        )
        steps = np.where(mutate, steps + shift, steps)
        return tuple(
            int(c[np.clip(s, 0, len(c) - 1)]) for c, s in zip(self.choices, steps, strict=True)
        )

    def _positions(self, encoding: np.ndarray) -> np.ndarray:
        return np.array(
            [int(np.searchsorted(c, w)) for c, w in zip(self.choices, encoding, strict=True)]
        )


def make_sampler(name: str, *args, **kwargs) -> Sampler:
    """The sampler called `name`, built with `Sampler`'s arguments."""
    classes = {"uniform": UniformSampler, "random": RandomSampler, "guided": GuidedSampler}
    if name not in classes:
        raise ConfigError(f"Unknown sampler {name!r}: choose one of {', '.join(SAMPLERS)}.")
    return classes[name](*args, **kwargs)

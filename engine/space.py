"""The search space: Torch-Pruning channel groups, their importance order, and subnet encodings.

A subnet's *encoding* is the number of channels kept in each group, in the space's group order.
Within a group the kept channels are always the most important ones, so an encoding alone
rebuilds the subnet from the parent (`materialize`).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import torch
import torch_pruning as tp
from torch import nn

from engine.config import IMPORTANCES
from engine.errors import ConfigError, SpaceError

Encoding = tuple[int, ...]


@dataclass(frozen=True)
class ChannelGroup:
    name: str  # root layer whose output channels define the group (Torch-Pruning's group root)
    size: int  # channels in the parent
    order: tuple[int, ...]  # channel indices, most important first
    members: tuple[str, ...]  # every layer coupled to these channels (residual adds, concats, ...)


@dataclass(frozen=True)
class SearchSpace:
    groups: tuple[ChannelGroup, ...]
    round_to: int  # kept widths are multiples of this (or the full width)
    importance: str  # how `order` was computed: l1 | bn_scale | taylor
    classifier: str  # the output layer, never pruned

    def choices(self, index: int) -> list[int]:
        """Allowed kept widths of group `index`, ascending."""
        size = self.groups[index].size
        widths = list(range(self.round_to, size, self.round_to)) + [size]
        return widths

    def full(self) -> Encoding:
        return tuple(g.size for g in self.groups)

    def minimal(self) -> Encoding:
        return tuple(self.choices(i)[0] for i in range(len(self.groups)))

    def uniform(self, ratio: float) -> Encoding:
        """Every group at the same fraction of its width, snapped to the nearest allowed width."""
        return tuple(
            min(self.choices(i), key=lambda w, n=g.size: (abs(w - ratio * n), w))
            for i, g in enumerate(self.groups)
        )

    def validate(self, encoding: Sequence[int]) -> Encoding:
        encoding = tuple(int(w) for w in encoding)
        if len(encoding) != len(self.groups):
            raise ConfigError(
                f"Encoding has {len(encoding)} widths; the space has {len(self.groups)} groups."
            )
        for i, width in enumerate(encoding):
            if width not in self.choices(i):
                raise ConfigError(
                    f"Width {width} is not allowed for group {self.groups[i].name} "
                    f"(size {self.groups[i].size}, round_to {self.round_to})."
                )
        return encoding

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SearchSpace:
        groups = tuple(
            ChannelGroup(g["name"], int(g["size"]), tuple(g["order"]), tuple(g["members"]))
            for g in data["groups"]
        )
        return cls(groups, int(data["round_to"]), data["importance"], data["classifier"])


def encoding_hash(encoding: Iterable[int]) -> str:
    """Stable across processes and Python versions: sha1 of the JSON list, 16 hex digits."""
    return hashlib.sha1(json.dumps([int(w) for w in encoding]).encode()).hexdigest()[:16]


# --- building the space from a model ------------------------------------------------------------


def classifier_name(model: nn.Module) -> str:
    """The output layer: the last Linear, else the last convolution (never pruned)."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    names = names or [n for n, m in model.named_modules() if isinstance(m, nn.modules.conv._ConvNd)]
    if not names:
        raise SpaceError(
            f"{type(model).__name__} has no Linear or convolution layer to prune around."
        )
    return names[-1]


def dependency_graph(model: nn.Module, example_input: torch.Tensor) -> tp.DependencyGraph:
    """Trace `model` with Torch-Pruning; on failure name the module that was running."""
    running: list[str] = []
    names = {m: n for n, m in model.named_modules()}

    def enter(module, _inputs):
        running.append(names[module])

    def leave(_module, _inputs, _output):
        running.pop()

    hooks = [m.register_forward_pre_hook(enter) for m in model.modules()]
    hooks += [m.register_forward_hook(leave) for m in model.modules()]
    try:
        with torch.enable_grad():
            graph = tp.DependencyGraph().build_dependency(
                model, example_inputs=example_input, verbose=False
            )
    except Exception as exc:
        where = f" in module {running[-1] or type(model).__name__!r}" if running else ""
        raise SpaceError(
            f"Torch-Pruning could not trace {type(model).__name__}{where}: "
            f"{exc.__class__.__name__}: {exc}"
        ) from exc
    finally:
        for hook in hooks:
            hook.remove()
    return graph


def channel_groups(graph: tp.DependencyGraph, model: nn.Module, classifier: str):
    """Torch-Pruning's groups rooted at convolutions and linears, classifier outputs excluded."""
    ignored = [model.get_submodule(classifier)]
    return list(
        graph.get_all_groups(
            ignored_layers=ignored, root_module_types=[nn.modules.conv._ConvNd, nn.Linear]
        )
    )


DATA_AWARE = ("taylor", "activation", "gradient")  # importances that need calibration batches


def _importance(kind: str):
    if kind == "l1":
        return tp.importance.GroupMagnitudeImportance(p=1)
    if kind == "bn_scale":
        return tp.importance.BNScaleImportance()
    if kind == "taylor":
        return tp.importance.GroupTaylorImportance()
    if kind == "activation":  # Minitron: mean |activation| each channel feeds its consumers
        return tp.importance.ActivationImportance(p=1)
    if kind == "gradient":  # per-image squared loss gradients x squared weights (OBD, Fisher)
        return tp.importance.GroupHessianImportance()
    raise ConfigError(f"Unknown importance {kind!r}: choose one of {', '.join(IMPORTANCES)}.")


def _prepare(kind: str, scorer, model: nn.Module, batches) -> None:
    """Feed the calibration batches to a data-aware scorer; the parent as it is (eval mode)."""
    model.zero_grad()
    model.eval()  # no BatchNorm statistics disturbed
    if kind == "taylor":  # batch gradients, left on the parameters
        with torch.enable_grad():
            for x, y in batches:
                nn.functional.cross_entropy(model(x), y).backward()
    elif kind == "gradient":  # one backward per image: its own squared gradients add up
        scorer.zero_grad()
        with torch.enable_grad():
            for x, y in batches:
                for i in range(len(x)):
                    model.zero_grad()
                    nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
                    scorer.accumulate_grad(model)
    elif kind == "activation":  # TP's hooks keep the last batch only: average over all of them
        totals: dict[nn.Module, torch.Tensor] = {}
        count = 0
        with torch.no_grad():
            for x, _ in batches:
                with scorer.compute_importance(model):
                    model(x)
                count += 1
                for m in model.modules():
                    if hasattr(m, "_importance"):
                        totals[m] = totals.get(m, 0) + m._importance
        for m, total in totals.items():
            m._importance = total / count


def build_space(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    round_to: int = 8,
    importance: str = "l1",
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> SearchSpace:
    """Turn `model` into a space of channel widths. The data-aware importances (`DATA_AWARE`)
    read `batches` of calibration images and labels."""
    if round_to < 1:
        raise ConfigError("round_to must be at least 1.")
    model = copy.deepcopy(model).eval()
    classifier = classifier_name(model)
    graph = dependency_graph(model, example_input)
    scorer = _importance(importance)
    if importance in DATA_AWARE:
        if batches is None:
            raise ConfigError(f"{importance} importance needs calibration batches.")
        _prepare(importance, scorer, model, batches)
    names = {m: n for n, m in model.named_modules()}
    groups = []
    for group in channel_groups(graph, model, classifier):
        root = group[0].dep.target.module
        with torch.no_grad():
            scores = scorer(group)
        size = len(group[0].idxs)
        if scores is None:  # e.g. BN-scale importance on a group without BatchNorm: fall back to L1
            scores = tp.importance.GroupMagnitudeImportance(p=1)(group)
        order = torch.argsort(scores.float(), descending=True, stable=True).tolist()
        members = tuple(
            dict.fromkeys(names[d.target.module] for d, _ in group if d.target.module in names)
        )
        groups.append(ChannelGroup(names[root], size, tuple(order), members))
    position = {n: i for i, n in enumerate(names.values())}
    groups.sort(key=lambda g: position[g.name])  # network order reads naturally in charts
    if not groups:
        raise SpaceError(f"{type(model).__name__} has no prunable channel groups.")
    return SearchSpace(tuple(groups), round_to, importance, classifier)


def materialize(
    parent: nn.Module, space: SearchSpace, encoding: Sequence[int], example_input: torch.Tensor
) -> nn.Module:
    """A physically smaller copy of `parent` keeping, per group, its most important channels."""
    encoding = space.validate(encoding)
    model = copy.deepcopy(parent).eval()
    graph = dependency_graph(model, example_input)
    for group, keep in zip(space.groups, encoding, strict=True):
        if keep == group.size:
            continue
        root = model.get_submodule(group.name)
        pruner = graph.get_pruner_of_module(root)
        drop = sorted(group.order[keep:])
        graph.get_pruning_group(root, pruner.prune_out_channels, drop).prune()
    return model

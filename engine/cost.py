"""FLOPs and parameters of any encoding, computed without building the subnet.

FLOPs are counted as `torch.utils.flop_counter.FlopCounterMode` counts them: 2 x multiply-
accumulates of convolutions and matrix products, per image. Every layer's kept input and output
channels are affine in the kept widths of the groups that touch it (read from Torch-Pruning's
groups, including concats and flattens), so a subnet's cost is a small numpy computation that
runs in microseconds and matches the materialized network exactly.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from engine.errors import SpaceError
from engine.space import SearchSpace, channel_groups, dependency_graph, materialize

NORMS = (
    nn.modules.batchnorm._BatchNorm,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.modules.instancenorm._InstanceNorm,
)
TOLERANCE = 0.005  # relative disagreement tolerated between this model and torch's own count


def measure(model: nn.Module, example_input: torch.Tensor) -> tuple[float, int]:
    """(FLOPs per image, parameters) of a built network, by torch's own counter."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model.eval()(example_input)
    return counter.get_total_flops() / example_input.shape[0], sum(
        p.numel() for p in model.parameters()
    )


def padded(channels, block: int):
    """`channels` (a count or an array of counts) rounded up to a multiple of `block`."""
    return -(-channels // block) * block


def output_positions(model: nn.Module, example_input: torch.Tensor) -> dict[nn.Module, float]:
    """Output positions per image each conv/linear computes (spatial size, or tokens)."""
    usage: dict[nn.Module, float] = {}

    def hook(module, _inputs, output):
        per_image = (
            output.numel()
            / output.shape[0]
            / (output.shape[1] if isinstance(module, nn.modules.conv._ConvNd) else output.shape[-1])
        )
        usage[module] = usage.get(module, 0.0) + per_image

    layers = [m for m in model.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
    hooks = [m.register_forward_hook(hook) for m in layers]
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        for h in hooks:
            h.remove()
    return usage


class CostModel:
    """FLOPs/params of encodings of `space` over `parent`: `cost(enc)` or `costs(matrix)`."""

    def __init__(self, parent: nn.Module, space: SearchSpace, example_input: torch.Tensor):
        self.space = space
        model = copy.deepcopy(parent).eval()
        self.parent_flops, self.parent_params = measure(model, example_input[:1])
        usage = output_positions(model, example_input[:1])
        layers = [
            (n, m)
            for n, m in model.named_modules()
            if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear, *NORMS, nn.PReLU))
        ]
        index = {m: i for i, (_, m) in enumerate(layers)}
        self.layer_names = [n for n, _ in layers]
        self._describe_layers(layers, usage)
        self._read_groups(model, example_input[:1], index)
        self._full_flops, self._full_params = (v[0] for v in self._model(np.array([space.full()])))
        self._verify(parent, example_input[:1], space.minimal())

    def _describe_layers(self, layers, usage) -> None:
        n = len(layers)
        self._d0 = np.zeros(2 * n)  # [out_0, in_0, out_1, in_1, ...]
        self._flop_coef = np.zeros(n)  # FLOPs per (out x in_per_group) channel pair
        self._weight_coef = np.zeros(n)  # weight params per (out x in_per_group) pair
        self._out_coef = np.zeros(n)  # params per output channel (bias, norm affine, PReLU)
        self._groups = np.ones(n)  # convolution groups, fixed unless depthwise
        self._depthwise = np.zeros(n, dtype=bool)
        self._conv = np.zeros(n, dtype=bool)
        for i, (_, m) in enumerate(layers):
            if isinstance(m, nn.modules.conv._ConvNd):
                out, inn = m.out_channels, m.in_channels
                kernel = float(np.prod(m.kernel_size))
                self._flop_coef[i] = 2 * kernel * usage.get(m, 0.0)
                self._weight_coef[i] = kernel
                self._out_coef[i] = 1 if m.bias is not None else 0
                self._groups[i] = m.groups
                self._depthwise[i] = m.groups > 1 and m.groups == m.out_channels
                self._conv[i] = True
            elif isinstance(m, nn.Linear):
                out, inn = m.out_features, m.in_features
                self._flop_coef[i] = 2 * usage.get(m, 0.0)
                self._weight_coef[i] = 1
                self._out_coef[i] = 1 if m.bias is not None else 0
            else:  # norms, PReLU: parameters scale with channels
                out = inn = _channels(m)
                self._out_coef[i] = sum(p.numel() for p in m.parameters(recurse=False)) / max(
                    out, 1
                )
            self._d0[2 * i], self._d0[2 * i + 1] = out, inn

    def _read_groups(self, model, example_input, index) -> None:
        graph = dependency_graph(model, example_input)
        by_root = {g.name: i for i, g in enumerate(self.space.groups)}
        names = {m: n for n, m in model.named_modules()}
        width = max(g.size for g in self.space.groups) + 1
        tables, dims, owners, seen = [], [], [], set()
        for group in channel_groups(graph, model, self.space.classifier):
            gi = by_root.get(names[group[0].dep.target.module])
            if gi is None:
                raise SpaceError(
                    f"Group rooted at {names[group[0].dep.target.module]} is not in the search space."
                )
            info = self.space.groups[gi]
            rank = np.empty(info.size, dtype=np.int64)
            rank[list(info.order)] = np.arange(info.size)
            for item in group:
                module, fn = item.dep.target.module, item.dep.handler
                if module not in index:
                    continue
                if graph.is_out_channel_pruning_fn(fn):
                    dim = 2 * index[module]
                elif graph.is_in_channel_pruning_fn(fn):
                    dim = 2 * index[module] + 1
                else:
                    continue
                if (dim, gi) in seen:
                    raise SpaceError(
                        f"Layer {names[module]} is coupled twice to group {info.name}."
                    )
                seen.add((dim, gi))
                counts = np.bincount(
                    rank[np.asarray(item.root_idxs, dtype=np.int64)], minlength=info.size
                )
                removed = np.zeros(width)  # removed[k]: this layer's channels lost when k are kept
                removed[: info.size] = np.cumsum(counts[::-1])[::-1]
                tables.append(removed)
                dims.append(dim)
                owners.append(gi)
        self._tables = np.array(tables) if tables else np.zeros((0, width))
        self._dep_dim = np.array(dims, dtype=np.int64)
        self._dep_group = np.array(owners, dtype=np.int64)

    def _dims(self, encodings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(output, input) channels of every tracked layer, one row per encoding."""
        removed = self._tables[np.arange(len(self._dep_dim)), encodings[:, self._dep_group]]
        dims = np.repeat(self._d0[None, :], len(encodings), axis=0)
        np.add.at(dims.T, self._dep_dim, -removed.T)
        return dims[:, 0::2], dims[:, 1::2]

    def _model(self, encodings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Modeled FLOPs/params of the layers this class tracks, for each row of `encodings`."""
        out, inn = self._dims(encodings)
        per_group_in = np.where(self._depthwise, 1.0, inn / self._groups)
        pairs = out * per_group_in
        flops = pairs @ self._flop_coef
        params = pairs @ self._weight_coef + out @ self._out_coef
        return flops, params

    def costs(
        self, encodings: np.ndarray | Sequence[Sequence[int]]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(FLOPs, params) arrays for a matrix of encodings, one per row."""
        encodings = np.asarray(encodings, dtype=np.int64).reshape(-1, len(self.space.groups))
        flops, params = self._model(encodings)
        return (
            self.parent_flops + flops - self._full_flops,
            np.rint(self.parent_params + params - self._full_params).astype(np.int64),
        )

    def padded_flops(
        self, encodings: np.ndarray | Sequence[Sequence[int]], block: int
    ) -> np.ndarray:
        """FLOPs per image with convolution channels padded as `engine.runtime` describes."""
        encodings = np.asarray(encodings, dtype=np.int64).reshape(-1, len(self.space.groups))
        out, inn = self._dims(encodings)
        out = np.where(self._conv, padded(out, block), out)
        plain = self._conv & (self._groups == 1)
        inn = np.where(plain & (inn >= block), padded(inn, block), inn)
        per_group_in = np.where(self._depthwise, 1.0, inn / self._groups)
        return (out * per_group_in) @ self._flop_coef

    def metric(
        self, name: str, encodings: np.ndarray | Sequence[Sequence[int]], block: int = 1
    ) -> np.ndarray:
        """One constraint metric (see `engine.config.METRICS`) for each row of `encodings`."""
        if name == "runtime_flops":
            return self.padded_flops(encodings, block)
        flops, params = self.costs(encodings)
        return flops if name == "flops" else params.astype(float)

    def cost(self, encoding: Sequence[int]) -> tuple[float, int]:
        flops, params = self.costs([encoding])
        return float(flops[0]), int(params[0])

    def _verify(self, parent, example_input, encoding) -> None:
        """Refuse a space whose cost this model cannot predict (unsupported layer types)."""
        predicted = self.cost(encoding)
        measured = measure(materialize(parent, self.space, encoding, example_input), example_input)
        for what, p, m in zip(("FLOPs", "parameters"), predicted, measured, strict=True):
            if abs(p - m) > TOLERANCE * max(m, 1):
                raise SpaceError(
                    f"Cannot predict the {what} of pruned {type(parent).__name__} subnets "
                    f"(predicted {p:,.0f}, measured {m:,.0f}): a layer type in it is not supported."
                )


def _channels(module: nn.Module) -> int:
    for attr in ("num_features", "num_channels", "num_parameters"):
        if hasattr(module, attr):
            return int(getattr(module, attr))
    if isinstance(module, nn.LayerNorm):
        return int(module.normalized_shape[0])
    return 0

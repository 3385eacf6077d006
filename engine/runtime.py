"""How ONNX Runtime's CPU kernels see channel widths on this machine.

ONNX Runtime rewrites convolutions into its blocked NCHWc layout, computed in blocks of 8 (AVX2)
or 16 (AVX-512) channels: a convolution's output channels are padded up to a multiple of the
block, and so are its input channels once the input is blocked (inputs narrower than one block
stay in plain NCHW). A layer cut from 16 to 8 channels therefore saves FLOPs but no time. The
block is read from ONNX Runtime itself, by optimizing a one-convolution model.
"""

from __future__ import annotations

import functools
import math
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import helper
from torch import nn

from engine.cost import output_positions, padded

PROBE_CHANNELS = 3  # an output width no block size divides


@functools.cache
def channel_block() -> int:
    """ONNX Runtime's NCHWc channel block on this CPU (1 when it does not block convolutions)."""
    weight = helper.make_tensor(
        "w", onnx.TensorProto.FLOAT, [PROBE_CHANNELS, 32, 1, 1], np.ones(PROBE_CHANNELS * 32)
    )
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 32, 8, 8])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, PROBE_CHANNELS, 8, 8])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.log_severity_level = 3  # the "hardware-specific model" warning is expected
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        optimized = onnx.load(options.optimized_model_filepath)
    widths = [
        init.dims[0]
        for node in optimized.graph.node
        if node.op_type == "Conv"
        for init in optimized.graph.initializer
        if init.name == node.input[1]
    ]
    return int(widths[0]) // math.gcd(int(widths[0]), PROBE_CHANNELS) if widths else 1


def runtime_conv_shape(conv: nn.Conv2d, block: int) -> tuple[int, int]:
    """(output channels, input channels per group) of `conv` as ONNX Runtime computes it."""
    out = padded(conv.out_channels, block)
    if conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels:
        return out, 1  # depthwise: one blocked channel per group
    inputs = conv.in_channels
    if conv.groups == 1 and inputs >= block:
        inputs = padded(inputs, block)
    return out, inputs // conv.groups


def runtime_flops(model: nn.Module, example_input: torch.Tensor, block: int | None = None) -> float:
    """FLOPs per image with every convolution padded to ONNX Runtime's channel block.

    The same count as `engine.cost.measure` (2 x multiply-accumulates) when the block is 1.
    """
    block = block or channel_block()
    positions = output_positions(model, example_input[:1])
    total = 0.0
    for module, per_image in positions.items():
        if isinstance(module, nn.Conv2d):
            out, inputs = runtime_conv_shape(module, block)
            total += 2 * math.prod(module.kernel_size) * per_image * out * inputs
        else:
            total += 2 * per_image * module.out_features * module.in_features
    return total

"""The channel padding ONNX Runtime applies, as `engine.runtime` models it, against ORT itself."""

from collections import Counter

import onnx
import onnxruntime as ort
import torch
from torch import nn

from engine.cost import measure
from engine.export import export_onnx
from engine.runtime import channel_block, runtime_conv_shape, runtime_flops


class UnevenNet(nn.Module):
    """Widths no block divides, a block-narrow input, a depthwise and a pointwise conv."""

    def __init__(self):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 24, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(24, 40, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(40, 40, 3, padding=1, groups=40),
            nn.ReLU(),
            nn.Conv2d(40, 16, 1),
            nn.ReLU(),
        )
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc(self.convs(x).mean((2, 3)))


def test_padded_shapes_are_the_ones_onnx_runtime_computes(tmp_path):
    model = UnevenNet().eval()
    example = torch.randn(1, 3, 16, 16)
    path = export_onnx(model, example, tmp_path / "uneven.onnx")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    graph = onnx.load(options.optimized_model_filepath).graph
    dims = {init.name: tuple(init.dims[:2]) for init in graph.initializer}
    ort_shapes = Counter(dims[n.input[1]] for n in graph.node if n.op_type == "Conv")
    block = channel_block()
    ours = Counter(
        runtime_conv_shape(m, block) for m in model.modules() if isinstance(m, nn.Conv2d)
    )
    assert ort_shapes == ours, f"block {block}"


def test_runtime_flops_are_torchs_flops_without_blocks_and_never_fewer_with_them():
    model = UnevenNet().eval()
    example = torch.randn(1, 3, 16, 16)
    flops, _ = measure(model, example)
    assert runtime_flops(model, example, block=1) == flops
    padded = runtime_flops(model, example, block=16)
    # 8 -> 16 outputs at the first two convs, 24 -> 32 and 40 -> 48 after: strictly more work
    assert padded > flops
    assert runtime_flops(model, example, block=8) < padded

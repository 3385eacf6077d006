"""Model factory by name, safe weights loading, and self-describing checkpoints.

>>> from engine.config import ModelSpec
>>> model = create_model(ModelSpec(name="resnet20", weights="random"))
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from pathlib import Path

import torch
import torchvision
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from engine.config import ModelSpec
from engine.errors import ConfigError, WeightsError

ASSETS = Path(__file__).resolve().parent / "assets"
CIFAR_RESNETS = {"resnet20": 3, "resnet32": 5, "resnet56": 9}  # name -> blocks per stage
DEFAULT_MODELS = ["resnet20", "resnet32", "resnet56", "resnet18", "mobilenet_v2", "resnet50"]
METADATA_KEY = "prunescope"


# --- CIFAR-style ResNet (He et al. 2016, three stages of 16/32/64 channels) -------------------


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:  # projection shortcut: prunable, unlike zero-padding
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, blocks_per_stage: int, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        layers, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(blocks_per_stage):
                blocks.append(BasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# --- factory -------------------------------------------------------------------------------------


def available_models() -> list[str]:
    """Sensible defaults first, then every torchvision classification model."""
    names = torchvision.models.list_models(module=torchvision.models)
    return DEFAULT_MODELS + sorted(n for n in names if n not in DEFAULT_MODELS)


def create_model(spec: ModelSpec) -> nn.Module:
    """Build `spec.name` and load the weights `spec.weights` asks for; returns it in eval mode.

    >>> create_model(ModelSpec(name="mobilenet_v2", num_classes=10, weights="random"))
    """
    with torch.random.fork_rng():
        torch.manual_seed(spec.init_seed)
        model = build_architecture(spec.name, spec.num_classes, spec.image_size, spec.weights)
    if spec.weights == "file":
        if not spec.weights_path:
            raise ConfigError("Weights 'file' needs a path to a .safetensors or .pt state dict.")
        apply_state_dict(model, read_state_dict(spec.weights_path))
    elif spec.weights == "builtin":
        path = builtin_weights_path(spec)
        if not path.exists():
            raise WeightsError(
                f"There are no built-in weights for {spec.name} with {spec.num_classes} classes. "
                "Choose pretrained weights, upload a state dict, or train the model here."
            )
        apply_state_dict(model, read_state_dict(path))
    elif spec.weights not in ("random", "pretrained"):
        raise ConfigError(f"Unknown weights source {spec.weights!r}.")
    return model.eval()


def builtin_weights_path(spec: ModelSpec) -> Path:
    return ASSETS / f"{spec.name}_synthetic.safetensors"


def build_architecture(name: str, num_classes: int, image_size: int, weights: str = "random"):
    if name in CIFAR_RESNETS:
        if weights == "pretrained":
            raise WeightsError(f"{name} has no pretrained weights; train it here or upload them.")
        return CifarResNet(CIFAR_RESNETS[name], num_classes)
    if name not in torchvision.models.list_models(module=torchvision.models):
        raise ConfigError(
            f"Unknown model {name!r}: use resnet20/32/56 or a torchvision classification model."
        )
    if weights == "pretrained":
        model = _pretrained_torchvision(name)
        if num_classes != _last_linear(model).out_features:
            _replace_classifier(model, num_classes)
    else:
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    if image_size <= 64:
        _adapt_to_small_inputs(model)
    return model


def _pretrained_torchvision(name: str) -> nn.Module:
    try:
        return torchvision.models.get_model(name, weights="DEFAULT")
    except (OSError, RuntimeError, ValueError) as exc:  # URLError is an OSError
        raise WeightsError(
            f"Could not download pretrained weights for {name} ({exc.__class__.__name__}: {exc}). "
            "This needs internet access; upload a state dict or train the model here instead."
        ) from exc


def _last_linear(model: nn.Module) -> nn.Linear:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError(f"{type(model).__name__} has no Linear classifier to resize.")
    return linears[-1]


def _replace_classifier(model: nn.Module, num_classes: int) -> None:
    name = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, attr)
    setattr(parent, attr, nn.Linear(old.in_features, num_classes))


def _adapt_to_small_inputs(model: nn.Module) -> None:
    """32x32 inputs: drop the stem's stride and max-pool, keeping pretrained weights usable."""
    first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first_conv is not None:
        first_conv.stride = (1, 1)
    if isinstance(getattr(model, "maxpool", None), nn.MaxPool2d):
        model.maxpool = nn.Identity()


# --- weights: safe reading and strict application ----------------------------------------------


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from `.safetensors` or `.pt`/`.pth`; never unpickles code."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"Weights file {path} does not exist.")
    if path.suffix == ".safetensors":
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightsError(f"{path.name} is not a readable safetensors file: {exc}") from exc
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            if "Unsupported global" not in str(exc):  # garbage or a foreign pickle, not a payload
                raise WeightsError(
                    f"{path.name} is not a readable PyTorch file of tensors; Prunescope loads "
                    "weights only and never runs code from a file."
                ) from exc
            raise WeightsError(
                f"Refused {path.name}: loading it would run code stored in the file (a pickled "
                "object, not a plain state dict), and Prunescope never does that. Save the "
                "weights with torch.save(model.state_dict(), ...) or as .safetensors."
            ) from exc
        except Exception as exc:  # corrupt zip, truncated file, not a torch file at all
            raise WeightsError(f"{path.name} is not a readable PyTorch file: {exc}") from exc
    return _unwrap_state_dict(state, path.name)


def _unwrap_state_dict(state, filename: str) -> dict[str, torch.Tensor]:
    if isinstance(state, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not state:
        raise WeightsError(
            f"{filename} does not hold a state dict (a mapping of names to tensors)."
        )
    bad = next((k for k, v in state.items() if not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        raise WeightsError(f"{filename} is not a state dict: entry {bad!r} is not a tensor.")
    if all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def apply_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load strictly; on mismatch name the first offending key."""
    expected = model.state_dict()
    for key, tensor in expected.items():
        if key not in state:
            raise WeightsError(
                f"The state dict does not fit {type(model).__name__}: key {key!r} is missing."
            )
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise WeightsError(
                f"The state dict does not fit {type(model).__name__}: {key!r} has shape "
                f"{tuple(state[key].shape)}, the model expects {tuple(tensor.shape)}."
            )
    extra = next((k for k in state if k not in expected), None)
    if extra is not None:
        raise WeightsError(
            f"The state dict does not fit {type(model).__name__}: unexpected key {extra!r}."
        )
    model.load_state_dict(state, strict=True)


# --- checkpoints: weights + what rebuilds them ---------------------------------------------------


def save_checkpoint(model: nn.Module, path: str | Path, metadata: dict) -> None:
    """Atomically write weights as safetensors with a JSON description of how to rebuild them."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        save_file(state, tmp, metadata={METADATA_KEY: json.dumps(metadata)})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_checkpoint_metadata(path: str | Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata() or {}
    return json.loads(meta.get(METADATA_KEY, "{}"))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

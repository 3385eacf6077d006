"""What the benchmarks share: the parent cache, the results file, the command that reran them."""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.config import DataSpec, ModelSpec, TrainConfig
from engine.models import read_checkpoint_metadata
from engine.train import train_or_reuse_parent

CACHE = Path(__file__).parent / "cache"
PARENTS = Path(__file__).parent / "parents"  # trained parents kept in the repository
RESULTS = Path(__file__).parent / "RESULTS.md"


def parent_checkpoint(data: DataSpec, epochs: int) -> Path:
    """The cached ResNet-20 parent trained `epochs` epochs on `data` (trained or resumed here,
    through the engine's trained-parent cache, kept under bench/cache/)."""
    kept = PARENTS / f"resnet20_{data.name}_{epochs}ep.safetensors"
    if kept.is_file():  # trained once (on a GPU, by train_parent) for exactly these splits
        meta = read_checkpoint_metadata(kept)
        if meta.get("epochs_done") == epochs and meta.get("data") == data.to_dict():
            print(f"parent {kept.name}: test accuracy {meta.get('test_accuracy')}", flush=True)
            return kept
    path = CACHE / f"resnet20_{data.name}_{epochs}ep.safetensors"
    model = ModelSpec(name="resnet20", weights="random")
    train_or_reuse_parent(model, data, TrainConfig(epochs=epochs), path=path)
    meta = read_checkpoint_metadata(path)
    print(f"parent {path.name}: test accuracy {meta.get('test_accuracy')}", flush=True)
    return path


def command_line(module: str, args: argparse.Namespace) -> str:
    """The exact command that reproduces a run, as written into RESULTS.md."""
    parts = [f".venv/bin/python -m bench.{module}"]
    for key, value in vars(args).items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            parts.append(flag)
        elif isinstance(value, list):
            parts.append(f"{flag} {' '.join(map(str, value))}")
        elif value not in (None, False):
            parts.append(f"{flag} {value}")
    return " ".join(parts)

"""Every knob of the engine, as small dataclasses, plus where Prunescope keeps its files."""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from engine.errors import ConfigError, ConstraintError

REPO_ROOT = Path(__file__).resolve().parent.parent


def home_dir() -> Path:
    """Data folder: `$PRUNESCOPE_HOME`, else `data/` in the repository. Created on demand."""
    path = Path(os.environ.get("PRUNESCOPE_HOME") or REPO_ROOT / "data")
    path.mkdir(parents=True, exist_ok=True)
    return path


def db_path() -> Path:
    """The DuckDB results file: `$PRUNESCOPE_DB`, else `prunescope.duckdb` in the data folder."""
    env = os.environ.get("PRUNESCOPE_DB")
    return Path(env) if env else home_dir() / "prunescope.duckdb"


@dataclass(frozen=True)
class ModelSpec:
    name: str = "resnet20"  # torchvision classification model name, or resnet20/32/56 (CIFAR-style)
    num_classes: int = 10  # classifier outputs; never pruned
    image_size: int = 32  # input side in pixels; <= 64 adapts torchvision stems to small images
    in_channels: int = 3  # input channels; never pruned
    weights: str = "builtin"  # builtin | pretrained | file | random
    weights_path: str | None = None  # state dict (.safetensors / .pt) when weights == "file"
    init_seed: int = 0  # seeds initialization, so weights == "random" rebuilds identically

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class DataSpec:
    name: str = "synthetic"  # synthetic | cifar10 | fashionmnist | mnist | imagefolder
    root: str | None = None  # download folder (torchvision sets) or the ImageFolder path
    calib_size: int = 2000  # training images used to recalibrate BatchNorm statistics
    val_size: int = 2000  # training images held out to score subnets (search-validation)
    seed: int = 0  # seeds the splits (and the synthetic images)
    download: bool = True  # torchvision sets: download when missing (needs internet)
    image_size: int = 32  # side of the square images delivered; every set is resized to it
    train_size: int | None = None  # at most this many training images (seeded subset); None: all
    test_size: int | None = None  # at most this many test images (fixed subset); None: all
    flip: bool | None = None  # flip augmentation; None: the dataset's default (off for digits)

    def to_dict(self) -> dict:
        return asdict(self)


METRICS = ("flops", "params", "runtime_flops")
_CONSTRAINT_RE = re.compile(
    r"^\s*(runtime_flops|flops|params)\s*[=<:]?\s*([0-9.eE+-]+)\s*(%?)\s*$", re.I
)


@dataclass(frozen=True)
class Constraint:
    # "flops" (2 x multiply-accumulates per image), "params", or "runtime_flops": FLOPs with
    # convolution channels padded to ONNX Runtime's channel block (what its CPU kernels compute)
    metric: str = "flops"
    value: float = 50.0  # percent of the parent when relative, else an absolute count
    relative: bool = True  # True: value is a percentage of the parent's metric

    def __post_init__(self):
        if self.metric not in METRICS:
            raise ConstraintError(
                f"Constraint metric must be one of {', '.join(METRICS)}, not {self.metric!r}."
            )
        if not self.value > 0:
            raise ConstraintError(f"Constraint value must be positive, got {self.value}.")
        if self.relative and self.value > 100:
            raise ConstraintError(f"A relative constraint is at most 100%, got {self.value}%.")

    @classmethod
    def parse(cls, text: str) -> Constraint:
        """`flops=50%` (half the parent's FLOPs), `params=1.2e6` (absolute), `flops<2e8`,
        `runtime_flops=25%`."""
        match = _CONSTRAINT_RE.match(text or "")
        if not match:
            raise ConstraintError(
                f"Cannot read constraint {text!r}: write e.g. 'flops=50%', 'params=2e6' or "
                "'runtime_flops=25%'."
            )
        metric, number, percent = match.groups()
        try:
            value = float(number)
        except ValueError as exc:
            raise ConstraintError(f"Cannot read the number in constraint {text!r}.") from exc
        return cls(metric=metric.lower(), value=value, relative=bool(percent))

    def limit(self, parent_value: float) -> float:
        """The absolute limit, given the parent's value of the metric."""
        return parent_value * self.value / 100.0 if self.relative else float(self.value)

    def __str__(self) -> str:
        return (
            f"{self.metric}={self.value:g}%" if self.relative else f"{self.metric}={self.value:g}"
        )


@dataclass(frozen=True)
class SearchConfig:
    num_subnets: int = 60  # unique subnets to evaluate in the run (resume tops up to this)
    sampler: str = "guided"  # uniform | random | guided
    seed: int = 0  # seeds the sampler; a resumed run continues the same stream
    round_to: int = 8  # kept channels are multiples of this (ONNX Runtime runs them faster)
    importance: str = "l1"  # channel order within a group: l1 | bn_scale | taylor
    # ONNX Runtime's channel block that runtime FLOPs pad to; None: this machine's (see
    # engine.runtime), fixed when the run starts
    channel_block: int | None = None
    batch_size: int = 256  # images per forward pass during recalibration and evaluation
    constraint: Constraint = field(default_factory=Constraint)

    def __post_init__(self):
        if self.channel_block is not None and not 1 <= self.channel_block <= 1024:
            raise ConfigError(f"A channel block is 1 to 1024 channels, not {self.channel_block}.")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["constraint"] = str(self.constraint)
        return data

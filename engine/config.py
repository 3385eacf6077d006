"""Every knob of the engine, once: small frozen dataclasses with a comment per field.

Pages and the CLI read defaults (`defaults(cls)`) and choice lists from here instead of repeating
them. A run stores its `RunConfig` as JSON; `RunConfig.from_dict` reads it back, and a stored
document of the wrong shape is a `ConfigError`, never a `KeyError`.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from engine.errors import ConfigError, ConstraintError

FLOPS_NOTE = "FLOPs = 2 x multiply-accumulates per image (torch.utils.flop_counter)."

# Choice lists: the first entry is the default wherever a dataclass field below picks one.
WEIGHT_SOURCES = ("builtin", "pretrained", "file", "random")
DATASETS = ("synthetic", "cifar10", "fashionmnist", "mnist", "imagefolder")
# Where search-validation images come from; "auto" is decided from the parent when a run starts
# (engine.parent.validation_source) and acts as "train" when a parent is trained here.
VAL_SOURCES = ("auto", "train", "test", "folder")
VAL_SOURCE_TEXT = {  # how every page, card and CLI line names them
    "auto": "images the parent never saw (decided from where its weights come from)",
    "train": "held-out training images",
    "test": "half of the test split (test figures use the other half)",
    "folder": "the dataset's val/ folder",
}
METRICS = ("flops", "params", "runtime_flops")
DEPTH_TEXT = {  # how deep a subnet was evaluated (engine.rungs), as Explore's legend names it
    "screen": "one-shot screen",
    "val": "full validation",
    "finetune": "short fine-tune",
}
SAMPLERS = ("guided", "uniform", "random")
IMPORTANCE_TEXT = {  # which channels a group keeps at a given width: its most important ones by
    "l1": "weight magnitude (L1 norm)",
    "bn_scale": "BatchNorm scale",
    "taylor": "first-order Taylor: |weight x loss gradient| on calibration images",
    "activation": "activation magnitude on calibration images (Minitron)",
    "gradient": "per-image squared loss gradients x squared weights (Optimal Brain Damage)",
}
IMPORTANCES = tuple(IMPORTANCE_TEXT)
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("onecycle", "cosine")
# A fine-tune's good starting learning rate for each optimizer (a pruned net starts close to a
# good solution, so well below a from-scratch rate)
FINETUNE_LR = {"sgd": 0.02, "adamw": 0.001}


def defaults(cls) -> dict[str, Any]:
    """{field: default} of a dataclass, so widgets and flags never restate a default."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def _build(cls, data: Any, what: str):
    """`cls(**data)` with a clear ConfigError for a stored document of the wrong shape."""
    if not isinstance(data, dict):
        raise ConfigError(f"The stored {what} is not a JSON object: {data!r:.80}.")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"The stored {what} has unknown fields: {', '.join(unknown)}.")
    try:
        return cls(**data)
    except (TypeError, ValueError, ConstraintError) as exc:
        raise ConfigError(f"The stored {what} cannot be read: {exc}") from exc


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

    @classmethod
    def from_dict(cls, data: dict) -> ModelSpec:
        return _build(cls, data, "model specification")


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
    # search-validation: held out of training ("train"), a seeded half of the test split
    # ("test"), an ImageFolder's val/ ("folder"), or "auto": images the parent never saw
    val_from: str = "auto"

    def __post_init__(self):
        if self.val_from not in VAL_SOURCES:
            raise ConfigError(
                f"val_from must be one of {', '.join(VAL_SOURCES)}, not {self.val_from!r}."
            )

    def to_dict(self) -> dict:
        """The fields; `val_from` only when decided, so specs from before it keep their keys."""
        data = asdict(self)
        if data["val_from"] == "auto":
            del data["val_from"]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> DataSpec:
        return _build(cls, data, "data specification")


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
        return cls.of(metric.lower(), number, relative=bool(percent))

    @classmethod
    def of(cls, metric: str, value: str | float, *, relative: bool) -> Constraint:
        """From a form's parts: the number may be text such as '50', '50%' or '2e7'."""
        text = str(value).strip().rstrip("%").strip()
        try:
            number = float(text)
        except ValueError as exc:
            raise ConstraintError(f"Cannot read the number {value!r} of the constraint.") from exc
        return cls(metric=metric, value=number, relative=relative)

    @classmethod
    def from_dict(cls, data) -> Constraint:
        """A stored constraint: its text (`flops=50%`, as runs before RunConfig stored it) or
        its fields."""
        return cls.parse(data) if isinstance(data, str) else _build(cls, data, "constraint")

    def to_dict(self) -> dict:
        return asdict(self)

    def limit(self, parent_value: float) -> float:
        """The absolute limit, given the parent's value of the metric."""
        return parent_value * self.value / 100.0 if self.relative else float(self.value)

    def __str__(self) -> str:
        return (
            f"{self.metric}={self.value:g}%" if self.relative else f"{self.metric}={self.value:g}"
        )


@dataclass(frozen=True)
class SpaceConfig:
    round_to: int = 8  # kept channels are multiples of this (ONNX Runtime runs them faster)
    importance: str = "l1"  # channel order within a group: one of IMPORTANCES

    def __post_init__(self):
        if not 1 <= self.round_to <= 1024:
            raise ConfigError(f"round_to is 1 to 1024 channels, not {self.round_to}.")
        if self.importance not in IMPORTANCES:
            raise ConfigError(
                f"Unknown importance {self.importance!r}: choose one of {', '.join(IMPORTANCES)}."
            )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SpaceConfig:
        return _build(cls, data, "space settings")


@dataclass(frozen=True)
class SearchConfig:
    num_subnets: int = 60  # unique subnets to evaluate in the run (resume tops up to this)
    sampler: str = "guided"  # uniform | random | guided
    seed: int = 0  # seeds the sampler; a resumed run continues the same stream
    constraint: Constraint = field(default_factory=Constraint)  # the budget subnets must meet
    # ONNX Runtime's channel block that runtime FLOPs pad to; None: this machine's (see
    # engine.runtime), fixed when the run starts
    channel_block: int | None = None
    # images per forward pass in recalibration and evaluation: 128 measured fastest here for
    # pruned ResNet-20s (1.2x over 256; bench/RESULTS.md, issue 14)
    batch_size: int = 128
    # Evaluation depth (engine.rungs). Screen: recalibrate and score on this many images first;
    # only candidates near the screened front go on to the full validation split (0: all do).
    screen_images: int = 512
    tune_top: int = 3  # best subnets under the budget given a short distilled fine-tune (0: none)
    tune_images: int = 2560  # training images in that short fine-tune (a fraction of an epoch)

    def __post_init__(self):
        if min(self.screen_images, self.tune_top, self.tune_images) < 0:
            raise ConfigError("Screen images, fine-tuned finalists and their images are >= 0.")
        if self.channel_block is not None and not 1 <= self.channel_block <= 1024:
            raise ConfigError(f"A channel block is 1 to 1024 channels, not {self.channel_block}.")
        if self.sampler not in SAMPLERS:
            raise ConfigError(
                f"Unknown sampler {self.sampler!r}: choose one of {', '.join(SAMPLERS)}."
            )
        if self.num_subnets < 1 or self.batch_size < 1:
            raise ConfigError("A search evaluates at least one subnet, in batches of at least 1.")

    def to_dict(self) -> dict:
        return {**asdict(self), "constraint": self.constraint.to_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> SearchConfig:
        if not isinstance(data, dict):
            return _build(cls, data, "search settings")  # raises
        try:
            constraint = Constraint.from_dict(data.get("constraint", {}))
        except ConstraintError as exc:
            raise ConfigError(f"The stored search settings cannot be read: {exc}") from exc
        legacy = {"screen_images": 0, "tune_top": 0}  # runs stored before rungs: full depth
        return _build(cls, {**legacy, **data, "constraint": constraint}, "search settings")


@dataclass(frozen=True)
class RunConfig:
    """What a run was started with, stored beside it: the parent, its data, the space and the
    search loop. Rebuilding from it gives the same parent and splits."""

    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    space: SpaceConfig = field(default_factory=SpaceConfig)
    search: SearchConfig = field(default_factory=SearchConfig)

    def to_dict(self) -> dict:
        return {
            "model": self.model.to_dict(),
            "data": asdict(self.data),  # val_from always: a run stores where it validated
            "space": self.space.to_dict(),
            "search": self.search.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> RunConfig:
        """Also reads runs stored before SpaceConfig, whose `search` held round_to/importance."""
        if not isinstance(data, dict) or not {"model", "data", "search"} <= set(data):
            raise ConfigError(
                "The stored run configuration lacks its model, data or search settings "
                "(it was not written by this version of Prunescope)."
            )
        search = data["search"]
        space = data.get("space")
        if space is None and isinstance(search, dict):  # the layout before SpaceConfig
            space = {k: search[k] for k in ("round_to", "importance") if k in search}
            search = {k: v for k, v in search.items() if k not in space}
        stored_data = data["data"]
        if isinstance(stored_data, dict) and "val_from" not in stored_data:
            stored_data = {**stored_data, "val_from": "train"}  # runs before it held val out
        return cls(
            model=ModelSpec.from_dict(data["model"]),
            data=DataSpec.from_dict(stored_data),
            space=SpaceConfig.from_dict(space if space is not None else {}),
            search=SearchConfig.from_dict(search),
        )


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30  # passes over the training split
    lr: float = 0.1  # peak learning rate (one-cycle) or starting rate (cosine)
    optimizer: str = "sgd"  # sgd (momentum 0.9, nesterov) | adamw
    weight_decay: float = 5e-4  # L2 on weights; also what makes magnitude ranking meaningful
    batch_size: int = 128  # images per step
    label_smoothing: float = 0.0  # softens targets; 0 keeps plain cross-entropy
    augment: bool = True  # random crop with padding + horizontal flip where labels allow it
    seed: int = 0  # shuffling and initialization
    schedule: str | None = None  # onecycle | cosine; None: one-cycle for SGD, cosine for AdamW

    def __post_init__(self):
        if self.epochs < 1:
            raise ConfigError(f"Training needs at least one epoch, got {self.epochs}.")
        if not self.lr > 0:
            raise ConfigError(f"The learning rate must be positive, got {self.lr}.")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be 'sgd' or 'adamw', not {self.optimizer!r}.")
        if self.schedule is not None and self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {SCHEDULES}, not {self.schedule!r}.")

    @property
    def lr_schedule(self) -> str:
        return self.schedule or ("cosine" if self.optimizer == "adamw" else "onecycle")

    def to_dict(self) -> dict:
        """The fields; `schedule` only when set, so recipes from before it keep their keys."""
        data = asdict(self)
        if data["schedule"] is None:
            del data["schedule"]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        return _build(cls, data, "training configuration")


def _finetune_training() -> TrainConfig:
    return TrainConfig(epochs=5, lr=FINETUNE_LR["sgd"], schedule="cosine")


# Keys of the flat recipe layout stored before FinetuneRecipe contained a TrainConfig.
_FLAT_TRAIN_KEYS = ("epochs", "optimizer", "lr", "weight_decay", "batch_size", "augment", "seed")
_FLAT_EXTRAS = ("schedule", "train_images")  # stored beside that layout, never knobs


@dataclass(frozen=True)
class FinetuneRecipe:
    # the training run: 5 epochs, SGD from lr 0.02 on a cosine schedule, crop + flip
    train: TrainConfig = field(default_factory=_finetune_training)
    distill: bool = False  # add a KL term towards the parent's softened outputs
    temperature: float = 4.0  # softens both distributions in the KL term
    alpha: float = 0.5  # loss = alpha * T^2 * KL + (1 - alpha) * cross-entropy, when distilling

    def __post_init__(self):
        if not 0 <= self.alpha <= 1:
            raise ConfigError(
                f"The distillation weight alpha is between 0 and 1, got {self.alpha}."
            )
        if not self.temperature > 0:
            raise ConfigError(f"The temperature must be positive, got {self.temperature}.")

    @classmethod
    def with_training(cls, **fields) -> FinetuneRecipe:
        """A recipe from flat fields: TrainConfig's (over the fine-tune defaults) and its own."""
        own = {k: fields.pop(k) for k in ("distill", "temperature", "alpha") if k in fields}
        return cls(train=dataclasses.replace(_finetune_training(), **fields), **own)

    def to_dict(self) -> dict:
        return {
            "train": self.train.to_dict(),
            "distill": self.distill,
            "temperature": self.temperature,
            "alpha": self.alpha,
        }

    @classmethod
    def from_dict(cls, data: dict) -> FinetuneRecipe:
        """Also reads the flat layout of fine-tunes stored before the recipe held a TrainConfig."""
        if not isinstance(data, dict):
            return _build(cls, data, "fine-tune recipe")  # raises
        if "train" not in data:
            flat = {k: v for k, v in data.items() if k not in _FLAT_EXTRAS}
            try:
                return cls.with_training(**flat)
            except TypeError as exc:
                raise ConfigError(f"The stored fine-tune recipe cannot be read: {exc}") from exc
        return _build(
            cls, {**data, "train": TrainConfig.from_dict(data["train"])}, "fine-tune recipe"
        )

    def key(self) -> dict:
        """The identity of the recipe, in the flat layout fine-tune ids were always hashed from
        (fields added since appear only when they differ from their default)."""
        t = self.train
        key = {k: getattr(t, k) for k in _FLAT_TRAIN_KEYS}
        key |= {"distill": self.distill, "temperature": self.temperature, "alpha": self.alpha}
        if t.label_smoothing:
            key["label_smoothing"] = t.label_smoothing
        if t.schedule != "cosine":
            key["schedule"] = t.schedule
        return key

    def describe(self) -> str:
        """One line: '5 epochs · SGD lr 0.02 · distilled T=4 α=0.5'."""
        t = self.train
        parts = [
            f"{t.epochs} epoch{'s' if t.epochs != 1 else ''}",
            f"{'AdamW' if t.optimizer == 'adamw' else t.optimizer.upper()} lr {t.lr:g}",
        ]
        if self.distill:
            parts.append(f"distilled T={self.temperature:g} α={self.alpha:g}")
        if not t.augment:
            parts.append("no augmentation")
        return " · ".join(parts)


@dataclass(frozen=True)
class ExportConfig:
    int8: bool = False  # also write an INT8 model (ONNX Runtime static quantization)
    runs: int = 20  # timed runs per latency figure (median reported)
    threads: int | None = None  # ONNX Runtime intra-op threads; None: torch's thread count
    int8_calibration_images: int = 512  # calibration images the INT8 ranges are measured on

    def __post_init__(self):
        if self.runs < 1:
            raise ConfigError(f"Latency needs at least one timed run, got {self.runs}.")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"ONNX Runtime needs at least one thread, got {self.threads}.")

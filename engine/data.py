"""Datasets as in-memory uint8 tensors with deterministic fit / val / calib splits.

Every set arrives as 3-channel square images (grayscale replicated). The splits come from
`DataSpec.seed`; where search-validation (`val`) comes from is `DataSpec.val_from`:

- "train": held out of the training set (`fit` is the rest) — for a parent that never trained on
  those images (random weights, or a parent Prunescope trained on this very split);
- "test": a seeded half of the test split, whose other half stays the reporting `test` split —
  for a parent brought from elsewhere, which may have trained on every training image;
- "folder": an ImageFolder's own `val/` folder (beside `train/` and `test/`).

`calib` is drawn from `fit` to recalibrate BatchNorm (statistics only, no labels).

>>> splits = load_dataset(DataSpec(name="synthetic"))
>>> val_x, val_y = splits.tensors("val")  # normalised float32, cached
>>> for x, y in splits.batches("fit", 128, augment=True, shuffle=True, seed=epoch): ...
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from engine import synthetic
from engine.config import DATASETS, DataSpec
from engine.errors import DataError

# torchvision class name, and whether horizontal flips preserve labels.
TORCHVISION_SETS = {
    "cifar10": ("CIFAR10", True),
    "fashionmnist": ("FashionMNIST", True),
    "mnist": ("MNIST", False),
}
CROP_PADDING = 4  # augmentation: random crops from images padded by this many pixels
CACHED_SPLITS = ("calib", "val", "test")  # tensors() keeps these (small, used per subnet)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
FOLDER_TEST_EVERY = 5  # one-tree ImageFolder: 1 in 5 images (by a hash of its path) is test
DECODE_WORKERS = min(8, os.cpu_count() or 1)  # threads decoding ImageFolder files
_CACHE_VERSION = 1  # bump when the cached ImageFolder format changes
_RESIZE_CHUNK = 4096  # images resized at once


@dataclass(eq=False)
class Splits:
    name: str  # dataset name, as in DataSpec.name
    class_names: list[str]
    mean: tuple[float, float, float]  # per channel, of the fit images scaled to [0, 1]
    std: tuple[float, float, float]
    train_x: torch.Tensor  # uint8 [N, 3, H, W]: the whole training set
    train_y: torch.Tensor  # int64 [N]
    test_x: torch.Tensor  # uint8 [M, 3, H, W]
    test_y: torch.Tensor  # int64 [M]
    fit_idx: torch.Tensor  # indices into train used for training (all train minus val)
    val_idx: torch.Tensor  # search-validation: indices into the val pool; scores subnets
    calib_idx: torch.Tensor  # BatchNorm recalibration images, drawn from fit_idx
    flip: bool  # whether horizontal flips preserve labels (used by augmentation)
    val_from: str = "train"  # train | test | folder: where search-validation images come from
    val_pool: tuple[torch.Tensor, torch.Tensor] | None = None  # (x, y) val_idx indexes; None: train
    test_idx: torch.Tensor | None = None  # indices into test reported on; None: all of it
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[-1])

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 images -> float32, zero mean and unit std per channel (over fit)."""
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return (x.float() / 255.0 - mean) / std

    def _source(self, split: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if split == "test":
            idx = self.test_idx if self.test_idx is not None else torch.arange(len(self.test_y))
            return self.test_x, self.test_y, idx
        if split == "val" and self.val_pool is not None:
            return *self.val_pool, self.val_idx
        indices = {"fit": self.fit_idx, "val": self.val_idx, "calib": self.calib_idx}
        if split not in indices:
            raise ValueError(f"unknown split {split!r}: use fit, val, calib or test")
        return self.train_x, self.train_y, indices[split]

    def tensors(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole split as (normalised float32 x, int64 y); calib/val/test are cached."""
        if split in self._cache:
            return self._cache[split]
        x, y, idx = self._source(split)
        out = (self.normalize(x[idx]), y[idx])
        if split in CACHED_SPLITS:
            self._cache[split] = out
        return out

    def sample(self, split: str, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """A seeded random `n` images of a split (the split's own order follows the dataset's,
        often sorted by class, so its first images are no sample)."""
        x, y = self.tensors(split)
        if n >= len(y):
            return x, y
        pick = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:n]
        return x[pick], y[pick]

    def batches(
        self,
        split: str,
        batch_size: int,
        *,
        augment: bool = False,
        shuffle: bool = False,
        seed: int = 0,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Normalised float batches; the last may be short. `seed` drives shuffle and augment."""
        x, y, idx = self._source(split)
        gen = torch.Generator().manual_seed(seed)
        if shuffle:
            idx = idx[torch.randperm(len(idx), generator=gen)]
        for start in range(0, len(idx), batch_size):
            batch = idx[start : start + batch_size]
            xb = self.normalize(x[batch])
            yield (self.augment(xb, gen) if augment else xb), y[batch]

    def augment(self, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        """Random crop from a zero-padded (mean-coloured) image, plus a flip if `self.flip`."""
        n, c, h, w = x.shape
        pad = CROP_PADDING
        padded = F.pad(x, (pad, pad, pad, pad))
        dy, dx = (torch.randint(0, 2 * pad + 1, (n, 1), generator=gen) for _ in range(2))
        rows = (dy + torch.arange(h))[:, None, :, None]
        cols = (dx + torch.arange(w))[:, None, None, :]
        out = padded[
            torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols
        ]
        if self.flip:
            flipped = torch.rand(n, generator=gen) < 0.5
            out = torch.where(flipped[:, None, None, None], out.flip(3), out)
        return out


def class_count(spec: DataSpec) -> int:
    """The number of classes, known without decoding an image (checks that need no data)."""
    if spec.name == "synthetic":
        return len(synthetic.CLASS_NAMES)
    if spec.name in TORCHVISION_SETS:
        return 10
    if spec.name == "imagefolder":
        train_dir, _ = _folders(spec.root)
        if not (classes := _classes(train_dir)):
            raise DataError(f"No class sub-folders under {train_dir}: expected one per class.")
        return len(classes)
    raise DataError(f"Unknown dataset {spec.name!r}: choose one of {', '.join(DATASETS)}.")


def load_dataset(spec: DataSpec) -> Splits:
    """Load `spec.name` and split it. Raises DataError for anything the user must fix."""
    if spec.image_size < 8:
        raise DataError(f"image_size must be at least 8 pixels, got {spec.image_size}.")
    if spec.val_from == "auto":  # nothing known about a parent: hold validation out of training
        spec = dataclasses.replace(spec, val_from="train")
    if spec.name == "synthetic":
        train = synthetic.generate(spec.train_size or synthetic.TRAIN_SIZE, spec.seed, stream=0)
        test = synthetic.generate(spec.test_size or synthetic.TEST_SIZE, spec.seed, stream=1)
        classes, flip = list(synthetic.CLASS_NAMES), synthetic.FLIP_PRESERVES_LABELS
        val = None
    elif spec.name in TORCHVISION_SETS:
        classes, train, test = _load_torchvision(spec)
        flip, val = TORCHVISION_SETS[spec.name][1], None
    elif spec.name == "imagefolder":
        classes, train, test, val = _load_imagefolder(
            spec.root, spec.image_size, with_val=spec.val_from == "folder"
        )
        flip = True  # natural photos; set DataSpec.flip=False for text, digits, arrows...
    else:
        raise DataError(f"Unknown dataset {spec.name!r}: choose one of {', '.join(DATASETS)}.")
    if spec.val_from == "folder" and (spec.name != "imagefolder" or val is None):
        raise DataError(
            f"val_from='folder' needs an ImageFolder with train/, val/ and test/ folders; "
            f"{spec.name} {spec.root or ''} has none. Use val_from='test' or 'train'."
        )
    size = spec.image_size
    train = _prepare(*train, size, spec.train_size, spec.seed)
    test = _prepare(*test, size, spec.test_size, 0)  # the same test images whatever the seed
    flip = flip if spec.flip is None else spec.flip
    if spec.val_from == "folder":
        return _split(spec, classes, train, test, flip, pool=_prepare(*val, size, None, 0))
    return _split(spec, classes, train, test, flip)


def _split(spec: DataSpec, classes, train, test, flip: bool, pool=None) -> Splits:
    """Hold search-validation out of `train` (val_from "train"), or take it from a seeded half
    of `test` ("test", the other half reported on) or from `pool` ("folder")."""
    n = len(train[1])
    if spec.val_size < 0 or spec.calib_size < 1:
        raise DataError("val_size must be >= 0 and calib_size >= 1.")
    held = spec.val_size if spec.val_from == "train" else 0
    if n - held < spec.calib_size:
        raise DataError(
            f"{spec.name} has {n} training images: too few to hold out val_size={spec.val_size} "
            f"and still draw calib_size={spec.calib_size} from the rest. Lower val_size or "
            "calib_size, or use a larger training set."
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(spec.seed))
    rest = perm[held:]
    fit_idx = rest.sort().values
    val_idx, test_idx = perm[:held].sort().values, None
    if spec.val_from == "test":
        if len(test[1]) < 2:
            raise DataError(f"{spec.name} has too few test images to split in two halves.")
        halves = torch.randperm(len(test[1]), generator=torch.Generator().manual_seed(spec.seed))
        half = len(halves) // 2
        val_idx, test_idx = (
            halves[:half][: spec.val_size].sort().values,
            halves[half:].sort().values,
        )
        pool = test
    elif spec.val_from == "folder":
        val_idx = torch.randperm(len(pool[1]), generator=torch.Generator().manual_seed(spec.seed))
        val_idx = val_idx[: spec.val_size].sort().values
    mean, std = _channel_stats(train[0], fit_idx)
    return Splits(
        name=spec.name,
        class_names=list(classes),
        mean=mean,
        std=std,
        train_x=train[0],
        train_y=train[1],
        test_x=test[0],
        test_y=test[1],
        fit_idx=fit_idx,
        val_idx=val_idx,
        calib_idx=rest[: spec.calib_size].sort().values,
        flip=flip,
        val_from=spec.val_from,
        val_pool=pool,
        test_idx=test_idx,
    )


def _channel_stats(x: torch.Tensor, idx: torch.Tensor) -> tuple[tuple, tuple]:
    """Exact per-channel mean and std of x[idx] / 255, from 256-bin histograms."""
    levels = torch.arange(256, dtype=torch.float64) / 255.0
    means, stds = [], []
    for c in range(x.shape[1]):
        counts = torch.bincount(x[idx, c].reshape(-1), minlength=256).double()
        mean = (counts * levels).sum() / counts.sum()
        var = (counts * (levels - mean) ** 2).sum() / counts.sum()
        means.append(float(mean))
        stds.append(max(float(var.sqrt()), 1e-3))  # a constant channel must not divide by 0
    return tuple(means), tuple(stds)


def _prepare(x, y, size: int, cap: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """At most `cap` images (a seeded subset, in order), resized to size x size."""
    if cap is not None and cap < len(y):
        keep = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:cap]
        x, y = x[keep.sort().values], y[keep.sort().values]
    if x.shape[-2:] == (size, size):
        return x, y
    out = torch.empty((len(x), x.shape[1], size, size), dtype=torch.uint8)
    for i in range(0, len(x), _RESIZE_CHUNK):  # bilinear, antialiased, in chunks to bound memory
        chunk = F.interpolate(
            x[i : i + _RESIZE_CHUNK].float(),
            size=(size, size),
            mode="bilinear",
            antialias=True,
            align_corners=False,
        )
        out[i : i + _RESIZE_CHUNK] = chunk.round().clamp(0, 255).to(torch.uint8)
    return out, y


def _load_torchvision(spec: DataSpec):
    """CIFAR-10 / (Fashion-)MNIST through torchvision; MNISTs padded to 32 px, 3 channels."""
    from torchvision import datasets  # deferred: importing torchvision is slow

    cls_name, _ = TORCHVISION_SETS[spec.name]
    from engine.workspace import datasets_dir  # here: the workspace module builds on this one

    root = Path(spec.root).expanduser() if spec.root else datasets_dir()
    try:
        parts = [
            getattr(datasets, cls_name)(str(root), train=t, download=spec.download)
            for t in (True, False)
        ]
    except Exception as exc:  # URLError, RuntimeError, corrupt archives: all mean "not here"
        first = (
            f"Could not download {cls_name} into {root} ({exc})."
            if spec.download
            else f"{cls_name} is not in {root} and downloading is off."
        )
        raise DataError(
            f"{first} Connect to the internet and retry with download on, copy torchvision's "
            f"{cls_name} files into {root}, or save the images as class folders and choose the "
            "'imagefolder' dataset with that path."
        ) from exc
    out = []
    for part in parts:
        x = torch.as_tensor(part.data)
        if x.ndim == 3:  # MNISTs: [N, 28, 28] -> [N, 3, 32, 32]
            x = F.pad(x, (2, 2, 2, 2))[:, None].expand(-1, 3, -1, -1)
        else:  # CIFAR: [N, 32, 32, 3]
            x = x.permute(0, 3, 1, 2)
        out.append((x.contiguous(), torch.as_tensor(part.targets, dtype=torch.int64)))
    return list(parts[0].classes), out[0], out[1]


def _folders(root_arg: str | None) -> tuple[Path, Path]:
    """(training folder, root) of an ImageFolder; DataError when there is no such folder."""
    if not root_arg:
        raise DataError("The imagefolder dataset needs a root: a folder of class sub-folders.")
    root = Path(root_arg).expanduser().resolve()
    if not root.is_dir():
        raise DataError(
            f"There is no folder at {root}: give the path of a folder of class "
            "sub-folders of images (or of train/ and test/ folders of them)."
        )
    return (root / "train" if (root / "train").is_dir() else root), root


def _classes(train_dir: Path) -> list[str]:
    return sorted(d.name for d in os.scandir(train_dir) if d.is_dir() and d.name[0] != ".")


def _load_imagefolder(root_arg: str | None, size: int, *, with_val: bool = False):
    """`root/train/<class>/*` + `root/test|val/<class>/*`, or one `root/<class>/*` tree; with
    `with_val`, also `root/val/<class>/*` beside a test/ folder (None when there is none).

    Decoded tensors are cached under `<home>/cache/`, keyed by the folder, its file count and
    latest modification time, and the image size; a second load decodes nothing.
    """
    train_dir, root = _folders(root_arg)
    test_dir = next((root / d for d in ("test", "val") if (root / d).is_dir()), None)
    classes = _classes(train_dir)
    items, stamp = _scan(train_dir, classes)
    if not items:
        raise DataError(
            f"No images found under {train_dir}: expected class sub-folders of "
            f"image files ({', '.join(IMAGE_EXTENSIONS)})."
        )
    val_items = None
    if with_val and (root / "val").is_dir() and (root / "test").is_dir() and train_dir != root:
        val_items, val_stamp = _scan(root / "val", classes)
        stamp += val_stamp  # only then: files cached before val/ was read keep their key
    if test_dir is not None and train_dir != root:
        test_items, test_stamp = _scan(test_dir, classes)
        stamp += test_stamp
    else:  # one tree: an image is test when a hash of its relative path says so
        digests = [hashlib.sha1(os.path.relpath(p, root).encode()).digest() for p, _ in items]
        held = [d[0] % FOLDER_TEST_EVERY == 0 for d in digests]
        test_items = [it for it, h in zip(items, held, strict=True) if h]
        items = [it for it, h in zip(items, held, strict=True) if not h]
    key = hashlib.sha1(f"{_CACHE_VERSION}|{root}|{stamp}|{size}".encode()).hexdigest()[:16]
    from engine.workspace import cache_dir  # here: the workspace module builds on this one

    cache = cache_dir() / f"imagefolder-{root.name}-{key}.pt"
    try:
        data = torch.load(cache, weights_only=True)
    except Exception:  # missing or damaged: decode and (re)write
        data = {"train": _decode_all(items, size), "test": _decode_all(test_items, size)}
        if val_items is not None:
            data["val"] = _decode_all(val_items, size)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
        torch.save(data, tmp)
        os.replace(tmp, cache)  # atomic: readers never see half a file
    (train_x, train_y, bad), (test_x, test_y, test_bad) = data["train"], data["test"]
    if bad + test_bad:
        warnings.warn(
            f"Skipped {bad + test_bad} unreadable image file(s) under {root}.", stacklevel=3
        )
    if not len(train_y) or not len(test_y):
        raise DataError(
            f"Too few readable images under {root} for both a training and a test "
            "set: add images, or use train/ and test/ sub-folders."
        )
    val = data["val"][:2] if "val" in data else None
    return classes, (train_x, train_y), (test_x, test_y), val


def _scan(folder: Path, classes: list[str]) -> tuple[list[tuple[str, int]], tuple[int, int]]:
    """(path, label) of the images under folder/<class>/, and (their count, latest mtime)."""
    for entry in os.scandir(folder):
        if entry.is_dir() and entry.name[0] != "." and entry.name not in classes:
            raise DataError(f"{entry.path} is a class the training folder does not have.")
    items, latest = [], 0
    for label, name in enumerate(classes):
        for dirpath, dirnames, names in os.walk(folder / name, followlinks=True):
            dirnames.sort()
            latest = max(latest, os.stat(dirpath).st_mtime_ns)
            for fname in sorted(n for n in names if n.lower().endswith(IMAGE_EXTENSIONS)):
                path = os.path.join(dirpath, fname)
                latest = max(latest, os.stat(path).st_mtime_ns)
                items.append((path, label))
    return items, (len(items), latest)


def _decode(path: str, size: int) -> np.ndarray | None:
    """One image as uint8 [size, size, 3] (centre crop to square, bilinear), None if unreadable."""
    try:
        with Image.open(path) as img:
            img.draft("RGB", (size, size))  # JPEG: decode at a reduced scale, much faster
            img = img.convert("RGB")
            if img.size != (size, size):
                img = ImageOps.fit(img, (size, size), Image.Resampling.BILINEAR)
            return np.asarray(img)
    except Exception:  # truncated, corrupt or not an image: counted and skipped
        return None


def _decode_all(items: list[tuple[str, int]], size: int):
    """Decode (path, label) pairs on a few threads -> (uint8 [N,3,S,S], labels, skipped)."""
    with ThreadPoolExecutor(DECODE_WORKERS) as pool:
        arrays = list(pool.map(lambda item: _decode(item[0], size), items))
    kept = [(a, y) for a, (_, y) in zip(arrays, items, strict=True) if a is not None]
    x = np.stack([a for a, _ in kept]) if kept else np.zeros((0, size, size, 3), np.uint8)
    y = torch.tensor([y for _, y in kept], dtype=torch.int64)
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), y, len(items) - len(kept)

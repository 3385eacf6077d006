"""Datasets: synthetic determinism, split invariants, normalisation, augmentation, ImageFolder
(both layouts, the decode cache, bad input) and clean failures for torchvision sets offline."""

import numpy as np
import pytest
import torch
from PIL import Image

from engine import data, synthetic
from engine.config import DataSpec
from engine.data import load_dataset
from engine.errors import DataError

SMALL = dict(train_size=1000, test_size=200, val_size=100, calib_size=50)


@pytest.fixture(scope="module")
def splits():
    return load_dataset(DataSpec(name="synthetic", seed=3, **SMALL))


def test_synthetic_is_deterministic_by_seed():
    x1, y1 = synthetic.generate(64, seed=1)
    x2, y2 = synthetic.generate(64, seed=1)
    x3, _ = synthetic.generate(64, seed=2)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(x1, x3)
    test_x, _ = synthetic.generate(64, seed=1, stream=1)
    assert not torch.equal(x1, test_x)


def test_synthetic_shapes_and_labels(splits):
    assert splits.train_x.shape == (1000, 3, 32, 32) and splits.train_x.dtype == torch.uint8
    assert splits.test_x.shape == (200, 3, 32, 32) and splits.test_y.dtype == torch.int64
    assert splits.num_classes == 10 and splits.image_size == 32 and splits.flip
    assert len(set(splits.class_names)) == 10
    for y in (splits.train_y, splits.test_y):
        assert y.min() >= 0 and y.max() < 10
        assert torch.bincount(y, minlength=10).min() > 0


def test_splits_are_disjoint_and_sized(splits):
    fit, val, calib = (set(i.tolist()) for i in (splits.fit_idx, splits.val_idx, splits.calib_idx))
    assert len(val) == 100 and len(calib) == 50 and len(fit) == 900
    assert not fit & val and calib <= fit
    assert fit | val == set(range(1000))
    again = load_dataset(DataSpec(name="synthetic", seed=3, **SMALL))
    assert torch.equal(again.val_idx, splits.val_idx) and torch.equal(again.train_x, splits.train_x)


def test_too_small_for_split_sizes():
    with pytest.raises(DataError, match="too few"):
        load_dataset(
            DataSpec(name="synthetic", train_size=100, test_size=20, val_size=80, calib_size=50)
        )


def test_tensors_are_normalised_and_cached(splits):
    x, y = splits.tensors("fit")
    assert x.dtype == torch.float32 and x.shape == (900, 3, 32, 32) and len(y) == 900
    assert torch.allclose(x.mean((0, 2, 3)), torch.zeros(3), atol=1e-3)
    assert torch.allclose(x.std((0, 2, 3)), torch.ones(3), atol=1e-3)
    assert splits.tensors("val")[0] is splits.tensors("val")[0]
    assert torch.equal(splits.tensors("calib")[1], splits.train_y[splits.calib_idx])


def test_batches_with_augmentation(splits):
    plain = list(splits.batches("val", 32))
    augmented = list(splits.batches("val", 32, augment=True, seed=1))
    assert [len(y) for _, y in plain] == [32, 32, 32, 4]
    for (xp, yp), (xa, ya) in zip(plain, augmented, strict=True):
        assert xa.shape == xp.shape and torch.equal(ya, yp)
    assert not torch.equal(plain[0][0], augmented[0][0])
    shuffled = torch.cat([y for _, y in splits.batches("fit", 128, shuffle=True, seed=5)])
    assert sorted(shuffled.tolist()) == sorted(splits.train_y[splits.fit_idx].tolist())
    again = torch.cat([y for _, y in splits.batches("fit", 128, shuffle=True, seed=5)])
    assert torch.equal(shuffled, again)


def _write_pngs(folder, classes=("cat", "dog", "eel"), per_class=12, size=20):
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 80, (size, size + 4, 3)) + 80 * c
            mode = "L" if i == 0 else "RGB"  # grayscale files must come out as RGB too
            Image.fromarray(pixels.astype(np.uint8)).convert(mode).save(folder / name / f"{i}.png")


def _folder_spec(root, **kw):
    return DataSpec(name="imagefolder", root=str(root), val_size=4, calib_size=4, **kw)


def test_imagefolder_train_test_layout(tmp_path):
    _write_pngs(tmp_path / "train")
    _write_pngs(tmp_path / "test", per_class=3)
    splits = load_dataset(_folder_spec(tmp_path, image_size=16))
    assert splits.class_names == ["cat", "dog", "eel"]
    assert splits.train_x.shape == (36, 3, 16, 16) and splits.test_x.shape == (9, 3, 16, 16)
    assert splits.test_y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    # Brightness encodes the class in _write_pngs; the decode must keep it.
    means = [splits.train_x[splits.train_y == c].float().mean() for c in range(3)]
    assert means[0] < means[1] < means[2]


def test_imagefolder_single_tree_cache_and_corrupt_file(tmp_path, monkeypatch):
    _write_pngs(tmp_path / "photos", per_class=20)
    (tmp_path / "photos" / "cat" / "broken.png").write_bytes(b"not a png")
    spec = _folder_spec(tmp_path / "photos")
    with pytest.warns(UserWarning, match="Skipped 1 unreadable"):
        first = load_dataset(spec)
    assert len(first.train_y) + len(first.test_y) == 60 and len(first.test_y) > 0
    monkeypatch.setattr(data, "_decode", lambda *a: pytest.fail("decoded despite the cache"))
    with pytest.warns(UserWarning):
        second = load_dataset(spec)
    assert torch.equal(first.train_x, second.train_x) and torch.equal(first.test_y, second.test_y)


def test_imagefolder_bad_paths(tmp_path):
    with pytest.raises(DataError, match="no folder at"):
        load_dataset(_folder_spec(tmp_path / "missing"))
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match="No images found"):
        load_dataset(_folder_spec(tmp_path / "empty"))
    with pytest.raises(DataError, match="needs a root"):
        load_dataset(DataSpec(name="imagefolder"))


@pytest.mark.parametrize("name", ["cifar10", "mnist"])
def test_torchvision_sets_fail_cleanly_when_missing(tmp_path, name):
    with pytest.raises(DataError, match="not in .* downloading is off") as err:
        load_dataset(DataSpec(name=name, root=str(tmp_path), download=False))
    assert "imagefolder" in str(err.value)


def test_unknown_dataset():
    with pytest.raises(DataError, match="Unknown dataset"):
        load_dataset(DataSpec(name="imagenet22k"))


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_torchvision_sets_become_3x32x32(monkeypatch, tmp_path, name):
    from torchvision import datasets

    class Fake:  # stands in for the downloaded torchvision dataset
        classes = [f"c{i}" for i in range(10)]

        def __init__(self, root, train, download):
            n = 30 if train else 10
            shape = (n, 28, 28) if name == "mnist" else (n, 32, 32, 3)
            self.data = torch.full(shape, 7, dtype=torch.uint8)
            self.data = self.data if name == "mnist" else self.data.numpy()
            self.targets = [i % 10 for i in range(n)]

    monkeypatch.setattr(datasets, data.TORCHVISION_SETS[name][0], Fake)
    splits = load_dataset(DataSpec(name=name, root=str(tmp_path), val_size=5, calib_size=5))
    assert splits.train_x.shape == (30, 3, 32, 32) and splits.test_x.shape == (10, 3, 32, 32)
    assert splits.flip == (name != "mnist") and splits.num_classes == 10
    if name == "mnist":  # zero padding of 2 px around the 28 x 28 digit
        assert splits.train_x[:, :, :2].max() == 0 and splits.train_x[:, :, 2:30, 2:30].min() == 7

"""A procedural 10-class image set: needs no download, yet is hard enough to make pruning hurt.

Each image holds one shape (the label) drawn at a random position, size, rotation and stroke
width, in a colour only a little different from a shaded background, over clutter strokes and
arcs that look like pieces of other classes, plus pixel noise. Every shape is mirror-symmetric
up to rotation, so horizontal flips preserve labels. There is no label noise: whatever accuracy
a network misses is genuine difficulty. Everything is vectorised numpy, deterministic by seed.

>>> x, y = generate(100, seed=0)  # uint8 [100, 3, 32, 32], int64 [100]
"""

from __future__ import annotations

import numpy as np
import torch

CLASS_NAMES = (
    "disc",
    "ring",
    "square outline",
    "triangle",
    "cross",
    "stripes",
    "checker",
    "target",
    "crescent",
    "dots",
)
FLIP_PRESERVES_LABELS = True  # every class is mirror-symmetric up to rotation

# Difficulty knobs (pixel units unless said otherwise).
IMAGE_SIZE = 32  # images are square, this many pixels a side
TRAIN_SIZE = 20_000  # default number of training images
TEST_SIZE = 4_000  # default number of test images
CENTER_JITTER = 5.0  # shape centre lies within this of the image centre, per axis
SCALE_RANGE = (5.5, 12.0)  # shape "radius"
THICKNESS_RANGE = (1.2, 2.6)  # stroke width of outlines and rings
CONTRAST_RANGE = (0.15, 0.45)  # colour distance between shape and background (0..1 scale)
GRADIENT_MAX = 0.25  # background brightness ramp across the image
CLUTTER_RANGE = (1, 4)  # clutter strokes/arcs per image (inclusive)
CLUTTER_CONTRAST = (0.08, 0.35)  # colour distance of clutter from the background
OCCLUDER_PROB = 0.3  # chance of one more stroke drawn over the shape
NOISE_STD = (0.02, 0.07)  # per-image range of Gaussian pixel-noise std
_CHUNK = 2048  # images rendered at once (bounds memory)


def _aa(d: np.ndarray) -> np.ndarray:
    """Coverage of a signed distance in pixels (negative inside), anti-aliased over one pixel."""
    return np.clip(0.5 - d, 0.0, 1.0)


def _band(x: np.ndarray, period: np.ndarray) -> np.ndarray:
    """Signed distance to alternating bands of width period/2 along x."""
    return (np.abs(np.mod(x / period, 1.0) - 0.5) - 0.25) * period


def _shape_sdf(label: int, u, v, s, t, rng) -> np.ndarray:
    """Signed distance (px) of class `label` in local coordinates u, v; s size, t stroke width."""
    r = np.hypot(u, v)
    box = np.maximum(np.abs(u), np.abs(v))
    if label == 0:  # disc
        return r - s
    if label == 1:  # ring
        return np.abs(r - s) - t / 2
    if label == 2:  # square outline
        return np.abs(box - 0.85 * s) - t / 2
    if label == 3:  # filled equilateral triangle, circumradius 1.2 s
        phi = np.mod(np.arctan2(v, u) + np.pi / 3, 2 * np.pi / 3) - np.pi / 3
        return r * np.cos(phi) - 0.6 * s
    if label == 4:  # plus-shaped cross
        w = 0.75 * t
        return np.minimum(
            np.maximum(np.abs(u) - w, np.abs(v) - s), np.maximum(np.abs(v) - w, np.abs(u) - s)
        )
    if label == 5:  # parallel bars inside a disc
        period = np.maximum(3.0, s * rng.uniform(0.45, 0.6, s.shape).astype(np.float32))
        return np.maximum(r - s, _band(u, period))
    if label == 6:  # checkerboard inside a square
        period = np.maximum(3.0, s * rng.uniform(0.4, 0.55, s.shape).astype(np.float32))
        bu, bv = _band(u, period), _band(v, period)
        checks = np.minimum(np.maximum(bu, bv), np.maximum(-bu, -bv))
        return np.maximum(box - 0.8 * s, checks)
    if label == 7:  # target: central disc inside a ring
        return np.minimum(r - 0.4 * s, np.abs(r - s) - t / 2)
    if label == 8:  # crescent: a disc with an offset disc bitten out
        return np.maximum(r - s, 0.8 * s - np.hypot(u - 0.45 * s, v))
    if label == 9:  # 3x3 grid of dots
        gap = 0.62 * s
        qu = np.clip(np.round(u / gap), -1, 1) * gap
        qv = np.clip(np.round(v / gap), -1, 1) * gap
        return np.hypot(u - qu, v - qv) - np.maximum(1.2, 0.17 * s)
    raise ValueError(f"no synthetic class {label}")


def _clutter_sdf(px, py, n: int, rng) -> np.ndarray:
    """Distance field of one random line segment or arc per image, [n, S, S]."""
    t, cx, cy, ang, length, span = (
        _uniform(rng, lo, hi, n)
        for lo, hi in (
            THICKNESS_RANGE,
            (0, IMAGE_SIZE),
            (0, IMAGE_SIZE),
            (0, 2 * np.pi),
            (5, 14),
            (np.pi / 3, 5 * np.pi / 6),
        )
    )
    is_arc = rng.random(n) < 0.5
    dx, dy = px - cx, py - cy
    a_cos, a_sin = np.cos(ang), np.sin(ang)
    out = np.empty((n, IMAGE_SIZE, IMAGE_SIZE), np.float32)
    # Segment of `length` from (cx, cy) along ang.
    m = ~is_arc
    along = np.clip(dx[m] * a_cos[m] + dy[m] * a_sin[m], 0, length[m])
    out[m] = np.hypot(dx[m] - along * a_cos[m], dy[m] - along * a_sin[m]) - t[m] / 2
    # Arc of radius `length` around (cx, cy), from ang to ang + span (< 180 degrees).
    m = is_arc
    b_cos, b_sin = np.cos(ang[m] + span[m]), np.sin(ang[m] + span[m])
    inside = (a_cos[m] * dy[m] - a_sin[m] * dx[m] >= 0) & (dx[m] * b_sin - dy[m] * b_cos >= 0)
    ring = np.abs(np.hypot(dx[m], dy[m]) - length[m]) - t[m] / 2
    out[m] = np.where(inside, ring, np.float32(1e3))
    return out


def _uniform(rng, lo: float, hi: float, n: int) -> np.ndarray:
    """n float32 draws shaped [n, 1, 1] to broadcast over pixels."""
    return rng.uniform(lo, hi, (n, 1, 1)).astype(np.float32)


def _paint(img, alpha, rng, contrast_range, ref) -> None:
    """Blend a colour at a random distance from `ref` [n,3] into img [n,3,S,S] where alpha."""
    n = len(img)
    direction = rng.normal(size=(n, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    colour = np.clip(ref + direction * rng.uniform(*contrast_range, (n, 1)), 0, 1)
    img += alpha[:, None] * (colour.astype(np.float32)[:, :, None, None] - img)


def _render(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n, size = len(labels), IMAGE_SIZE
    py, px = np.mgrid[0:size, 0:size].astype(np.float32)[:, None] + np.float32(0.5)
    # Shaded background.
    base = rng.uniform(0.15, 0.85, (n, 3))
    ramp_dir = _uniform(rng, 0, 2 * np.pi, n)
    ramp = ((px - size / 2) * np.cos(ramp_dir) + (py - size / 2) * np.sin(ramp_dir)) / size
    ramp *= _uniform(rng, 0, 2 * GRADIENT_MAX, n)
    tint = rng.uniform(0.5, 1.0, (n, 3, 1, 1)).astype(np.float32)
    img = base.astype(np.float32)[:, :, None, None] + ramp[:, None] * tint
    # Clutter behind the shape.
    count = rng.integers(CLUTTER_RANGE[0], CLUTTER_RANGE[1] + 1, n)
    for k in range(CLUTTER_RANGE[1]):
        alpha = _aa(_clutter_sdf(px, py, n, rng)) * (k < count)[:, None, None]
        _paint(img, alpha, rng, CLUTTER_CONTRAST, base)
    # The labelled shape.
    cx, cy = (_uniform(rng, -CENTER_JITTER, CENTER_JITTER, n) + size / 2 for _ in range(2))
    theta = _uniform(rng, 0, 2 * np.pi, n)
    s = _uniform(rng, *SCALE_RANGE, n)
    t = _uniform(rng, *THICKNESS_RANGE, n)
    u = (px - cx) * np.cos(theta) + (py - cy) * np.sin(theta)
    v = (py - cy) * np.cos(theta) - (px - cx) * np.sin(theta)
    sdf = np.empty((n, size, size), np.float32)
    for label in range(len(CLASS_NAMES)):
        m = labels == label
        if m.any():
            sdf[m] = _shape_sdf(label, u[m], v[m], s[m], t[m], rng)
    _paint(img, _aa(sdf), rng, CONTRAST_RANGE, base)
    # An occluding stroke over some shapes, then sensor noise.
    alpha = _aa(_clutter_sdf(px, py, n, rng)) * (rng.random(n) < OCCLUDER_PROB)[:, None, None]
    _paint(img, alpha, rng, CLUTTER_CONTRAST, base)
    sigma = rng.uniform(*NOISE_STD, (n, 1, 1, 1)).astype(np.float32)
    img += rng.standard_normal(img.shape, dtype=np.float32) * sigma
    return np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)


def generate(n: int, seed: int = 0, stream: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` class-balanced images: uint8 [n,3,32,32] and int64 labels; `stream` 0 train, 1 test."""
    rng = np.random.default_rng([seed, stream])
    labels = rng.permutation(np.arange(n) % len(CLASS_NAMES))
    chunks = [_render(labels[i : i + _CHUNK], rng) for i in range(0, n, _CHUNK)]
    images = (
        np.concatenate(chunks) if chunks else np.zeros((0, 3, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    )
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))

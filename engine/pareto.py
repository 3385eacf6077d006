"""Accuracy-vs-cost trade-offs over evaluated subnets: Pareto front, knee, best under a budget.

Lower x (FLOPs or params) and higher y (accuracy) are better. A row is *valid* when x and y are
finite numbers and its `error` (when the frame has that column) is null; invalid rows never
appear in any answer. Ties are broken by `subnet_id` (lowest wins), or by row order when the
frame has no such column. Returned rows keep the input's index labels.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _columns(df: pd.DataFrame, x: str, y: str) -> tuple[np.ndarray, ...]:
    """Positions of the valid rows, and their x, y and tie-break ids as float arrays."""
    xs = df[x].to_numpy(dtype=float, na_value=np.nan)
    ys = df[y].to_numpy(dtype=float, na_value=np.nan)
    ok = np.isfinite(xs) & np.isfinite(ys)
    if "error" in df.columns:
        ok &= df["error"].isna().to_numpy()
    if "subnet_id" in df.columns:
        ids = df["subnet_id"].to_numpy(dtype=float, na_value=np.inf)
    else:
        ids = np.arange(len(df), dtype=float)
    pos = np.flatnonzero(ok)
    return pos, xs[pos], ys[pos], ids[pos]


def pareto_front(df: pd.DataFrame, x: str = "flops", y: str = "accuracy") -> pd.DataFrame:
    """The valid rows no other valid row dominates, sorted by x ascending.

    Row a dominates row b when a.x <= b.x and a.y >= b.y, strictly better in one. Among rows with
    equal x only the best y is kept; among exact duplicates only the lowest subnet_id. So x and y
    both strictly increase along the returned front. O(n log n): one sort and a running maximum.

    >>> df = pd.DataFrame({"subnet_id": [1, 2, 3], "flops": [1.0, 2.0, 3.0],
    ...                    "accuracy": [0.5, 0.4, 0.9]})
    >>> pareto_front(df)["subnet_id"].tolist()
    [1, 3]
    """
    pos, xs, ys, ids = _columns(df, x, y)
    order = np.lexsort((ids, -ys, xs))  # x ascending, then y descending, then id ascending
    ys_sorted = ys[order]
    best_before = np.concatenate(([-np.inf], np.maximum.accumulate(ys_sorted)[:-1]))
    keep = order[ys_sorted > best_before]  # strictly better than everything cheaper or equal
    return df.iloc[pos[keep]]


def knee(front: pd.DataFrame, x: str = "flops", y: str = "accuracy") -> pd.Series | None:
    """The front's best trade-off point, or None for an empty front.

    Both axes are scaled to [0, 1]; the knee is the interior point farthest from the chord
    joining the front's first and last points, on the side of the ideal corner (low x, high y).
    A point below the chord is the worst trade-off, not a knee, so distance is signed. With only
    1 or 2 points there is no interior: the best-y point is returned (the last point of a front).
    Pass the output of `pareto_front`; invalid rows are ignored.
    """
    pos, xs, ys, ids = _columns(front, x, y)
    if len(pos) == 0:
        return None
    if len(pos) < 3:
        return front.iloc[pos[np.lexsort((ids, xs, -ys))[0]]]
    order = np.lexsort((ids, -ys, xs))
    pos, xs, ys = pos[order], xs[order], ys[order]
    u = (xs - xs.min()) / (np.ptp(xs) or 1.0)
    v = (ys - ys.min()) / (np.ptp(ys) or 1.0)
    dx, dy = u[-1] - u[0], v[-1] - v[0]
    length = np.hypot(dx, dy)
    if length == 0:
        return front.iloc[pos[-1]]
    # Signed perpendicular distance: positive left of the chord's direction, i.e. above it.
    signed = (dx * (v - v[0]) - dy * (u - u[0])) / length
    return front.iloc[pos[1 + int(np.argmax(signed[1:-1]))]]


def best_under_budget(
    df: pd.DataFrame, budget: float, x: str = "flops", y: str = "accuracy"
) -> pd.Series | None:
    """The highest-y valid row with x <= budget (ties: lowest x, then lowest subnet_id).

    None when no valid row fits the budget.
    """
    pos, xs, ys, ids = _columns(df, x, y)
    fits = xs <= budget
    if not fits.any():
        return None
    pos, xs, ys, ids = pos[fits], xs[fits], ys[fits], ids[fits]
    return df.iloc[pos[np.lexsort((ids, xs, -ys))[0]]]


def best_pick(df: pd.DataFrame, budget: float, x: str = "flops") -> pd.Series | None:
    """The subnet to take under the budget, judged at the deepest evaluation there is
    (engine.rungs): the best after the search's short fine-tune, else the best on the full
    validation split, else the best screened one. None when nothing valid fits."""
    if "tuned_accuracy" in df.columns:
        pick = best_under_budget(df, budget, x, "tuned_accuracy")
        if pick is not None:
            return pick
    if "depth" in df.columns:
        pick = best_under_budget(df[df["depth"].fillna("val") != "screen"], budget, x)
        if pick is not None:
            return pick
    return best_under_budget(df, budget, x)

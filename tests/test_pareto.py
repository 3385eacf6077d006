"""Pareto front, knee and best-under-budget: hand-built frames with known answers, plus a
10,000-row property test of the dominance invariants."""

import numpy as np
import pandas as pd
import pytest

from engine.pareto import best_under_budget, knee, pareto_front


def frame(points, errors=None):
    """Subnets numbered 1.. from (flops, accuracy) pairs; params follow flops."""
    df = pd.DataFrame(points, columns=["flops", "accuracy"], dtype=float)
    df.insert(0, "subnet_id", np.arange(1, len(df) + 1))
    df["params"] = (df["flops"] * 10).astype("Int64")
    df["error"] = errors if errors is not None else [None] * len(df)
    return df


def ids(rows):
    return rows["subnet_id"].tolist()


def test_front_excludes_dominated_points_and_sorts_by_x():
    df = frame([(3, 0.9), (1, 0.5), (2, 0.4), (2, 0.7), (4, 0.85), (5, 0.95)])
    front = pareto_front(df)
    assert ids(front) == [2, 4, 1, 6]
    assert front["flops"].is_monotonic_increasing
    assert front["accuracy"].is_monotonic_increasing
    assert list(front.columns) == list(df.columns)
    assert front.index.tolist() == [1, 3, 0, 5]  # input labels kept


def test_front_ties_keep_best_y_then_lowest_id():
    df = frame([(2, 0.6), (2, 0.8), (2, 0.8), (1, 0.3), (3, 0.8), (3, 0.9)])
    # equal x: best y; equal x and y: lowest id; (3, 0.8) is dominated by (2, 0.8)
    assert ids(pareto_front(df)) == [4, 2, 6]
    shuffled = df.sample(frac=1, random_state=0)
    assert ids(pareto_front(shuffled)) == [4, 2, 6]


def test_front_ignores_nan_and_error_rows():
    df = frame(
        [(1, 0.5), (0.5, np.nan), (0.1, 0.99), (np.nan, 0.99), (2, 0.8)],
        errors=[None, None, "CUDA out of memory", None, None],
    )
    assert ids(pareto_front(df)) == [1, 5]
    assert ids(pareto_front(df.drop(columns="error"))) == [3]  # no error column: all count


def test_front_on_other_axis_and_empty_frames():
    df = frame([(1, 0.5), (2, 0.9)])
    df["params"] = pd.array([30, 20], dtype="Int64")
    assert ids(pareto_front(df, x="params")) == [2]
    assert pareto_front(df.iloc[:0]).empty
    assert pareto_front(frame([(1, np.nan)])).empty


def test_knee_of_l_shaped_front_is_the_corner():
    front = pareto_front(frame([(0, 0.0), (1, 0.9), (5, 0.95), (10, 1.0)]))
    assert knee(front)["subnet_id"] == 2


def test_knee_small_fronts():
    assert knee(pareto_front(frame([]))) is None
    assert knee(pareto_front(frame([(1, 0.5)])))["subnet_id"] == 1
    assert knee(pareto_front(frame([(1, 0.5), (2, 0.9)])))["subnet_id"] == 2


def test_knee_ignores_points_below_the_chord():
    # Convex front: every interior point lies below the chord; the one nearest it wins.
    front = pareto_front(frame([(0, 0.0), (5, 0.1), (9, 0.6), (10, 1.0)]))
    assert knee(front)["subnet_id"] == 3


def test_best_under_budget():
    df = frame(
        [(1, 0.5), (3, 0.8), (2, 0.8), (2, 0.8), (5, 0.99), (0.5, 0.9)],
        errors=[None, None, None, None, None, "trace failed"],
    )
    assert best_under_budget(df, 3)["subnet_id"] == 3  # tie on y: lowest x, then lowest id
    assert best_under_budget(df, 5)["subnet_id"] == 5  # the budget is inclusive
    assert best_under_budget(df, 1.5)["subnet_id"] == 1
    assert best_under_budget(df, 0.9) is None  # only the failed subnet fits
    assert best_under_budget(df.iloc[:0], 10) is None


def random_subnets(n, seed=0):
    rng = np.random.default_rng(seed)
    flops = rng.uniform(1e6, 1e8, n).round(-5)  # rounding makes ties in x
    accuracy = (0.9 - 0.5 * np.exp(-flops / 2e7) + rng.normal(0, 0.05, n)).round(3)
    accuracy[rng.random(n) < 0.02] = np.nan
    error = np.where(rng.random(n) < 0.02, "OOM", None)
    df = pd.DataFrame(
        {
            "subnet_id": np.arange(1, n + 1),
            "flops": flops,
            "params": (flops / 10).astype(np.int64),
            "accuracy": accuracy,
            "error": error,
        }
    )
    return df.sample(frac=1, random_state=seed)  # ids out of order


@pytest.mark.parametrize("seed", [0, 1])
def test_random_front_dominance_invariants(seed):
    df = random_subnets(10_000, seed)
    front = pareto_front(df)
    valid = df[df["accuracy"].notna() & df["error"].isna()]
    assert len(front) > 5
    assert front.index.isin(valid.index).all()
    assert front["flops"].is_unique and front["flops"].is_monotonic_increasing
    assert front["accuracy"].is_monotonic_increasing

    fx, fy = front["flops"].to_numpy()[:, None], front["accuracy"].to_numpy()[:, None]
    vx, vy = valid["flops"].to_numpy()[None, :], valid["accuracy"].to_numpy()[None, :]
    # No front point is dominated by any valid row.
    dominated = (vx <= fx) & (vy >= fy) & ((vx < fx) | (vy > fy))
    assert not dominated.any()
    # Every valid row off the front is weakly dominated by a front point (ties lose to the
    # front's lower subnet_id).
    covered = ((fx <= vx) & (fy >= vy)).any(axis=0)
    assert covered.all()
    duplicates = valid.merge(front, on=["flops", "accuracy"], suffixes=("", "_front"))
    assert (duplicates["subnet_id"] >= duplicates["subnet_id_front"]).all()

    best = best_under_budget(df, 3e7)
    fits = valid[valid["flops"] <= 3e7]
    assert best["accuracy"] == fits["accuracy"].max()
    assert best.name in front.index  # the best under a budget is always on the front
    assert knee(front).name in front.index[1:-1]

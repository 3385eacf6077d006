"""Server time to re-render Explore after the FLOP budget slider moves, with 10,000 subnets.

    .venv/bin/python bench/bench_explore.py [--subnets 10000] [--moves 15]

Fills a DuckDB file with one ResNet-20 run (its real search space and cost model; accuracies
drawn from a saturating curve plus noise) through `Store.add_subnet`, keeps it under
bench/cache/ for the next time, then drives pages/explore.py with Streamlit's AppTest: each
slider move is one `run()`, timed. Prints figures; asserts nothing. Target: median < 300 ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from engine.config import ModelSpec, RunConfig  # noqa: E402
from engine.errors import ConfigError  # noqa: E402
from engine.space import encoding_hash  # noqa: E402
from engine.store import Store  # noqa: E402
from tests.factories import record_run  # noqa: E402 - the run factory the tests use

CACHE = REPO / "bench" / "cache"
TARGET_MS = 300.0


def _space_and_cost():
    import torch

    from engine.cost import CostModel
    from engine.models import create_model
    from engine.space import build_space

    model = create_model(ModelSpec(name="resnet20", weights="random"))
    example = torch.randn(1, 3, 32, 32)
    space = build_space(model, example, round_to=8, importance="l1")
    return space, CostModel(model, space, example)


def fill(path: Path, n: int, seed: int = 0) -> str:
    """One run with `n` unique subnets; returns its run id."""
    space, cost = _space_and_cost()
    rng = np.random.default_rng(seed)
    choices = [space.choices(i) for i in range(len(space.groups))]
    encodings: dict[str, list[int]] = {}
    while len(encodings) < n:
        enc = [int(c[rng.integers(len(c))]) for c in choices]
        encodings.setdefault(encoding_hash(enc), enc)
    matrix = np.array(list(encodings.values()))
    flops, params = cost.costs(matrix)
    ratio = flops / cost.parent_flops
    accuracy = np.clip(0.91 - 0.55 * np.exp(-5 * ratio) + rng.normal(0, 0.015, n), 0.05, 0.95)
    with Store(path) as store:
        run_id = record_run(
            store,
            space=space.to_dict(),
            parent_flops=cost.parent_flops,
            parent_params=cost.parent_params,
            num_subnets=n,
        )
        samplers = rng.choice(["uniform", "random", "guided"], size=n, p=[0.1, 0.3, 0.6])
        for i, (h, enc) in enumerate(encodings.items()):
            store.add_subnet(
                run_id,
                {
                    "hash": h,
                    "encoding": enc,
                    "flops": float(flops[i]),
                    "params": int(params[i]),
                    "accuracy": float(accuracy[i]),
                    "loss": float(1 - accuracy[i]),
                    "sampler": str(samplers[i]),
                    "seconds_materialize": 0.05,
                    "seconds_recalibrate": 0.2,
                    "seconds_evaluate": 0.1,
                    "error": None,
                },
            )
        store.set_status(run_id, "done")
    return run_id


def _complete(run) -> bool:
    """Whether a cached run holds a whole RunConfig (files from before it lacked `data`)."""
    try:
        RunConfig.from_dict(run["config"])
    except ConfigError:
        return False
    return True


def database(n: int) -> Path:
    """The cached filled file, made on first use (Store.add_subnet commits row by row)."""
    path = CACHE / f"explore-{n}.duckdb"
    if path.exists():
        with Store(path, read_only=True) as store:
            runs = store.runs()
            if len(runs) == 1 and runs["evaluated"].iloc[0] == n and _complete(runs.iloc[0]):
                return path
        path.unlink()
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    start = time.perf_counter()
    fill(tmp, n)
    os.replace(tmp, path)
    print(f"filled {path.name}: {n} subnets in {time.perf_counter() - start:.0f} s")
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subnets", type=int, default=10_000)
    parser.add_argument("--moves", type=int, default=15)
    args = parser.parse_args(argv)

    path = database(args.subnets)
    os.environ["PRUNESCOPE_DB"] = str(path)
    os.environ["PRUNESCOPE_HOME"] = tempfile.mkdtemp(prefix="prunescope-bench-")
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120).run()
    start = time.perf_counter()
    at.switch_page("pages/explore.py").run()
    cold = time.perf_counter() - start
    assert not at.exception, at.exception
    slider = next(s for s in at.slider if s.label == "FLOP budget")
    values = [int(v) for v in np.linspace(20, 95, args.moves)]
    times, shown = [], set()
    for value in values:
        slider = next(s for s in at.slider if s.label == "FLOP budget")
        slider.set_value(value)
        start = time.perf_counter()
        at.run()
        times.append(1000 * (time.perf_counter() - start))
        if at.exception:
            print(at.exception)
            return 1
        shown.add(at.metric[0].value)
    times.sort()
    median = statistics.median(times)
    p90 = times[min(len(times) - 1, int(0.9 * len(times)))]
    print(
        f"Explore with {args.subnets} subnets: first render {1000 * cold:.0f} ms; "
        f"slider move re-render median {median:.0f} ms, p90 {p90:.0f} ms, "
        f"max {times[-1]:.0f} ms over {len(times)} moves ({len(shown)} distinct best subnets); "
        f"target < {TARGET_MS:.0f} ms: {'met' if median < TARGET_MS else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Runs made for tests and benchmarks: a real search on tiny data, or a run recorded as a search
would leave it with made-up scores (fast, any size). Plain functions, so `bench/` uses them too;
tests/conftest.py wraps them as fixtures."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.config import Constraint, DataSpec, ModelSpec, RunConfig, SearchConfig
from engine.space import encoding_hash
from engine.store import Store

TINY_DATA = DataSpec(train_size=600, test_size=200, calib_size=128, val_size=128)
TINY_MODEL = ModelSpec(name="resnet20", weights="random")
# ResNet-20's channel groups as the engine stores them (names and widths; order is identity here).
GROUPS = [
    ("conv1", 16),
    ("layer1.0.conv1", 16),
    ("layer1.1.conv1", 16),
    ("layer1.2.conv1", 16),
    ("layer2.0.conv1", 32),
    ("layer2.0.shortcut.0", 32),
    ("layer2.1.conv1", 32),
    ("layer2.2.conv1", 32),
    ("layer3.0.conv1", 64),
    ("layer3.0.shortcut.0", 64),
    ("layer3.1.conv1", 64),
    ("layer3.2.conv1", 64),
]
PARENT_FLOPS, PARENT_PARAMS, PARENT_ACCURACY = 81_626_368.0, 272_474, 0.912
SAMPLERS = ("uniform", "random", "guided")


def real_run(
    path: str | Path,
    *,
    data: DataSpec = TINY_DATA,
    search: SearchConfig | None = None,
) -> str:
    """A real search (random ResNet-20, 3 uniform subnets at 60% FLOPs unless `search` says
    otherwise) on tiny data; returns its run id."""
    from engine.search import run_search  # deferred: bench_explore needs only the recorder

    search = search or SearchConfig(
        num_subnets=3, sampler="uniform", constraint=Constraint.parse("flops=60%")
    )
    with Store(path) as store:
        return run_search(store, RunConfig(model=TINY_MODEL, data=data, search=search))


def identity_space(groups=GROUPS) -> dict:
    """A stored space whose channel order is the identity (for recorded runs)."""
    return {
        "groups": [
            {"name": n, "size": s, "order": list(range(s)), "members": [n]} for n, s in groups
        ],
        "round_to": 8,
        "importance": "l1",
        "classifier": "fc",
    }


def record_run(
    store: Store,
    *,
    space: dict,
    parent_flops: float,
    parent_params: int,
    num_subnets: int,
    constraint: str = "flops=50%",
    parent_accuracy: float = PARENT_ACCURACY,
    block: int | None = None,
    data: DataSpec | None = None,
) -> str:
    """A run recorded as `start_run` records one (complete RunConfig, budget fixed), without
    loading a parent; runtime FLOPs only when a channel `block` is given (as runs since them)."""
    limit = Constraint.parse(constraint)
    config = RunConfig(
        model=TINY_MODEL,
        data=data or DataSpec(calib_size=256, val_size=256),
        search=SearchConfig(num_subnets=num_subnets, constraint=limit, channel_block=block),
    )
    return store.create_run(
        model=config.model.name,
        weights=config.model.weights,
        dataset=config.data.name,
        constraint_text=str(limit),
        sampler=config.search.sampler,
        num_subnets=num_subnets,
        parent_accuracy=parent_accuracy,
        parent_loss=0.3,
        parent_flops=parent_flops,
        parent_params=parent_params,
        budget=limit.limit(parent_flops),
        config=config.to_dict(),
        space=space,
        channel_block=block,
        parent_runtime_flops=block and parent_flops,
    )


def padded_share(widths, sizes, block) -> float:
    """The made-up FLOPs model of `make_run`, with widths padded to multiples of `block`."""
    return float(np.mean((np.ceil(widths / block) * block / sizes) ** 2))


def make_run(path, n=40, status="done", seed=0, block=None, rungs=False) -> str:
    """One ResNet-20 run with n realistic subnets (and one that failed), as a search would leave
    it; without runtime FLOPs (as runs before them) unless a channel `block` is given. `rungs`:
    every fourth subnet only screened, and the two best fully validated under the budget given
    the short fine-tune, the second best gaining more (so it is the pick)."""
    rng = np.random.default_rng(seed)
    sizes = np.array([s for _, s in GROUPS])
    with Store(path) as store:
        run_id = record_run(
            store,
            space=identity_space(),
            parent_flops=PARENT_FLOPS,
            parent_params=PARENT_PARAMS,
            num_subnets=n,
            block=block,
        )
        encodings = [np.full(12, 8), sizes // 2, sizes]  # the smallest, half and full width
        encodings += [rng.integers(1, sizes // 8 + 1) * 8 for _ in range(n - 3)]
        for i, enc in enumerate(encodings):
            ratio = float(np.mean((enc / sizes) ** 2))
            store.add_subnet(
                run_id,
                {
                    "hash": encoding_hash(enc),
                    "encoding": [int(w) for w in enc],
                    "flops": ratio * PARENT_FLOPS,
                    "params": int(ratio * PARENT_PARAMS),
                    "runtime_flops": block and padded_share(enc, sizes, block) * PARENT_FLOPS,
                    "accuracy": float(0.91 - 0.5 * np.exp(-5 * ratio) + rng.normal(0, 0.01)),
                    "loss": 0.4,
                    "sampler": SAMPLERS[i % 3],
                }
                | (
                    {"depth": "screen" if i % 4 == 3 else "val", "screen_accuracy": 0.5}
                    if rungs
                    else {}
                ),
            )
        if rungs:
            rows, budget = store.subnets(run_id), store.run(run_id)["budget"]
            full = rows[(rows["depth"] == "val") & (rows["flops"] <= budget)]
            top = full.sort_values("accuracy", ascending=False).head(2)
            for gain, row in zip((0.01, 0.05), top.itertuples(), strict=True):
                store.set_tuned_accuracy(run_id, row.subnet_id, row.accuracy + gain)
        store.add_subnet(
            run_id,
            {
                "hash": "oom",
                "encoding": [8] * 12,
                "flops": 1e6,
                "params": 1000,
                "error": "RuntimeError: out of memory",
            },
        )
        if status != "running":
            store.set_status(run_id, status)
    return run_id

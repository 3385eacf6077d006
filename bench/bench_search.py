"""Cost and quality of Prunescope's search on ResNet-20 (issue 3).

    .venv/bin/python -m bench.bench_search --data-root ../shared/datasets/cifar10 --epochs 10
    .venv/bin/python -m bench.bench_search --parent engine/assets/resnet20_synthetic.safetensors

Prints (and with --write appends to bench/RESULTS.md):
- cost: subnets evaluated per minute, the share of each evaluation spent outside forward passes
  (materialize + copy + bookkeeping; target <= 25%), and the evaluation time of a ~30%-FLOPs
  subnet as a share of the parent's (target <= 60%);
- quality: with the same number of evaluations, the best search-validation accuracy under 25%,
  50% and 75% of the parent's FLOPs for the guided sampler, the uniform sweep and random search.

The parent is trained once with the engine's own `train_parent` and cached in bench/cache/.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from engine.config import Constraint, DataSpec, ModelSpec, SearchConfig
from engine.evaluate import SubnetEvaluator
from engine.models import read_checkpoint_metadata
from engine.parent import load_parent
from engine.pareto import best_under_budget
from engine.search import search
from engine.store import Store
from engine.train import TrainConfig, train_parent

CACHE = Path(__file__).parent / "cache"
BUDGETS = (25, 50, 75)


def parent_checkpoint(data: DataSpec, epochs: int) -> Path:
    path = CACHE / f"resnet20_{data.name}_{epochs}ep.safetensors"
    if not path.exists() or read_checkpoint_metadata(path).get("epochs_done") != epochs:
        print(f"training (or resuming) the parent for {epochs} epochs -> {path}", flush=True)
        result = train_parent(
            ModelSpec(name="resnet20", weights="random"), data, TrainConfig(epochs=epochs), path
        )
        print(
            f"  test accuracy {result['test_accuracy']:.4f} in {result['seconds']:.0f}s", flush=True
        )
    return path


def cost_figures(parent, repeats: int) -> dict:
    evaluator = SubnetEvaluator(parent)
    full = parent.space.full()
    target = 0.3 * parent.cost.parent_flops
    ratios = sorted(
        {parent.space.uniform(r / 100) for r in range(5, 100)},
        key=lambda e: abs(parent.cost.cost(e)[0] - target),
    )
    small = ratios[0]
    rows_full, rows_small, walls = [], [], []
    for _ in range(repeats):
        for enc, sink in ((full, rows_full), (small, rows_small)):
            start = time.perf_counter()
            sink.append(evaluator(enc, "bench"))
            walls.append((time.perf_counter() - start, sink[-1]))
    forward = [r["seconds_recalibrate"] + r["seconds_evaluate"] for _, r in walls]
    outside = [w - f for (w, _), f in zip(walls, forward, strict=True)]

    def med(rows):
        return statistics.median(r["seconds_recalibrate"] + r["seconds_evaluate"] for r in rows)

    return {
        "small_flops_share": parent.cost.cost(small)[0] / parent.cost.parent_flops,
        "eval_share": med(rows_small) / med(rows_full),
        "outside_share": sum(outside) / sum(w for w, _ in walls),
        "per_minute": 60 * len(walls) / sum(w for w, _ in walls),
    }


def quality_table(parent, model: ModelSpec, data: DataSpec, subnets: int, seed: int) -> dict:
    table = {}
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "bench.duckdb") as store:
        for sampler in ("guided", "uniform", "random"):
            for pct in BUDGETS if sampler != "uniform" else (100,):
                cfg = SearchConfig(
                    num_subnets=subnets,
                    sampler=sampler,
                    seed=seed,
                    constraint=Constraint("flops", pct, True),
                )
                run_id = store.create_run(
                    model=model.name,
                    weights="bench",
                    dataset=data.name,
                    constraint_text=str(cfg.constraint),
                    sampler=sampler,
                    num_subnets=subnets,
                    parent_accuracy=parent.accuracy,
                    parent_loss=parent.loss,
                    parent_flops=parent.cost.parent_flops,
                    parent_params=parent.cost.parent_params,
                    budget=parent.cost.parent_flops * pct / 100,
                    config={"search": cfg.to_dict()},
                    space=parent.space.to_dict(),
                )
                start = time.perf_counter()
                search(store, run_id, parent, cfg)
                rows = store.subnets(run_id)
                print(
                    f"  {sampler:8s} budget {pct:3d}%: {len(rows)} subnets in {time.perf_counter() - start:.0f}s",
                    flush=True,
                )
                for budget in BUDGETS if sampler == "uniform" else (pct,):
                    best = best_under_budget(rows, parent.cost.parent_flops * budget / 100)
                    table[(sampler, budget)] = (
                        None if best is None else best["accuracy"],
                        len(rows),
                    )
    return table


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--data-root", help="CIFAR-10 as an ImageFolder (train/ and test/); default: built-in set"
    )
    ap.add_argument("--epochs", type=int, default=10, help="parent training epochs (cached)")
    ap.add_argument("--subnets", type=int, default=40, help="evaluations per search")
    ap.add_argument(
        "--repeats", type=int, default=3, help="timed evaluations per subnet for the cost figures"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--parent", help="use this trained checkpoint instead of training one")
    args = ap.parse_args()
    data = DataSpec(name="imagefolder", root=args.data_root) if args.data_root else DataSpec()
    checkpoint = Path(args.parent) if args.parent else parent_checkpoint(data, args.epochs)
    model = ModelSpec(name="resnet20", weights="file", weights_path=str(checkpoint))
    parent = load_parent(model, data)
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads; "
        f"torch {torch.__version__}"
    )
    print(
        f"parent: resnet20 on {data.name}, val accuracy {parent.accuracy:.4f}, "
        f"{parent.cost.parent_flops / 1e6:.1f} MFLOPs (2 x MACs); calib {data.calib_size}, val {data.val_size} images"
    )
    cost = cost_figures(parent, args.repeats)
    print("\n## Cost of search")
    print(
        f"subnets evaluated per minute (parent and ~30% subnet alternating): {cost['per_minute']:.1f}"
    )
    print(
        f"share of evaluation time outside forward passes: {100 * cost['outside_share']:.1f}% (target <= 25%)"
    )
    print(
        f"evaluation time of a {100 * cost['small_flops_share']:.0f}%-FLOPs subnet vs the parent: "
        f"{100 * cost['eval_share']:.0f}% (target <= 60%)"
    )
    print(
        f"\n## Quality of search ({args.subnets} evaluations each; best search-validation accuracy)"
    )
    table = quality_table(parent, model, data, args.subnets, args.seed)
    print("| budget | guided | uniform sweep | random |\n|---|---|---|---|")
    for b in BUDGETS:
        cells = []
        for s in ("guided", "uniform", "random"):
            acc, n = table[(s, b)]
            cells.append(
                "-"
                if acc is None
                else f"{100 * acc:.2f}%" + (f" ({n} unique)" if s == "uniform" else "")
            )
        print(f"| {b}% FLOPs | " + " | ".join(cells) + " |")
    wins = all((table[("guided", b)][0] or 0) > (table[("uniform", b)][0] or 0) for b in BUDGETS)
    print(f"\nguided beats the uniform sweep at every budget: {'yes' if wins else 'NO'}")


if __name__ == "__main__":
    main()

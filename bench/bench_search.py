"""Cost and quality of Prunescope's search on ResNet-20 (issue 3).

    .venv/bin/python -m bench.bench_search --data-root ../shared/datasets/cifar10 --epochs 24 --subnets 40 --write
    .venv/bin/python -m bench.bench_search --parent engine/assets/resnet20_synthetic.safetensors

Prints (and with --write appends to bench/RESULTS.md, with the command):
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

from bench.common import RESULTS, command_line, parent_checkpoint
from engine.config import Constraint, DataSpec, ModelSpec, RunConfig, SearchConfig
from engine.evaluate import SubnetEvaluator, accuracy_and_loss
from engine.models import read_checkpoint_metadata
from engine.parent import load_parent
from engine.pareto import best_under_budget
from engine.search import search, start_run
from engine.store import Store

BUDGETS = (25, 50, 75)


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
                start = time.perf_counter()
                config = RunConfig(model=model, data=data, search=cfg)
                run_id, _ = start_run(store, config, parent=parent)
                search(store, run_id, parent)
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
    ap.add_argument("--write", action="store_true", help="append the figures to bench/RESULTS.md")
    args = ap.parse_args()
    data = DataSpec(name="imagefolder", root=args.data_root) if args.data_root else DataSpec()
    checkpoint = Path(args.parent) if args.parent else parent_checkpoint(data, args.epochs)
    model = ModelSpec(name="resnet20", weights="file", weights_path=str(checkpoint))
    parent = load_parent(model, data)
    meta = read_checkpoint_metadata(checkpoint)
    test = (
        meta.get("test_accuracy")
        or accuracy_and_loss(parent.model, *parent.splits.tensors("test"))[0]
    )
    out = [
        "",
        f"## Search cost and quality (issue 3) — {data.name}",
        "",
        "    " + command_line("bench_search", args),
        "",
        f"- machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch "
        f"threads; torch {torch.__version__}",
        f"- parent: resnet20 on {data.name}, {meta.get('epochs_done')} epochs, test accuracy "
        f"{test:.4f} ({meta.get('seconds', 0):.0f} s of training), search-validation {parent.accuracy:.4f}, "
        f"{parent.cost.parent_flops / 1e6:.1f} MFLOPs (2 x MACs); calib {data.calib_size}, "
        f"val {data.val_size} images",
    ]
    print("\n".join(out), flush=True)
    cost = cost_figures(parent, args.repeats)
    cost_lines = [
        "",
        "Cost of search:",
        "",
        f"- subnets evaluated per minute (parent and ~30% subnet alternating): {cost['per_minute']:.1f}",
        f"- share of evaluation time outside forward passes: {100 * cost['outside_share']:.1f}% "
        "(target <= 25%)",
        f"- evaluation time of a {100 * cost['small_flops_share']:.0f}%-FLOPs subnet vs the parent: "
        f"{100 * cost['eval_share']:.0f}% (target <= 60%)",
        "",
        f"Quality of search ({args.subnets} evaluations each; best search-validation accuracy):",
        "",
    ]
    print("\n".join(cost_lines), flush=True)
    table = quality_table(parent, model, data, args.subnets, args.seed)
    rows = ["| budget | guided | uniform sweep | random |", "|---|---|---|---|"]
    for b in BUDGETS:
        cells = []
        for s in ("guided", "uniform", "random"):
            acc, n = table[(s, b)]
            cells.append(
                "-"
                if acc is None
                else f"{100 * acc:.2f}%" + (f" ({n} unique)" if s == "uniform" else "")
            )
        rows.append(f"| {b}% FLOPs | " + " | ".join(cells) + " |")
    wins = all((table[("guided", b)][0] or 0) > (table[("uniform", b)][0] or 0) for b in BUDGETS)
    rows += ["", f"Guided beats the uniform sweep at every budget: {'yes' if wins else 'NO'}", ""]
    print("\n".join(rows))
    if args.write:
        with RESULTS.open("a") as fh:
            fh.write("\n".join(out + cost_lines + rows))


if __name__ == "__main__":
    main()

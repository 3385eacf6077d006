"""Issue 14: which channel importance a search uses by default, decided on search-validation only.

    .venv/bin/python -m bench.bench_importance --data-root ../shared/datasets/cifar10 [--write]

An importance decides which channels a group keeps at a given width. At 25/50/75% FLOPs the same
allocations (kept widths per group) are scored under every importance, after the same BatchNorm
recalibration, on the search-validation split: the three peers' allocations (uniform L1, global
Taylor, FastNAS-style sensitivity) and the winners of bench_quality's phase A searches, when its
steps file is there. Printed per importance and budget: the best and the mean accuracy over those
allocations, and the seconds spent ranking channels. Test images are never read.
Every scored allocation is kept in bench/cache/importance-<key>.json: a killed run resumes.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import statistics
import time
from pathlib import Path

from bench.common import CACHE, RESULTS, command_line, parent_checkpoint
from engine.config import IMPORTANCES, DataSpec, ModelSpec
from engine.evaluate import accuracy_and_loss, rebuild_subnet
from engine.models import read_checkpoint_metadata
from engine.parent import Parent, importance_batches, load_parent
from engine.peers import peer_allocations
from engine.space import DATA_AWARE, build_space

PHASE_A = Path(__file__).parent / "steps"  # bench_quality's steps, for its searches' winners


def space_for(parent: Parent, importance: str):
    """The parent's space re-ranked by `importance` (same groups and widths), and its seconds."""
    batches = importance_batches(parent.splits)
    start = time.perf_counter()
    space = build_space(
        parent.model,
        parent.example_input,
        round_to=parent.space.round_to,
        importance=importance,
        batches=batches if importance in DATA_AWARE else None,
    )
    return space, time.perf_counter() - start


def allocations(parent: Parent, pct: float) -> dict[str, list[int]]:
    """The allocations every importance is scored at: the peers' and phase A's winners."""
    budget = parent.cost.parent_flops * pct / 100
    found = {
        name: list(e)
        for e, name in peer_allocations(parent, lambda e: parent.cost.cost(e)[0], budget)
    }
    for steps in sorted(PHASE_A.glob("quality-*.json")):
        done = json.loads(steps.read_text())
        for key, step in done.items():
            method = key.split("/")[1] if key.startswith("a/") else None
            if key.endswith(f"/{pct:g}") and isinstance(step, dict) and "best_encoding" in step:
                found[f"search:{method}"] = step["best_encoding"]
    return found


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data-root", help="CIFAR-10 as an ImageFolder; default: the built-in set")
    ap.add_argument("--epochs", type=int, default=50, help="parent training epochs")
    ap.add_argument("--budgets", type=float, nargs="+", default=[25, 50, 75])
    ap.add_argument("--importance", nargs="+", default=list(IMPORTANCES), choices=IMPORTANCES)
    ap.add_argument("--write", action="store_true", help="append the table to bench/RESULTS.md")
    args = ap.parse_args()
    data = DataSpec(name="imagefolder", root=args.data_root) if args.data_root else DataSpec()
    checkpoint = parent_checkpoint(data, args.epochs)
    meta = read_checkpoint_metadata(checkpoint)
    spec = ModelSpec(name="resnet20", weights="file", weights_path=str(checkpoint))
    parent = load_parent(spec, data)
    key = json.dumps([checkpoint.name, meta.get("seconds"), args.budgets])
    path = CACHE / f"importance-{hashlib.sha256(key.encode()).hexdigest()[:12]}.json"
    done = json.loads(path.read_text()) if path.exists() else {}
    val_x, val_y = parent.splits.tensors("val")
    plans = {pct: allocations(parent, pct) for pct in args.budgets}
    rows, seconds = {}, {}
    for importance in args.importance:
        space, seconds[importance] = space_for(parent, importance)
        ranked = dataclasses.replace(parent, space=space)
        for pct, plan in plans.items():
            scores = []
            for name, encoding in plan.items():
                step = f"{importance}/{pct:g}/{name}/{encoding}"
                if step not in done:
                    model = rebuild_subnet(ranked, encoding)
                    done[step] = accuracy_and_loss(model, val_x, val_y)[0]
                    path.parent.mkdir(parents=True, exist_ok=True)
                    tmp = path.with_suffix(f".tmp{os.getpid()}")
                    tmp.write_text(json.dumps(done))
                    os.replace(tmp, path)
                scores.append(done[step])
            rows[(importance, pct)] = (max(scores), statistics.mean(scores), len(scores))
        print(
            f"{importance}: "
            + ", ".join(f"{pct:g}% best {100 * rows[(importance, pct)][0]:.2f}%" for pct in plans),
            flush=True,
        )
    report = format_report(args, plans, rows, seconds)
    print(report)
    if args.write:
        with RESULTS.open("a") as fh:
            fh.write(report)


def format_report(args, plans, rows, seconds) -> str:
    budgets = list(plans)
    lines = [
        "\n## Issue 14: channel importance, decided on search-validation\n",
        f"`{command_line('bench_importance', args)}`\n",
        "The same allocations scored under each importance after the same recalibration, on "
        "search-validation (never test): "
        + "; ".join(f"{pct:g}%: {', '.join(plan)}" for pct, plan in plans.items())
        + ".\n",
        "| importance | "
        + " | ".join(f"{pct:g}% best / mean" for pct in budgets)
        + " | mean of bests | ranking s |",
        "|---|" + "---|" * (len(budgets) + 2),
    ]
    for importance in seconds:
        bests = [rows[(importance, pct)][0] for pct in budgets]
        cells = [
            f"{100 * rows[(importance, pct)][0]:.2f} / {100 * rows[(importance, pct)][1]:.2f}"
            for pct in budgets
        ]
        lines.append(
            f"| {importance} | "
            + " | ".join(cells)
            + f" | {100 * statistics.mean(bests):.2f} | {seconds[importance]:.1f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

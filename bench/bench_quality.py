"""Issue 14: Prunescope's default search against its peers at 25/50/75% FLOPs, after BatchNorm
recalibration (phase A) and after the same one-epoch fine-tune with three seeds (phase B).

    .venv/bin/python -m bench.bench_quality --data-root ../shared/datasets/cifar10 [--phase a|b|all]

Peers: Torch-Pruning uniform L1 and global Taylor (their own pruned networks, ratio bisected to
the budget), random search with the same number of evaluations. Every method gets the same
recalibration (2,000 calibration images) and is scored on the same search-validation split;
test is touched only after the fine-tune. Also printed: wall time until the winning subnet was
evaluated, until 20 within-budget subnets existed (the dataset already decoded), evaluations
above the budget, and the search's GFLOP/s against the parent's own forward pass.
Every step is kept in bench/cache/quality-<key>.json: a killed run resumes.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from bench.bench_compare import Steps, forward_gflops, short_finetune, tp_at_budget
from bench.common import RESULTS, command_line, parent_checkpoint
from engine.config import (
    IMPORTANCES,
    Constraint,
    DataSpec,
    FinetuneRecipe,
    ModelSpec,
    RunConfig,
    SearchConfig,
    SpaceConfig,
)
from engine.evaluate import accuracy_and_loss, rebuild_subnet, recalibrate_batchnorm
from engine.models import read_checkpoint_metadata
from engine.parent import Parent, load_parent
from engine.pareto import best_pick, best_under_budget
from engine.search import search, start_run
from engine.store import Store

PEERS = ("tp_l1", "tp_taylor", "random")
LABELS = {
    "prunescope": "Prunescope (defaults)",
    "tp_l1": "TP uniform L1",
    "tp_taylor": "TP global Taylor",
    "random": "random search",
}
FIRST_WITHIN = 20  # within-budget subnets whose arrival time is reported
FINETUNE_LR = 0.05  # the recipe: SGD, lr 0.05, cosine, crop and flip, one epoch
STEPS_DIR = Path(__file__).parent / "steps"
# 2: rungs, channels-last, batch 128, and the Taylor/sensitivity peers computed on a random
# sample of calibration images (version 1 took the first images of a class-sorted split)
VERSION = 2


def carried(path: Path) -> dict:
    """Steps of the version-1 file that version 2 leaves unchanged: TP L1 (data-free) and the
    plain random search (full validation, no peers), searches and fine-tunes."""
    old = path.parent / path.name.replace(f"quality-v{VERSION}-", "quality-")
    if not old.exists():
        return {}
    done = json.loads(old.read_text())
    keep = {k: v for k, v in done.items() if k.split("/")[1:2] in (["tp_l1"], ["random"])}
    print(f"carried {len(keep)} unchanged steps from {old.name}", flush=True)
    return keep


def search_run(parent: Parent, sampler: str, pct: float, n: int, seed: int) -> dict:
    """One search at `pct`% FLOPs; its rows, arrival times and throughput."""
    cfg = SearchConfig(
        num_subnets=n, sampler=sampler, seed=seed, constraint=Constraint("flops", pct, True)
    )
    if sampler == "random":  # the peer: plain random search, every candidate fully validated
        cfg = replace(cfg, screen_images=0, tune_top=0)
    space = SpaceConfig(round_to=parent.space.round_to, importance=parent.space.importance)
    config = RunConfig(model=parent.model_spec, data=parent.data_spec, space=space, search=cfg)
    arrivals = []
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "q.duckdb") as store:
        start = time.perf_counter()
        run_id, _ = start_run(store, config, parent=parent)
        search(store, run_id, parent, progress=lambda e: arrivals.append(time.perf_counter()))
        wall = time.perf_counter() - start
        run, rows = store.run(run_id), store.subnets(run_id)
    best = best_pick(rows, run["budget"])  # the deepest rung's pick, as Explore shows it
    full = rows[rows["depth"].fillna("val") != "screen"]
    most = best_under_budget(full, run["budget"])  # the best any full validation saw
    arrivals = arrivals[: len(rows)]  # one event per stored row; then the tuning rung's
    within = [t for t, f in zip(arrivals, rows["flops"], strict=True) if f <= run["budget"]]
    return {
        "best_accuracy": float(best["accuracy"]),
        "most_accurate": float(most["accuracy"]),
        "tuned_accuracy": None
        if pd.isna(best["tuned_accuracy"])
        else float(best["tuned_accuracy"]),
        "promoted": len(full),
        "best_encoding": [int(w) for w in best["encoding"]],
        "best_flops": float(best["flops"]),
        "winner_s": arrivals[int(best.name)] - start,
        "first_within_s": within[FIRST_WITHIN - 1] - start if len(within) >= FIRST_WITHIN else None,
        "above_budget": int((rows["flops"] > run["budget"]).sum()),
        "evaluations": len(rows),
        "wall": wall,
        "gflops": evaluation_gflops(parent, rows, cfg.screen_images),
        "gflops_wall": evaluation_gflops(parent, rows, cfg.screen_images, wall),
        "peers": {
            s: float(rows.loc[rows["sampler"] == s, "accuracy"].max())
            for s in rows["sampler"].unique()
            if str(s).startswith("peer:")
        },
    }


def evaluation_gflops(parent: Parent, rows, screen: int, wall: float | None = None) -> float:
    """Forward GFLOP/s of the evaluations: every image through every subnet (screen and full
    rungs), over the evaluations' own seconds (materialize, recalibrate, score) or `wall`."""
    n_full = len(parent.splits.calib_idx) + len(parent.splits.val_idx)
    screened = rows["screen_accuracy"].notna().to_numpy()
    full = (rows["depth"].fillna("val") != "screen").to_numpy()
    images = 2 * screen * screened + n_full * full
    seconds = rows[["seconds_materialize", "seconds_recalibrate", "seconds_evaluate"]].sum().sum()
    return float((rows["flops"].to_numpy() * images).sum()) / (wall or seconds) / 1e9


def tp_run(parent: Parent, pct: float, kind: str) -> dict:
    """Torch-Pruning's own network at the budget, recalibrated and scored on search-validation."""
    model, ratio, wall = tp_at_budget(parent, parent.cost.parent_flops * pct / 100, kind)
    if model is None:
        return {"best_accuracy": None, "ratio": ratio, "wall": wall}
    recalibrate_batchnorm(model, parent.splits.tensors("calib")[0])
    return {
        "best_accuracy": accuracy_and_loss(model, *parent.splits.tensors("val"))[0],
        "ratio": ratio,
        "wall": wall,
    }


def finetuned(parent: Parent, method: str, found: dict, pct: float, seed: int) -> float:
    """Test accuracy of a method's pick after the one-epoch fine-tune with `seed`."""
    recipe = FinetuneRecipe.with_training(epochs=1, lr=FINETUNE_LR, seed=seed)
    if method.startswith("tp_"):  # deterministic: the same network phase A scored
        model, _, _ = tp_at_budget(parent, parent.cost.parent_flops * pct / 100, method[3:])
        recalibrate_batchnorm(model, parent.splits.tensors("calib")[0])
    else:
        model = rebuild_subnet(parent, found["best_encoding"])
    return short_finetune(copy.deepcopy(model), parent, recipe)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data-root", help="CIFAR-10 as an ImageFolder; default: the built-in set")
    ap.add_argument("--epochs", type=int, default=50, help="parent training epochs")
    ap.add_argument("--budgets", type=float, nargs="+", default=[25, 50, 75])
    ap.add_argument("--subnets", type=int, default=150, help="evaluations per search")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="fine-tune seeds")
    ap.add_argument("--phase", default="all", choices=["a", "b", "all"])
    ap.add_argument(
        "--importance",
        nargs="+",
        default=["l1"],
        choices=IMPORTANCES,
        help="channel orders searched (each its own Prunescope row; the first is the default's)",
    )
    ap.add_argument("--train-size", type=int, help="a training subset (smoke runs only)")
    ap.add_argument("--write", action="store_true", help="append the tables to bench/RESULTS.md")
    args = ap.parse_args()
    data = (
        DataSpec(name="imagefolder", root=args.data_root, train_size=args.train_size)
        if args.data_root
        else DataSpec(train_size=args.train_size)
    )
    checkpoint = parent_checkpoint(data, args.epochs)
    meta = read_checkpoint_metadata(checkpoint)
    spec = ModelSpec(name="resnet20", weights="file", weights_path=str(checkpoint))
    parent = load_parent(spec, data, measure_test=True)
    others = {
        imp: load_parent(spec, data, SpaceConfig(importance=imp)) for imp in args.importance[1:]
    }
    args.seed, args.finetune_epochs, args.tau_subnets = 0, 1, 0  # Steps' key fields
    steps = Steps(args, checkpoint, meta)
    # kept in the repository: phase B (an hour of fine-tunes) may run in a later session
    steps.path = STEPS_DIR / steps.path.name.replace("compare-", f"quality-v{VERSION}-")
    steps.done = json.loads(steps.path.read_text()) if steps.path.exists() else carried(steps.path)
    limit = steps.run("limit", forward_gflops, parent)
    found = {}
    for pct in args.budgets:
        found[("prunescope", pct)] = steps.run(
            f"a/prunescope/{pct:g}", search_run, parent, "guided", pct, args.subnets, 0
        )
        found[("random", pct)] = steps.run(
            f"a/random/{pct:g}", search_run, parent, "random", pct, args.subnets, 0
        )
        for imp, other in others.items():
            found[(f"prunescope-{imp}", pct)] = steps.run(
                f"a/prunescope-{imp}/{pct:g}", search_run, other, "guided", pct, args.subnets, 0
            )
            print(
                f"  {pct:g}% prunescope-{imp}: {found[(f'prunescope-{imp}', pct)]['best_accuracy']}"
            )
        for kind in ("l1", "taylor"):
            found[(f"tp_{kind}", pct)] = steps.run(
                f"a/tp_{kind}/{pct:g}", tp_run, parent, pct, kind
            )
        print(
            f"{pct:g}%: "
            + ", ".join(f"{m} {found[(m, pct)]['best_accuracy']}" for m in ("prunescope", *PEERS)),
            flush=True,
        )
    tuned = {}
    if args.phase in ("b", "all"):
        for pct in args.budgets:
            for method in ("prunescope", *PEERS):
                if found[(method, pct)].get("best_accuracy") is None:
                    continue
                tuned[(method, pct)] = [
                    steps.run(
                        f"b/{method}/{pct:g}/{s}",
                        finetuned,
                        parent,
                        method,
                        found[(method, pct)],
                        pct,
                        s,
                    )
                    for s in args.seeds
                ]
    report = format_report(args, parent, meta, limit, found, tuned)
    for imp in others:
        report += (
            "\n"
            + "\n".join(
                f"- importance {imp}, {pct:g}%: Prunescope {_pp(found[(f'prunescope-{imp}', pct)]['best_accuracy'])}"
                f" (peers inside: {found[(f'prunescope-{imp}', pct)]['peers']})"
                for pct in args.budgets
            )
            + "\n"
        )
    print(report)
    if args.write:
        with RESULTS.open("a") as fh:
            fh.write(report)


def _pp(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}%"


def format_report(args, parent, meta, limit, found, tuned) -> str:
    out = ["", "## Issue 14: the default search against its peers", ""]
    out += ["    " + command_line("bench_quality", args), ""]
    out.append(
        f"- parent: ResNet-20 trained {meta.get('epochs_done')} epochs by train_parent on "
        f"{meta.get('device', 'cpu')}; test {_pp(parent.test_accuracy)}, search-validation "
        f"{_pp(parent.accuracy)} ({parent.splits.val_from}: held-out training images)"
    )
    out.append(f"- the parent's own forward pass here: {limit:.1f} GFLOP/s (batch 256)")
    out += ["", "After recalibration (search-validation, the split every method is scored on):", ""]
    out.append(
        "| budget | "
        + " | ".join(LABELS[m] for m in ("prunescope", *PEERS))
        + " | margin over best peer |"
    )
    out.append("|---|---|---|---|---|---|")
    for pct in args.budgets:
        accs = {m: found[(m, pct)].get("best_accuracy") for m in ("prunescope", *PEERS)}
        ours = found[("prunescope", pct)]
        accs["prunescope"] = ours.get("most_accurate", ours["best_accuracy"])
        peers = [a for m, a in accs.items() if m != "prunescope" and a is not None]
        margin = accs["prunescope"] - max(peers) if peers else None
        out.append(
            f"| {pct:g}% | "
            + " | ".join(_pp(a) for a in accs.values())
            + f" | {'—' if margin is None else f'{100 * margin:+.2f} pp'} |"
        )
    out += [
        "",
        "Prunescope's column: the most accurate fully validated subnet under the budget. Its pick "
        "(the deepest rung: the best of the finalists after the short distilled fine-tune), the "
        "one phase B fine-tunes:",
        "",
    ]
    for pct in args.budgets:
        p = found[("prunescope", pct)]
        if "tuned_accuracy" in p:
            out.append(
                f"- {pct:g}%: {_pp(p['best_accuracy'])} after recalibration, "
                f"{_pp(p['tuned_accuracy'])} after the short fine-tune; "
                f"{p['promoted']} of {p['evaluations']} evaluations promoted past the screen"
            )
    out += [
        "",
        "Inside the Prunescope run, the peers' allocations it evaluated first "
        "(widths only; channels kept by its L1 order):",
        "",
    ]
    for pct in args.budgets:
        p = found[("prunescope", pct)]
        out.append(
            f"- {pct:g}%: " + ", ".join(f"{k} {_pp(v)}" for k, v in sorted(p["peers"].items()))
        )
    out += [
        "",
        "| budget | search s | winner evaluated at s | 20 within budget at s | above budget "
        "| evaluations GFLOP/s (% of parent's) | over the whole wall |",
        "|---|---|---|---|---|---|---|",
    ]
    for pct in args.budgets:
        p = found[("prunescope", pct)]
        first = "—" if p["first_within_s"] is None else f"{p['first_within_s']:.0f}"
        wall = p.get("gflops_wall")
        out.append(
            f"| {pct:g}% | {p['wall']:.0f} | {p['winner_s']:.0f} | {first} | "
            f"{p['above_budget']} of {p['evaluations']} | {p['gflops']:.1f} "
            f"({100 * p['gflops'] / limit:.0f}%) | "
            + ("—" if wall is None else f"{wall:.1f} ({100 * wall / limit:.0f}%)")
            + " |"
        )
    if tuned:
        out += [
            "",
            f"After a one-epoch fine-tune (SGD lr {FINETUNE_LR}, cosine, crop + flip), test "
            f"accuracy, mean ± standard deviation over seeds {args.seeds}:",
            "",
        ]
        out.append("| budget | " + " | ".join(LABELS[m] for m in ("prunescope", *PEERS)) + " |")
        out.append("|---|---|---|---|---|")
        for pct in args.budgets:
            cells = []
            for m in ("prunescope", *PEERS):
                t = tuned.get((m, pct))
                cells.append(
                    "—"
                    if not t
                    else f"{100 * statistics.mean(t):.2f} ± {100 * statistics.pstdev(t):.2f}"
                )
            out.append(f"| {pct:g}% | " + " | ".join(cells) + " |")
    out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    main()

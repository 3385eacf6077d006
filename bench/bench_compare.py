"""Prunescope's fronts against Torch-Pruning and random search on CIFAR-10 (issue 6).

    .venv/bin/python -m bench.bench_compare --data-root ../shared/datasets/cifar10 --write

One parent (CIFAR ResNet-20 trained by the engine's `train_parent`, cached in bench/cache/); for
each FLOPs budget the best subnet of
- Prunescope's default (guided) search and its uniform-width sweep, N evaluations each;
- Torch-Pruning as its README shows it: MagnitudePruner with group L1 importance and one uniform
  ratio, and global pruning with group Taylor importance, the ratio bisected to the budget
  (no round_to: finer widths than Prunescope's multiples of 8, an accuracy advantage to it);
- random search within the budget, N evaluations.
Each is measured right after pruning without and with BatchNorm recalibration, then fine-tuned
with one short recipe (same epochs, schedule and seed), with and without distillation. Then the
rank correlation between front accuracy and fine-tuned test accuracy, and search throughput
against the parent's own forward-pass GFLOP/s.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import importlib.metadata
import itertools
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from bench.common import CACHE, RESULTS, command_line, parent_checkpoint
from engine.config import Constraint, DataSpec, FinetuneRecipe, ModelSpec, RunConfig, SearchConfig
from engine.cost import measure
from engine.evaluate import accuracy_and_loss, recalibrate_batchnorm
from engine.loop import train_epoch, training_setup
from engine.models import read_checkpoint_metadata
from engine.parent import Parent, load_parent
from engine.pareto import best_under_budget, pareto_front
from engine.peers import MAX_RATIO, tp_prune, with_taylor_gradients
from engine.search import search, start_run
from engine.space import materialize
from engine.store import Store

METHODS = ("prunescope", "uniform", "tp_l1", "tp_taylor", "random")
LABELS = {
    "prunescope": "Prunescope default (guided)",
    "uniform": "Prunescope uniform sweep",
    "tp_l1": "Torch-Pruning MagnitudePruner, L1, uniform ratio",
    "tp_taylor": "Torch-Pruning global Taylor",
    "random": "random search",
}
ROW_FIELDS = ("subnet_id", "flops", "params", "accuracy", "encoding", "error")


# --- the methods ---------------------------------------------------------------------------------


def prunescope_search(store: Store, parent: Parent, sampler: str, pct: float, n: int, seed: int):
    """A search through the engine; returns (rows, wall seconds)."""
    cfg = SearchConfig(
        num_subnets=n, sampler=sampler, seed=seed, constraint=Constraint("flops", pct, True)
    )
    start = time.perf_counter()
    config = RunConfig(model=parent.model_spec, data=parent.data_spec, search=cfg)
    run_id, _ = start_run(store, config, parent=parent)
    search(store, run_id, parent)
    return store.subnets(run_id), time.perf_counter() - start


def tp_at_budget(parent: Parent, budget: float, kind: str):
    """Bisect the ratio to the largest subnet with FLOPs <= budget: (model or None, ratio, s)."""
    start = time.perf_counter()
    source = with_taylor_gradients(parent) if kind == "taylor" else parent.model
    lo, hi, best = 0.0, MAX_RATIO, None
    for _ in range(14):
        mid = (lo + hi) / 2
        model = tp_prune(source, parent.example_input, mid, kind)
        if measure(model, parent.example_input)[0] <= budget:
            best, hi = (model, mid), mid
        else:
            lo = mid
    if best is None:  # even the largest ratio misses the budget
        return None, MAX_RATIO, time.perf_counter() - start
    return best[0], best[1], time.perf_counter() - start


# --- measurements --------------------------------------------------------------------------------


def short_finetune(model: nn.Module, parent: Parent, recipe: FinetuneRecipe) -> float:
    """The same short fine-tune for every starting point; returns test accuracy."""
    model = copy.deepcopy(model)
    cfg = recipe.train
    torch.manual_seed(cfg.seed)
    opt, sched, loss_fn = training_setup(model, parent, recipe)
    for epoch in range(cfg.epochs):
        train_epoch(model, parent.splits, cfg, opt, sched, epoch, loss_fn=loss_fn)
    return accuracy_and_loss(model, *parent.splits.tensors("test"))[0]


def score(model: nn.Module, parent: Parent, recipe: FinetuneRecipe) -> dict:
    """Accuracy without and with recalibration, and after the fine-tune with and without KD."""
    val = parent.splits.tensors("val")
    flops, params = measure(model, parent.example_input)
    raw = accuracy_and_loss(model, *val)[0]
    recalibrated = recalibrate_batchnorm(copy.deepcopy(model), parent.splits.tensors("calib")[0])
    out = {"flops": flops, "params": params, "val_raw": raw}
    out["val_recal"] = accuracy_and_loss(recalibrated, *val)[0]
    out["test_ft"] = short_finetune(recalibrated, parent, recipe)
    kd = dataclasses.replace(recipe, distill=True)
    out["test_ft_kd"] = short_finetune(recalibrated, parent, kd)
    return out


def kendall_tau(a: list[float], b: list[float]) -> float:
    """Kendall's tau-a: (concordant - discordant) / pairs; tied pairs count as neither."""
    pairs = list(itertools.combinations(range(len(a)), 2))
    sign = lambda v: (v > 0) - (v < 0)  # noqa: E731
    return sum(sign(a[i] - a[j]) * sign(b[i] - b[j]) for i, j in pairs) / max(len(pairs), 1)


def forward_gflops(parent: Parent, batch_size: int = 256) -> float:
    """The machine's practical limit: the parent's own eval forward pass, GFLOP/s."""
    x, y = parent.splits.tensors("val")
    accuracy_and_loss(parent.model, x[:batch_size], y[:batch_size])  # warm-up
    start = time.perf_counter()
    accuracy_and_loss(parent.model, x, y, batch_size)
    return parent.cost.parent_flops * len(x) / (time.perf_counter() - start) / 1e9


def spread(front, k: int):
    """k rows of a front spread evenly along FLOPs."""
    front = front.sort_values("flops").reset_index(drop=True)
    picks = sorted({round(i * (len(front) - 1) / max(k - 1, 1)) for i in range(k)})
    return front.iloc[picks]


# --- resuming ----------------------------------------------------------------------------------


class Steps:
    """Finished steps of one comparison, kept in a JSON file so a killed run resumes.

    The file is named after everything that changes a result (parent checkpoint, evaluations,
    fine-tune recipe, seed), and rewritten atomically after every step.
    """

    def __init__(self, args: argparse.Namespace, checkpoint: Path, meta: dict):
        key = json.dumps(
            [
                checkpoint.name,
                meta.get("epochs_done"),
                meta.get("seconds"),
                args.subnets,
                args.finetune_epochs,
                args.tau_subnets,
                args.train_size,
                args.seed,
            ]
        )
        self.path = CACHE / f"compare-{hashlib.sha256(key.encode()).hexdigest()[:12]}.json"
        self.done = json.loads(self.path.read_text()) if self.path.exists() else {}
        if self.done:
            print(f"resuming: {len(self.done)} finished steps in {self.path}", flush=True)

    def run(self, key: str, step, *args):
        """`step(*args)`'s JSON-able result, computed once."""
        if key not in self.done:
            print(f"step {key} ...", flush=True)
            self.done[key] = step(*args)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(self.done))
            os.replace(tmp, self.path)
        return self.done[key]


def search_step(store: Store, parent: Parent, sampler: str, pct: float, n: int, seed: int):
    """A search as a JSON-able step: its rows (the fields the front needs) and wall seconds."""
    rows, wall = prunescope_search(store, parent, sampler, pct, n, seed)
    rows = rows[[c for c in ROW_FIELDS if c in rows.columns]]
    return {"rows": json.loads(rows.to_json(orient="records")), "wall": wall}


def score_encoding(parent: Parent, row: pd.Series, recipe: FinetuneRecipe) -> dict:
    """`score` of the subnet a search row encodes."""
    model = materialize(parent.model, parent.space, row["encoding"], parent.example_input)
    return score(model, parent, recipe)


def finetuned_test_accuracy(parent: Parent, encoding, recipe: FinetuneRecipe) -> float:
    """Test accuracy of a subnet recalibrated, then given the short fine-tune."""
    model = materialize(parent.model, parent.space, encoding, parent.example_input)
    recalibrated = recalibrate_batchnorm(model, parent.splits.tensors("calib")[0])
    return short_finetune(recalibrated, parent, recipe)


def tp_step(parent: Parent, budget: float, kind: str, recipe: FinetuneRecipe):
    """Torch-Pruning at the budget, scored; `None` scores when no ratio reaches it."""
    model, ratio, wall = tp_at_budget(parent, budget, kind)
    return {
        "ratio": ratio,
        "wall": wall,
        "score": None if model is None else score(model, parent, recipe),
    }


# --- the run ---------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data-root", help="CIFAR-10 as an ImageFolder; default: the built-in set")
    ap.add_argument("--epochs", type=int, default=50, help="parent training epochs (cached)")
    ap.add_argument("--parent", help="a trained checkpoint instead of the cached CIFAR parent")
    ap.add_argument("--budgets", type=float, nargs="+", default=[25, 50, 75])
    ap.add_argument("--subnets", type=int, default=150, help="evaluations per search")
    ap.add_argument("--finetune-epochs", type=int, default=1)
    ap.add_argument("--tau-subnets", type=int, default=8)
    ap.add_argument("--train-size", type=int, help="use a training subset (smoke runs only)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--write", action="store_true", help="append the tables to bench/RESULTS.md")
    args = ap.parse_args()

    data = (
        DataSpec(name="imagefolder", root=args.data_root, train_size=args.train_size)
        if args.data_root
        else DataSpec(train_size=args.train_size)
    )
    checkpoint = Path(args.parent) if args.parent else parent_checkpoint(data, args.epochs)
    model_spec = ModelSpec(name="resnet20", weights="file", weights_path=str(checkpoint))
    parent = load_parent(model_spec, data)
    meta = read_checkpoint_metadata(checkpoint)
    recipe = FinetuneRecipe.with_training(epochs=args.finetune_epochs, seed=args.seed)
    tune = recipe.train
    lines = [
        f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"{platform.python_version()}; "
        + ", ".join(
            f"{p} {importlib.metadata.version(p)}"
            for p in ("torch", "torchvision", "torch-pruning", "onnxruntime")
        ),
        f"parent: resnet20 trained {meta.get('epochs_done')} epochs in {meta.get('seconds', 0):.0f}s of wall time (pauses included), "
        f"test {meta.get('test_accuracy') or accuracy_and_loss(parent.model, *parent.splits.tensors('test'))[0]:.4f}, "
        f"search-validation {parent.accuracy:.4f}, {parent.cost.parent_flops / 1e6:.1f} MFLOPs",
        f"fine-tune: {tune.epochs} epoch(s), {tune.optimizer} lr {tune.lr} cosine, batch "
        f"{tune.batch_size}, seed {tune.seed}; KD: T={recipe.temperature}, alpha={recipe.alpha}",
    ]
    for line in lines:
        print(line, flush=True)
    steps = Steps(args, checkpoint, meta)
    limit = steps.run("limit", forward_gflops, parent)
    images = len(parent.splits.calib_idx) + len(parent.splits.val_idx)
    results, walls, throughput = {}, {}, []

    def frame(key, sampler, pct):
        done = steps.run(key, search_step, store, parent, sampler, pct, args.subnets, args.seed)
        return pd.DataFrame(done["rows"], columns=list(ROW_FIELDS)), done["wall"]

    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "bench.duckdb") as store:
        uniform_rows, walls["uniform"] = frame("search/uniform", "uniform", 100)
        every = [uniform_rows]
        for pct in args.budgets:
            budget = parent.cost.parent_flops * pct / 100
            picks = {"uniform": best_under_budget(uniform_rows, budget)}
            for method, sampler in (("prunescope", "guided"), ("random", "random")):
                rows, wall = frame(f"search/{sampler}/{pct:g}", sampler, pct)
                walls[(method, pct)] = wall
                throughput.append(float(rows["flops"].sum()) * images / wall / 1e9)
                picks[method] = best_under_budget(rows, budget)
                if method == "prunescope":
                    every.append(rows)
            for method, row in picks.items():
                key = f"score/{method}/{pct:g}"
                results[(method, pct)] = steps.run(key, score_encoding, parent, row, recipe)
                print(f"  {pct:g}% {method}: {results[(method, pct)]}", flush=True)
            for kind in ("l1", "taylor"):
                done = steps.run(f"tp/{kind}/{pct:g}", tp_step, parent, budget, kind, recipe)
                walls[(f"tp_{kind}", pct)] = done["wall"]
                if done["score"] is None:
                    print(
                        f"  {pct:g}% tp_{kind}: no ratio up to {done['ratio']} reaches the budget"
                    )
                    continue
                results[(f"tp_{kind}", pct)] = {**done["score"], "ratio": done["ratio"]}
                print(f"  {pct:g}% tp_{kind}: {results[(f'tp_{kind}', pct)]}", flush=True)
    front = pareto_front(pd.concat(every, ignore_index=True))
    tau_rows = spread(front, args.tau_subnets)
    tau_val, tau_test = [], []
    for row in tau_rows.itertuples():
        tau_val.append(float(row.accuracy))
        key = f"tau/{json.dumps(row.encoding)}"
        tau_test.append(steps.run(key, finetuned_test_accuracy, parent, row.encoding, recipe))
    tau = kendall_tau(tau_val, tau_test)
    report = format_report(
        args,
        lines,
        parent.cost.parent_flops,
        results,
        walls,
        throughput,
        limit,
        tau,
        tau_val,
        tau_test,
    )
    print(report)
    if args.write:
        with RESULTS.open("a") as fh:
            fh.write(report)


def format_report(
    args, lines, parent_flops, results, walls, throughput, limit, tau, tau_val, tau_test
) -> str:
    command = "    " + command_line("bench_compare", args)
    out = ["", "## Prunescope vs Torch-Pruning and random search (issue 6)", "", command, ""]
    out += [f"- {line}" for line in lines] + [""]
    out.append(
        "| budget | method | MFLOPs (% parent) | params | val acc, no recal | val acc, recal | "
        "test acc after fine-tune | ... with KD | search s |"
    )
    out.append("|---|---|---|---|---|---|---|---|---|")
    for pct in args.budgets:
        for method in METHODS:
            r = results.get((method, pct))
            if r is None:
                out.append(f"| {pct:g}% | {LABELS[method]} | cannot reach the budget | | | | | | |")
                continue
            wall = walls.get((method, pct), walls.get(method))
            out.append(
                f"| {pct:g}% | {LABELS[method]} | {r['flops'] / 1e6:.2f} "
                f"({100 * r['flops'] / parent_flops:.1f}%) | {r['params']:,} | "
                f"{100 * r['val_raw']:.2f}% | {100 * r['val_recal']:.2f}% | "
                f"{100 * r['test_ft']:.2f}% | {100 * r['test_ft_kd']:.2f}% | {wall:.0f} |"
            )
    out.append("")
    verdicts = []
    for pct in args.budgets:
        ps, l1, ta = (results.get((m, pct)) for m in ("prunescope", "tp_l1", "tp_taylor"))
        if ps is None or l1 is None or ta is None:
            verdicts.append(f"- {pct:g}%: a method could not reach the budget (see the table)")
            continue
        beats = ps["val_recal"] > l1["val_recal"] and ps["test_ft"] > l1["test_ft"]
        not_worse = ps["test_ft"] >= ta["test_ft"]
        verdicts.append(
            f"- {pct:g}%: beats TP uniform L1 after recalibration and after fine-tune: "
            f"{'yes' if beats else 'NO'}; no worse than TP global Taylor after fine-tune: "
            f"{'yes' if not_worse else 'NO'}"
        )
    out += ["Targets:", ""] + verdicts
    mean_tp = sum(throughput) / len(throughput)
    out += [
        "",
        f"Proxy fidelity: Kendall tau between search-validation accuracy (recalibrated) and test "
        f"accuracy after the short fine-tune, {len(tau_val)} subnets along the front: **{tau:.2f}** "
        f"(val {[round(v, 4) for v in tau_val]}, test {[round(t, 4) for t in tau_test]}).",
        "",
        f"Throughput: Prunescope searches achieved {mean_tp:.1f} GFLOP/s on average (calibration "
        f"+ validation forward passes of every evaluated subnet over the search's wall time) vs "
        f"{limit:.1f} GFLOP/s for the parent's own eval forward pass at batch 256: "
        f"**{100 * mean_tp / limit:.0f}%** (target >= 50%).",
        "",
    ]
    return "\n".join(out)


if __name__ == "__main__":
    main()

"""Does pruning turn saved FLOPs into saved time and bytes? (issue 5)

    .venv/bin/python -m bench.bench_export --data-root ../shared/datasets/cifar10 --write

For ResNet-20 and mobilenet_v2 on CIFAR-10, at 50% and 25% of the parent's FLOPs: a short guided
search picks the best subnet under the budget, `engine.finetune.finetune` gives it a short
fine-tune (one epoch by default: one-shot subnets at these budgets are far below their parent, and
an INT8 drop means little on a broken model), `engine.export.export_subnet` exports it (and the
parent alike) to ONNX with INT8, and this prints
- the ONNX Runtime speedup over the parent at batch 32 divided by the FLOPs reduction
  (target >= 0.7: FLOPs saved must become time saved),
- the ONNX file-size ratio, and the INT8 accuracy drop on the search-validation split;
- the padded FLOPs ratio (`engine.runtime`: every convolution padded to ONNX Runtime's channel
  block on this CPU), which explains most of the gap between saved FLOPs and saved time.
`--round-to 16` searches widths in multiples of 16, ONNX Runtime's block on AVX-512 CPUs;
`--metric runtime_flops` budgets the padded FLOPs themselves (the search's `runtime_flops`
constraint), so the search may keep any width but pays for padding.

Parents are trained with the engine's own `train_parent` and cached in bench/cache/ (ResNet-20:
the one bench_search trains; mobilenet_v2: a short schedule on a subset, stated in the output).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from pathlib import Path

import torch

from bench.common import CACHE, RESULTS, command_line, parent_checkpoint
from engine.config import (
    Constraint,
    DataSpec,
    ExportConfig,
    FinetuneRecipe,
    ModelSpec,
    RunConfig,
    SearchConfig,
    SpaceConfig,
    TrainConfig,
)
from engine.errors import ConstraintError
from engine.export import export_subnet
from engine.finetune import finetune
from engine.models import read_checkpoint_metadata
from engine.pareto import best_under_budget
from engine.runtime import channel_block
from engine.search import search, start_run
from engine.store import Store
from engine.train import train_or_reuse_parent


def mobilenet_checkpoint(data: DataSpec, epochs: int) -> Path:
    path = CACHE / f"mobilenet_v2_{data.name}_{data.train_size}img_{epochs}ep.safetensors"
    model, recipe = ModelSpec(name="mobilenet_v2", weights="random"), TrainConfig(epochs, lr=0.05)
    train_or_reuse_parent(model, data, recipe, path=path)
    return path


def measure(store: Store, model: ModelSpec, data: DataSpec, args) -> list[dict]:
    rows = []
    for pct in args.budgets:
        config = RunConfig(
            model=model,
            data=data,
            space=SpaceConfig(round_to=args.round_to),
            search=SearchConfig(
                num_subnets=args.subnets,
                sampler="guided",
                constraint=Constraint(args.metric, pct, True),
            ),
        )
        try:
            run_id, parent = start_run(store, config)
        except ConstraintError as exc:  # a budget below the smallest subnet at this round_to
            print(f"| {model.name} | {pct}% | cannot reach the budget: {exc} |", flush=True)
            rows.append({"model": model.name, "budget": f"{pct}%", "unreachable": str(exc)})
            continue
        search(store, run_id, parent)
        budget = store.run(run_id)["budget"]
        best = best_under_budget(store.subnets(run_id), budget, x=args.metric)
        fid = None
        if args.finetune_epochs:
            recipe = FinetuneRecipe.with_training(epochs=args.finetune_epochs)
            row = finetune(store, run_id, int(best["subnet_id"]), recipe, parent=parent)
            fid = row["finetune_id"]
        report = export_subnet(
            store,
            run_id,
            int(best["subnet_id"]),
            finetune_id=fid,
            out_dir=Path(args.out) / f"{model.name}-{pct}-round{args.round_to}-{args.metric}",
            config=ExportConfig(int8=True, runs=args.runs),
            parent=parent,
        )
        s, lat, q = report["subnet"], report["latency"], report["int8"]
        reduction = 1 / s["flops_ratio"]
        rows.append(
            {
                "model": model.name,
                "budget": f"{pct}%" + (" runtime" if args.metric == "runtime_flops" else ""),
                "flops_ratio": s["flops_ratio"],
                "padded_ratio": s["runtime_flops_ratio"],
                "encoding": s["encoding"],
                "parent_acc": report["parent"]["val_accuracy"],
                "acc_recal": report["accuracy"]["val_recalibrated"],
                "acc": report["accuracy"]["val_onnxruntime"],
                "parent_ms": lat["parent"]["batch_32_ms"],
                "subnet_ms": lat["subnet"]["batch_32_ms"],
                "speedup": lat["speedup_batch_32"],
                "efficiency": lat["speedup_batch_32"] / reduction,
                "padded_efficiency": lat["speedup_batch_32"] * s["runtime_flops_ratio"],
                "speedup_b1": lat["speedup_batch_1"],
                "size_ratio": s["size_ratio"],
                "int8_drop": q["val_accuracy_drop"],
                "int8_ms": q["latency"]["batch_32_ms"],
                "int8_size_ratio": q["bytes"] / report["parent"]["onnx_bytes"],
                "parity": max(report["parity"]["batch_1"], report["parity"]["batch_8"]),
                "threads": lat["threads"],
            }
        )
        print(_row(rows[-1]), flush=True)
    return rows


HEADER = (
    "| model | budget | FLOPs ratio | padded FLOPs ratio | val acc: parent / subnet recalibrated -> fine-tuned (ORT fp32) | batch-32 ms parent / "
    "subnet | speedup | speedup / FLOPs reduction | speedup / padded reduction | batch-1 speedup | ONNX size ratio | "
    "INT8 acc drop | INT8 batch-32 ms | INT8 size vs parent | parity |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def _row(r: dict) -> str:
    if "unreachable" in r:
        return f"| {r['model']} | {r['budget']} | cannot reach the budget: {r['unreachable']} |"
    return (
        f"| {r['model']} | {r['budget']} | {r['flops_ratio']:.3f} | {r['padded_ratio']:.3f} | "
        f"{100 * r['parent_acc']:.2f}% / {100 * r['acc_recal']:.2f}% -> {100 * r['acc']:.2f}% | "
        f"{r['parent_ms']:.1f} / {r['subnet_ms']:.1f} | {r['speedup']:.2f}x | "
        f"**{r['efficiency']:.2f}** | {r['padded_efficiency']:.2f} | {r['speedup_b1']:.2f}x | {r['size_ratio']:.3f} | "
        f"{100 * r['int8_drop']:+.2f} pts | {r['int8_ms']:.1f} | {r['int8_size_ratio']:.3f} | "
        f"{r['parity']:.1e} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data-root", required=True, help="CIFAR-10 as an ImageFolder")
    ap.add_argument("--resnet-epochs", type=int, default=24, help="ResNet-20 parent (cached)")
    ap.add_argument("--mobilenet-epochs", type=int, default=4)
    ap.add_argument("--mobilenet-images", type=int, default=8000, help="training subset")
    ap.add_argument("--subnets", type=int, default=20, help="guided evaluations per budget")
    ap.add_argument(
        "--finetune-epochs", type=int, default=1, help="before export (0: the recalibrated subnet)"
    )
    ap.add_argument("--models", nargs="+", default=["resnet20", "mobilenet_v2"])
    ap.add_argument("--budgets", type=int, nargs="+", default=[50, 25], help="% of parent FLOPs")
    ap.add_argument("--round-to", type=int, default=8, help="kept widths are multiples of this")
    ap.add_argument(
        "--metric",
        default="flops",
        choices=["flops", "runtime_flops"],
        help="what the budget limits: FLOPs, or FLOPs padded to ONNX Runtime's channel block",
    )
    ap.add_argument("--runs", type=int, default=30, help="timed ONNX Runtime runs per figure")
    ap.add_argument("--out", default=str(CACHE / "exports"))
    ap.add_argument("--write", action="store_true", help="append the table to bench/RESULTS.md")
    args = ap.parse_args()
    data = DataSpec(name="imagefolder", root=args.data_root)
    models = []
    if "resnet20" in args.models:
        resnet = parent_checkpoint(data, args.resnet_epochs)
        models.append((ModelSpec(name="resnet20", weights="file", weights_path=str(resnet)), data))
    if "mobilenet_v2" in args.models:
        small = DataSpec(name="imagefolder", root=args.data_root, train_size=args.mobilenet_images)
        mobilenet = mobilenet_checkpoint(small, args.mobilenet_epochs)
        spec = ModelSpec(name="mobilenet_v2", weights="file", weights_path=str(mobilenet))
        models.append((spec, small))
    lines = [
        f"machine: {platform.machine()}, {torch.get_num_threads()} threads; torch {torch.__version__}"
        f"; ONNX Runtime channel block {channel_block()}; widths in multiples of {args.round_to}"
        f"; budgets limit {'runtime (padded) FLOPs' if args.metric == 'runtime_flops' else 'FLOPs'}"
    ]
    for spec, _ in models:
        meta = read_checkpoint_metadata(spec.weights_path)
        lines.append(
            f"parent {spec.name}: {meta['epochs_done']} epochs on {meta['data']['train_size'] or 'all'}"
            f" training images, test accuracy {meta['test_accuracy']:.4f}"
        )
    lines.append(
        f"fine-tune before export: {args.finetune_epochs} epoch(s) of the engine's default recipe"
    )
    print("\n".join(lines + [HEADER]), flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "bench.duckdb") as store:
        os.environ["PRUNESCOPE_HOME"] = tmp  # fine-tune folders go with the temporary store
        for spec, spec_data in models:
            rows += measure(store, spec, spec_data, args)
    met = all(r.get("efficiency", 0) >= 0.7 for r in rows)
    print(f"\nspeedup / FLOPs reduction >= 0.7 everywhere: {'yes' if met else 'NO'}")
    if args.write:
        with RESULTS.open("a") as fh:
            fh.write(
                "\n## ONNX Runtime speed, size and INT8 of exported subnets (issue 5) — CIFAR-10\n\n"
                f"    {command_line('bench_export', args)}\n\n"
                + "".join(f"- {line}\n" for line in lines)
                + f"- ONNX Runtime {torch.get_num_threads()} intra-op threads, median of {args.runs} runs\n\n"
                + HEADER
                + "\n"
                + "\n".join(_row(r) for r in rows)
                + f"\n\nTarget speedup / FLOPs reduction >= 0.7 everywhere: {'met' if met else 'MISSED'}.\n"
            )


if __name__ == "__main__":
    main()

"""The command line: python -m engine search|runs|front|train|finetune|export ...

FLOPs are 2 x multiply-accumulates per image, as torch.utils.flop_counter counts them.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path

from engine.config import (
    DATASETS,
    DEPTH_TEXT,
    FLOPS_NOTE,
    IMPORTANCE_TEXT,
    IMPORTANCES,
    OPTIMIZERS,
    SAMPLERS,
    VAL_SOURCE_TEXT,
    VAL_SOURCES,
    Constraint,
    DataSpec,
    ExportConfig,
    FinetuneRecipe,
    ModelSpec,
    RunConfig,
    SearchConfig,
    SpaceConfig,
    TrainConfig,
    defaults,
)
from engine.errors import PrunescopeError
from engine.workspace import db_path

DATA, SPACE, SEARCH = defaults(DataSpec), defaults(SpaceConfig), defaults(SearchConfig)
TRAIN, RECIPE, EXPORT = TrainConfig(), FinetuneRecipe(), ExportConfig()


def _model_spec(args) -> ModelSpec:
    weights = args.weights
    if weights not in ("builtin", "pretrained", "random"):
        return ModelSpec(name=args.model, weights="file", weights_path=str(Path(weights).resolve()))
    return ModelSpec(name=args.model, weights=weights)


def _data_spec(args) -> DataSpec:
    return DataSpec(
        name=args.dataset,
        root=args.data_root,
        calib_size=args.calib_size,
        val_size=args.val_size,
        seed=args.data_seed,
        val_from=args.val_from,
    )


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default=DATA["name"], help=" | ".join(DATASETS))
    p.add_argument("--data-root", help="download folder, or the ImageFolder path")
    p.add_argument(
        "--calib-size", type=int, default=DATA["calib_size"], help="BatchNorm recalibration images"
    )
    p.add_argument(
        "--val-size", type=int, default=DATA["val_size"], help="search-validation images"
    )
    p.add_argument("--data-seed", type=int, default=DATA["seed"])
    p.add_argument(
        "--val-from",
        default=DATA["val_from"],
        choices=VAL_SOURCES,
        help="where search-validation images come from: auto (images the parent never saw: "
        "held-out training images for a parent trained here, else the val/ folder or half of "
        "the test split), train, test, folder",
    )


def cmd_search(args) -> int:
    from tqdm import tqdm

    from engine.search import search, start_run
    from engine.store import Store
    from engine.workspace import rebuild_parent

    config = RunConfig(
        model=_model_spec(args),
        data=_data_spec(args),
        space=SpaceConfig(round_to=args.round_to, importance=args.importance),
        search=SearchConfig(
            num_subnets=args.subnets,
            sampler=args.sampler,
            seed=args.seed,
            constraint=Constraint.parse(args.constraint),
            channel_block=args.channel_block,
            batch_size=args.batch_size,
            screen_images=args.screen_images,
            tune_top=args.tune_top,
            tune_images=args.tune_images,
        ),
    )
    bar = tqdm(total=args.subnets, unit="subnet", file=sys.stderr)

    def progress(event: dict) -> None:
        if event.get("stage") == "tuning":
            bar.set_postfix_str(f"short fine-tune of finalist {event['done']}/{event['total']}")
            return
        bar.n = event["done"]
        acc = event["accuracy"]
        bar.set_postfix_str(
            f"last {event['flops'] / 1e6:.1f} MFLOPs acc {acc:.3f}"
            if acc is not None
            else f"error: {event['error']}"
        )
        bar.refresh()

    with Store(args.db) as store:
        if args.resume:
            run_id, parent = args.resume, rebuild_parent(store.run(args.resume))
        else:
            run_id, parent = start_run(store, config)
        run = store.run(run_id)
        test = run.get("parent_test_accuracy")
        print(
            f"run {run_id}: {parent.model_spec.name}, parent accuracy {parent.accuracy:.4f} on "
            f"search-validation ({VAL_SOURCE_TEXT[parent.splits.val_from]})"
            + (f", {test:.4f} on test" if test is not None and test == test else "")
            + f"; {parent.cost.parent_flops / 1e6:.2f} MFLOPs; {FLOPS_NOTE}",
            file=sys.stderr,
            flush=True,
        )
        already = bar.n = store.count_subnets(run_id)
        search(
            store,
            run_id,
            parent,
            num_subnets=args.subnets,
            progress=progress,
            cancel=threading.Event(),
        )
        run = store.run(run_id)
        evaluated = store.count_subnets(run_id) - already
    bar.close()
    print(f"evaluated {evaluated} new subnets")
    print(f"run {run_id}: {run['status']}" + (f" ({run['message']})" if run.get("message") else ""))
    print(run_id)
    return 0 if run["status"] == "done" else 1


def cmd_runs(args) -> int:
    from engine.store import Store

    with Store(args.db, read_only=True) as store:
        runs = store.runs()
    cols = [
        "run_id",
        "status",
        "model",
        "dataset",
        "constraint_text",
        "sampler",
        "evaluated",
        "num_subnets",
        "parent_accuracy",
        "parent_test_accuracy",
        "best_accuracy",
        "created_at",
    ]
    if args.json:
        print(runs[cols].to_json(orient="records", date_format="iso"))
    elif runs.empty:
        print(f"No runs in {args.db}.")
    else:
        print(runs[cols].to_string(index=False))
    return 0


def cmd_front(args) -> int:
    from engine.pareto import best_pick, knee, pareto_front
    from engine.store import Store

    with Store(args.db, read_only=True) as store:
        run = store.run(args.run_id)
        rows = store.subnets(args.run_id)
    front = pareto_front(rows, x=args.x)
    pick = best_pick(rows, run["budget"], x=_constraint_metric(run)) if len(rows) else None
    cols = ["subnet_id", "flops", "params", "accuracy", "loss", "sampler", "hash", "encoding"]
    cols += [c for c in ("depth", "tuned_accuracy") if c in front.columns]
    records = json.loads(front[cols].to_json(orient="records"))
    if args.json:
        print(json.dumps(records))
        return 0
    best = knee(front, x=args.x)
    print(
        f"run {args.run_id}: {run['model']} on {run['dataset']}, parent accuracy "
        f"{run['parent_accuracy']:.4f}, {run['parent_flops'] / 1e6:.2f} MFLOPs, {run['parent_params']:,} params"
    )
    print(FLOPS_NOTE)
    for r in records:
        mark = "  <- knee" if best is not None and r["subnet_id"] == best["subnet_id"] else ""
        depth = DEPTH_TEXT.get(r.get("depth") or "val")
        print(
            f"  #{r['subnet_id']:<5} {r['flops'] / 1e6:9.2f} MFLOPs {100 * r['flops'] / run['parent_flops']:6.1f}%"
            f"  {r['params']:>10,} params  acc {r['accuracy']:.4f} ({depth}){mark}"
        )
    if pick is not None:
        tuned = pick.get("tuned_accuracy")
        print(
            f"pick under the run's budget: #{int(pick['subnet_id'])}, acc {pick['accuracy']:.4f}"
            + (f", {tuned:.4f} after the short fine-tune" if tuned == tuned and tuned else "")
        )
    return 0


def _constraint_metric(run: dict) -> str:
    from engine.workspace import run_config

    return run_config(run).search.constraint.metric


def cmd_train(args) -> int:
    from tqdm import tqdm

    from engine.train import train_parent

    cfg = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed)
    bar = tqdm(total=args.epochs, unit="epoch", file=sys.stderr)

    def progress(event: dict) -> None:
        if event["stage"] == "epoch":
            bar.update(1)
            bar.set_postfix_str(f"val acc {event['val_accuracy']:.4f} ({event['seconds']:.0f}s)")

    result = train_parent(
        ModelSpec(name=args.model, weights="random"),
        _data_spec(args),
        cfg,
        args.out,
        progress=progress,
        device=args.device,
    )
    bar.close()
    print(
        f"test accuracy {result['test_accuracy']:.4f} after {args.epochs} epochs in "
        f"{result['seconds']:.0f}s -> {result['checkpoint']}"
    )
    return 0


def finetune_recipe(args) -> FinetuneRecipe:
    """The FinetuneRecipe the `finetune` command's flags describe."""
    return FinetuneRecipe.with_training(
        epochs=args.epochs,
        optimizer=args.optimizer,
        lr=args.lr,
        weight_decay=args.weight_decay,
        batch_size=args.batch_size,
        augment=not args.no_augment,
        distill=args.distill,
        temperature=args.temperature,
        alpha=args.alpha,
        seed=args.seed,
    )


def cmd_finetune(args) -> int:
    from tqdm import tqdm

    from engine.finetune import finetune
    from engine.store import Store

    recipe = finetune_recipe(args)
    bar = tqdm(total=args.epochs, unit="epoch", file=sys.stderr)

    def progress(event: dict) -> None:
        if event["stage"] == "train":
            bar.set_postfix_str(
                f"epoch {event['epoch']} batch {event['batch']}/{event['batches']} "
                f"loss {event['loss']:.3f} acc {event['accuracy']:.3f}"
            )
        else:
            bar.n = event["epoch"]
            bar.set_postfix_str(f"val acc {event['val_accuracy']:.4f} ({event['seconds']:.0f}s)")
        bar.refresh()

    with Store(args.db) as store:
        row = finetune(store, args.run_id, args.subnet_id, recipe, progress=progress)
    bar.close()
    print(
        f"fine-tune {row['finetune_id']} of run {args.run_id} subnet {args.subnet_id}: "
        f"validation {row['val_accuracy_before']:.4f} -> {row['val_accuracy_after']:.4f}, "
        f"test {row['test_accuracy_before']:.4f} -> {row['test_accuracy_after']:.4f} "
        f"in {row['seconds']:.0f}s; weights {row['checkpoint']}"
    )
    print(row["finetune_id"])
    return 0


def cmd_export(args) -> int:
    from engine.export import export_subnet
    from engine.store import Store
    from engine.workspace import latest_finetune

    config = ExportConfig(int8=args.int8, runs=args.runs, threads=args.threads)
    with Store(args.db) as store:
        finetune_id = args.finetuned
        if finetune_id == "latest":
            finetune_id = latest_finetune(store, args.run_id, args.subnet_id)

        def progress(event: dict) -> None:
            print(f"[{event['done'] + 1}/{event['total']}] {event['step']}", file=sys.stderr)

        report = export_subnet(
            store,
            args.run_id,
            args.subnet_id,
            out_dir=args.out,
            finetune_id=finetune_id,
            config=config,
            progress=progress,
        )
    s, lat, parity = report["subnet"], report["latency"], report["parity"]
    print(f"export {report['export_id']} -> {Path(args.out).resolve()}")
    print(
        f"parity max |ORT - PyTorch|: batch 1 {parity['batch_1']:.2e}, batch 8 {parity['batch_8']:.2e}"
    )
    print(
        f"FLOPs {s['flops_ratio']:.3f} of the parent, ONNX size {s['size_ratio']:.3f}; {FLOPS_NOTE}"
    )
    for batch in (1, 32):
        print(
            f"latency batch {batch}: subnet {lat['subnet'][f'batch_{batch}_ms']:.2f} ms, parent "
            f"{lat['parent'][f'batch_{batch}_ms']:.2f} ms, speedup {lat[f'speedup_batch_{batch}']:.2f}x "
            f"({lat['threads']} threads, median of {lat['runs']})"
        )
    if report["int8"]:
        q = report["int8"]
        print(
            f"INT8: validation {q['val_accuracy']:.4f} (drop {q['val_accuracy_drop']:+.4f}), {q['bytes']:,} bytes"
        )
    for name in report["files"].values():
        print(f"  {name}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m engine",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    default_db = str(db_path())

    s = sub.add_parser("search", help="sample and evaluate subnets; prints the run id")
    s.add_argument("--model", default=ModelSpec().name)
    s.add_argument(
        "--weights",
        default=ModelSpec().weights,
        help="builtin | pretrained | random | PATH to a state dict",
    )
    _add_data_args(s)
    s.add_argument(
        "--constraint",
        default=str(SEARCH["constraint"]),
        help="flops=50%%, params=1e6, runtime_flops=25%% (FLOPs with channels padded to "
        "ONNX Runtime's channel block, which is what decides CPU speed), ...",
    )
    s.add_argument("--subnets", type=int, default=SEARCH["num_subnets"])
    s.add_argument("--sampler", default=SEARCH["sampler"], choices=SAMPLERS)
    s.add_argument("--seed", type=int, default=SEARCH["seed"])
    s.add_argument("--round-to", type=int, default=SPACE["round_to"])
    s.add_argument(
        "--importance",
        default=SPACE["importance"],
        choices=IMPORTANCES,
        help="channel order within a group: "
        + "; ".join(f"{k}: {v}" for k, v in IMPORTANCE_TEXT.items()).replace("%", "%%"),
    )
    s.add_argument(
        "--channel-block",
        type=int,
        metavar="N",
        help="pad runtime FLOPs to blocks of N channels (16 on AVX-512 CPUs, 8 on AVX2); "
        "default: this machine's, read from ONNX Runtime",
    )
    s.add_argument("--batch-size", type=int, default=SEARCH["batch_size"])
    s.add_argument(
        "--screen-images",
        type=int,
        default=SEARCH["screen_images"],
        help="score every candidate on this many images first; only those near the screened "
        "front get the full validation split (0: all do)",
    )
    s.add_argument(
        "--tune-top",
        type=int,
        default=SEARCH["tune_top"],
        help="the best N under the budget get a short fine-tune distilled from the parent, and "
        "the pick is the best of them (0: none)",
    )
    s.add_argument(
        "--tune-images",
        type=int,
        default=SEARCH["tune_images"],
        help="training images in that short fine-tune",
    )
    s.add_argument("--resume", metavar="RUN_ID", help="continue this run (its stored settings win)")
    s.add_argument("--db", default=default_db)
    s.set_defaults(func=cmd_search)

    r = sub.add_parser("runs", help="list runs")
    r.add_argument("--db", default=default_db)
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_runs)

    f = sub.add_parser("front", help="print a run's Pareto front")
    f.add_argument("run_id")
    f.add_argument("--db", default=default_db)
    f.add_argument("--x", default="flops", choices=["flops", "params"])
    f.add_argument("--json", action="store_true")
    f.set_defaults(func=cmd_front)

    t = sub.add_parser("train", help="train a parent here; writes a self-describing checkpoint")
    t.add_argument("--model", default=ModelSpec().name)
    _add_data_args(t)
    t.add_argument("--epochs", type=int, default=TRAIN.epochs)
    t.add_argument("--lr", type=float, default=TRAIN.lr)
    t.add_argument("--batch-size", type=int, default=TRAIN.batch_size)
    t.add_argument("--seed", type=int, default=TRAIN.seed)
    t.add_argument("--out", required=True, help="checkpoint path (.safetensors)")
    t.add_argument("--device", default="cpu", help="where to train: cpu, cuda, cuda:1, ...")
    t.set_defaults(func=cmd_train)

    ft = sub.add_parser("finetune", help="fine-tune a stored subnet (resumes when run again)")
    ft.add_argument("run_id")
    ft.add_argument("subnet_id", type=int)
    tune = RECIPE.train
    ft.add_argument("--epochs", type=int, default=tune.epochs)
    ft.add_argument("--optimizer", default=tune.optimizer, choices=OPTIMIZERS)
    ft.add_argument(
        "--lr", type=float, default=tune.lr, help="starting learning rate (cosine decay)"
    )
    ft.add_argument("--weight-decay", type=float, default=tune.weight_decay)
    ft.add_argument("--batch-size", type=int, default=tune.batch_size)
    ft.add_argument("--no-augment", action="store_true", help="no random crop + flip")
    ft.add_argument("--distill", action="store_true", help="distil from the parent (KL + CE)")
    ft.add_argument("--temperature", type=float, default=RECIPE.temperature)
    ft.add_argument("--alpha", type=float, default=RECIPE.alpha, help="weight of the KL term")
    ft.add_argument("--seed", type=int, default=tune.seed)
    ft.add_argument("--db", default=default_db)
    ft.set_defaults(func=cmd_finetune)

    e = sub.add_parser("export", help="ONNX export checked in ONNX Runtime, with a model card")
    e.add_argument("run_id")
    e.add_argument("subnet_id", type=int)
    e.add_argument("--out", required=True, help="folder for the files")
    e.add_argument("--int8", action="store_true", help="also an INT8 model (static quantization)")
    e.add_argument(
        "--finetuned",
        nargs="?",
        const="latest",
        metavar="FINETUNE_ID",
        help="export the fine-tuned weights (the newest finished fine-tune unless an id is given)",
    )
    e.add_argument("--runs", type=int, default=EXPORT.runs, help="timed runs per latency figure")
    e.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (default: torch's)")
    e.add_argument("--db", default=default_db)
    e.set_defaults(func=cmd_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except PrunescopeError as exc:
        print(f"{exc.title}: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("Interrupted; resume with --resume RUN_ID.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

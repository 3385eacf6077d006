"""The export's report: `build_report` assembles model_card.json from the measurements, and
`model_card_markdown` renders it as MODEL_CARD.md."""

from __future__ import annotations

import importlib.metadata
import platform

import torch

from engine.config import FLOPS_NOTE, VAL_SOURCE_TEXT

LATENCY_BATCHES = (1, 32)
PACKAGES = ("torch", "torchvision", "torch-pruning", "onnx", "onnxruntime", "onnxscript", "numpy")
INT8_SCHEME = "static, QDQ, per-channel int8 weights, uint8 activations (MinMax)"


def _number(value) -> float | None:
    """A stored number, or None where the store holds NULL/NaN (runs from before it)."""
    return None if value is None or value != value else float(value)


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def build_report(
    *,
    export_id: str,
    run: dict,
    subnet: dict,
    finetune: dict | None,
    measured: dict,
    sizes: dict,
    parity: dict,
    latency: dict,
    int8: dict | None,
    preprocessing: dict,
    channel_block: int,
) -> dict:
    """model_card.json. `measured`: val/test accuracy of the exported model in PyTorch, its
    validation accuracy in ONNX Runtime, runtime FLOPs of parent and subnet and the subnet's
    counted params; `sizes`: ONNX bytes of parent and subnet; `parity`: max differences with
    tolerance and verdict; `latency`: threads, runs and a table per session (engine.onnx)."""
    flops, params = float(subnet["flops"]), int(subnet["params"])
    parent_flops, parent_params = float(run["parent_flops"]), int(run["parent_params"])
    table = latency["table"]
    lat = {"threads": latency["threads"], "runs": latency["runs"]}
    lat |= {"subnet": table["subnet"], "parent": table["parent"]}
    for batch in LATENCY_BATCHES:
        key = f"batch_{batch}_ms"
        lat[f"speedup_batch_{batch}"] = table["parent"][key] / table["subnet"][key]
    if int8 is not None:
        int8 = {**int8, "latency": table["int8"], "scheme": INT8_SCHEME}
    return {
        "export_id": export_id,
        "run_id": run["run_id"],
        "subnet_id": int(subnet["subnet_id"]),
        "finetune_id": finetune["finetune_id"] if finetune else None,
        "parent": {
            "model": run["model"],
            "weights": run["weights"],
            "dataset": run["dataset"],
            "flops": parent_flops,
            "params": parent_params,
            "val_accuracy": float(run["parent_accuracy"]),
            "test_accuracy": _number(run.get("parent_test_accuracy")),
            "validation_split": ((run.get("config") or {}).get("data") or {}).get(
                "val_from", "train"
            ),
            "onnx_bytes": sizes["parent"],
            "runtime_flops": measured["parent_runtime_flops"],
        },
        "subnet": {
            "encoding": subnet["encoding"],
            "hash": subnet["hash"],
            "flops": flops,
            "params": params,
            "params_counted": measured["params_counted"],
            "flops_ratio": flops / parent_flops,
            "params_ratio": params / parent_params,
            "onnx_bytes": sizes["subnet"],
            "size_ratio": sizes["subnet"] / sizes["parent"],
            "runtime_flops": measured["runtime_flops"],
            "runtime_flops_ratio": measured["runtime_flops"] / measured["parent_runtime_flops"],
        },
        "accuracy": {
            "val_recalibrated": float(subnet["accuracy"]),
            "val_before_finetune": (
                finetune["val_accuracy_before"] if finetune else measured["val_accuracy"]
            ),
            "test_before_finetune": (
                finetune["test_accuracy_before"] if finetune else measured["test_accuracy"]
            ),
            "val_after_finetune": finetune["val_accuracy_after"] if finetune else None,
            "test_after_finetune": finetune["test_accuracy_after"] if finetune else None,
            "val_exported": measured["val_accuracy"],
            "test_exported": measured["test_accuracy"],
            "val_onnxruntime": measured["val_onnxruntime"],
            "finetune_recipe": finetune["recipe"] if finetune else None,
        },
        "parity": parity,
        "latency": lat,
        "int8": int8,
        "preprocessing": preprocessing,
        "flops_note": FLOPS_NOTE,
        "channel_block": channel_block,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
        "versions": package_versions(),
    }


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}%"


def model_card_markdown(r: dict) -> str:
    p, s, a, lat = r["parent"], r["subnet"], r["accuracy"], r["latency"]
    lines = [
        f"# Model card: {p['model']} subnet {r['subnet_id']} of run {r['run_id']}",
        "",
        f"Pruned from **{p['model']}** ({p['weights']}) on **{p['dataset']}** by Prunescope. "
        + (
            "Fine-tuned (`" + str(r["finetune_id"]) + "`)."
            if r["finetune_id"]
            else "Not fine-tuned; BatchNorm statistics recalibrated after pruning."
        ),
        "",
        "| | parent | subnet | ratio |",
        "|---|---:|---:|---:|",
        f"| FLOPs per image | {p['flops']:,.0f} | {s['flops']:,.0f} | {s['flops_ratio']:.3f} |",
        f"| params | {p['params']:,} | {s['params']:,} | {s['params_ratio']:.3f} |",
        f"| ONNX file bytes | {p['onnx_bytes']:,} | {s['onnx_bytes']:,} | {s['size_ratio']:.3f} |",
    ]
    if "runtime_flops" in s:
        lines.append(
            f"| FLOPs as ONNX Runtime computes them (channels padded to multiples of "
            f"{r['channel_block']}) | {p['runtime_flops']:,.0f} | {s['runtime_flops']:,.0f} | "
            f"{s['runtime_flops_ratio']:.3f} |"
        )
    for batch in LATENCY_BATCHES:
        key = f"batch_{batch}_ms"
        lines.append(
            f"| ONNX Runtime latency, batch {batch} (ms) | {lat['parent'][key]:.2f} | "
            f"{lat['subnet'][key]:.2f} | speedup {lat[f'speedup_batch_{batch}']:.2f}x |"
        )
    lines += [
        "",
        f"Latency: median of {lat['runs']} runs, {lat['threads']} intra-op threads, CPU, "
        f"on {r['machine']}. {r['flops_note']}",
        "",
        "## Accuracy (top-1)",
        "",
        f"- parent: search-validation {_pct(p['val_accuracy'])}, test "
        f"{_pct(p.get('test_accuracy'))}",
        "- search-validation images: "
        + VAL_SOURCE_TEXT.get(p.get("validation_split", "train"), VAL_SOURCE_TEXT["train"]),
        f"- subnet after pruning + BatchNorm recalibration: validation {_pct(a['val_before_finetune'])}, "
        f"test {_pct(a['test_before_finetune'])}",
        f"- after fine-tune: validation {_pct(a['val_after_finetune'])}, test {_pct(a['test_after_finetune'])}",
        f"- exported model in ONNX Runtime, validation: {_pct(a['val_onnxruntime'])}",
        "",
        "## Checks",
        "",
        "- `onnx.checker.check_model(full_check=True)`: passed; dynamic batch dimension on `input`.",
        f"- parity with PyTorch (max abs logit difference): batch 1 {r['parity']['batch_1']:.2e}, "
        f"batch 8 {r['parity']['batch_8']:.2e}; tolerance {r['parity']['tolerance']:g}: "
        + ("**passed**" if r["parity"]["ok"] else "**FAILED**"),
    ]
    if r["int8"]:
        q = r["int8"]
        lines += [
            "",
            "## INT8",
            "",
            f"- {q['scheme']}, calibrated on {q['calibration_images']} training images",
            f"- validation accuracy in ONNX Runtime {_pct(q['val_accuracy'])} "
            f"(drop {100 * q['val_accuracy_drop']:.2f} points), {q['bytes']:,} bytes",
            f"- latency batch 1 {q['latency']['batch_1_ms']:.2f} ms, "
            f"batch 32 {q['latency']['batch_32_ms']:.2f} ms",
        ]
    pre = r["preprocessing"]
    lines += [
        "",
        "## Use",
        "",
        f"Input `input`: float32 [batch, {', '.join(map(str, pre['input']))}]; {pre['scale']} with "
        f"mean {[round(m, 4) for m in pre['mean']]} and std {[round(v, 4) for v in pre['std']]}. "
        "Output `logits`.",
        "",
        "Rebuild in PyTorch: `engine.export.load_subnet_files('model.safetensors', 'subnet.json')`.",
        "",
        f"Channel widths per group (encoding): `{s['encoding']}` (hash `{s['hash']}`).",
        "",
        "## Versions",
        "",
        ", ".join(f"{k} {v}" for k, v in r["versions"].items()),
        "",
    ]
    return "\n".join(lines)

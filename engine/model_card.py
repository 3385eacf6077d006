"""The human-readable model card (MODEL_CARD.md) written beside model_card.json by an export."""

from __future__ import annotations

LATENCY_BATCHES = (1, 32)


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
        f"- parent, search-validation: {_pct(p['val_accuracy'])}",
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

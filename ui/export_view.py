"""An export's report on the page: parent vs subnet, parity, INT8, the model card, downloads.

Everything shown comes from the stored report (the `exports` row); the files are read from the
row's folder only when a download button is pressed, and a folder that is gone says so.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import streamlit as st

from engine.model_card import model_card_markdown
from ui.format import FLOPS_NOTE, duration, megabytes, pct, recipe_epochs, recipe_text, si

# Download buttons, in this order: role -> what the file is (roles as engine.export names them).
DOWNLOADS = {
    "onnx": "the ONNX model (float32)",
    "onnx_int8": "the INT8 ONNX model",
    "weights": "the weights, for PyTorch",
    "description": "the subnet description that rebuilds the weights' architecture",
    "card_md": "the model card",
    "card_json": "the model card as JSON, with every measurement",
}
MIME = {
    ".onnx": "application/octet-stream",
    ".safetensors": "application/octet-stream",
    ".json": "application/json",
    ".md": "text/markdown",
    ".zip": "application/zip",
}


def _ratio(x: float) -> str:
    return f"{x:.2f}×"


def _speedup(x: float) -> str:
    return f"{x:.2f}× faster" if x >= 1 else f"{1 / x:.2f}× slower"


RECALIBRATED = "recalibrated"  # the export source that is not a fine-tune


def _change(before, after) -> str:
    """'80.10% → 84.30%', or just the first when there is no after yet."""
    return pct(before, 2) + ("" if after is None else f" → {pct(after, 2)}")


def finetunes_table(records: list[dict], statuses: list[str]) -> pd.DataFrame:
    """One line per fine-tune of a subnet: recipe, progress, accuracy before → after."""
    return pd.DataFrame(
        {
            "fine-tune": [r["finetune_id"] for r in records],
            "status": statuses,
            "recipe": [recipe_text(r["recipe"] or {}) for r in records],
            "epochs": [
                f"{int(r['epochs_done'] or 0)} / {recipe_epochs(r['recipe'])}" for r in records
            ],
            "validation before → after": [
                _change(r["val_accuracy_before"], r["val_accuracy_after"]) for r in records
            ],
            "test before → after": [
                _change(r["test_accuracy_before"], r["test_accuracy_after"]) for r in records
            ],
            "time": [duration(r["seconds"] or 0) for r in records],
            "started (UTC)": [r["created_at"] for r in records],
            "message": [r["message"] or "" for r in records],
        }
    )


def _folder_text(out_dir: str | None) -> str:
    return str(out_dir) + ("" if out_dir and Path(out_dir).is_dir() else "  (missing)")


def exports_table(records: dict[str, dict]) -> pd.DataFrame:
    """One line per export of a run: source, checks, measured speedups, file size, folder."""
    rows = list(records.values())
    return pd.DataFrame(
        {
            "export": list(records),
            "created (UTC)": [r["created_at"] for r in rows],
            "subnet": [int(r["subnet_id"]) for r in rows],
            "source": [r["finetune_id"] or RECALIBRATED for r in rows],
            "INT8": [bool(r["int8"]) for r in rows],
            "parity": ["passed" if r["report"]["parity"]["ok"] else "FAILED" for r in rows],
            **{
                f"speedup, batch {b}": [
                    f"{r['report']['latency'][f'speedup_batch_{b}']:.2f}×" for r in rows
                ]
                for b in (1, 32)
            },
            "ONNX file": [megabytes(r["report"]["subnet"]["onnx_bytes"]) for r in rows],
            "folder": [_folder_text(r["out_dir"]) for r in rows],
        }
    )


def padding_note(block: int) -> str:
    """Why a subnet can save more FLOPs than time, when ONNX Runtime blocks channels here."""
    if block <= 1:
        return ""
    return (
        f" ONNX Runtime computes convolutions here in blocks of {block} channels: a layer whose "
        f"width is not a multiple of {block} costs as much as the next multiple, so the padded "
        "FLOPs predict the speedup better than the FLOPs."
    )


def comparison_markdown(report: dict) -> str:
    """Parent next to subnet: FLOPs, params, ONNX bytes, ONNX Runtime latency, accuracy."""
    p, s, a, lat = report["parent"], report["subnet"], report["accuracy"], report["latency"]
    acc = a.get("val_exported")
    lines = [
        f"| | Parent | Subnet {report['subnet_id']} | Subnet vs parent |",
        "|---|---:|---:|---:|",
        f"| FLOPs per image | {si(p['flops'])} | {si(s['flops'])} | {_ratio(s['flops_ratio'])} "
        f"({pct(1 - s['flops_ratio'])} fewer) |",
        *(
            [
                f"| FLOPs as ONNX Runtime computes them (channels padded to multiples of "
                f"{report['channel_block']}) | {si(p['runtime_flops'])} | "
                f"{si(s['runtime_flops'])} | {_ratio(s['runtime_flops_ratio'])} |"
            ]
            if "runtime_flops" in s
            else []
        ),
        f"| Params | {si(p['params'])} | {si(s['params'])} | {_ratio(s['params_ratio'])} |",
        f"| ONNX file | {megabytes(p['onnx_bytes'])} | {megabytes(s['onnx_bytes'])} "
        f"| {_ratio(s['size_ratio'])} |",
    ]
    for batch in (1, 32):
        key = f"batch_{batch}_ms"
        lines.append(
            f"| ONNX Runtime latency, batch {batch} | {lat['parent'][key]:.2f} ms "
            f"| {lat['subnet'][key]:.2f} ms | {_speedup(lat[f'speedup_batch_{batch}'])} |"
        )
    if acc is not None:
        lines.append(
            f"| Accuracy (search-validation) | {pct(p['val_accuracy'], 2)} | {pct(acc, 2)} "
            f"| {100 * (acc - p['val_accuracy']):+.2f} pp |"
        )
    return "\n".join(lines)


def int8_markdown(report: dict) -> str:
    """The INT8 file against the float one: accuracy in ONNX Runtime, bytes, latency."""
    q, s, lat = report["int8"], report["subnet"], report["latency"]["subnet"]
    fp32_acc = report["accuracy"]["val_onnxruntime"]
    return "\n".join(
        [
            "| | Float32 subnet | INT8 subnet | Change |",
            "|---|---:|---:|---:|",
            f"| Accuracy in ONNX Runtime (search-validation) | {pct(fp32_acc, 2)} "
            f"| {pct(q['val_accuracy'], 2)} | {-100 * q['val_accuracy_drop']:+.2f} pp |",
            f"| ONNX file | {megabytes(s['onnx_bytes'])} | {megabytes(q['bytes'])} "
            f"| {_ratio(q['bytes'] / s['onnx_bytes'])} |",
            *(
                f"| Latency, batch {b} | {lat[f'batch_{b}_ms']:.2f} ms "
                f"| {q['latency'][f'batch_{b}_ms']:.2f} ms "
                f"| {_speedup(lat[f'batch_{b}_ms'] / q['latency'][f'batch_{b}_ms'])} |"
                for b in (1, 32)
            ),
        ]
    )


def accuracy_text(report: dict) -> str:
    a = report["accuracy"]
    text = (
        f"As pruned and recalibrated: validation {pct(a['val_before_finetune'], 2)}, "
        f"test {pct(a['test_before_finetune'], 2)}."
    )
    if report.get("finetune_id"):
        recipe = recipe_text(a["finetune_recipe"]) if a.get("finetune_recipe") else ""
        text += (
            f" After fine-tune `{report['finetune_id']}` ({recipe}): validation "
            f"{pct(a['val_after_finetune'], 2)}, test {pct(a['test_after_finetune'], 2)}."
        )
    return text + f" Exported file in ONNX Runtime: validation {pct(a['val_onnxruntime'], 2)}."


def _shift_headings(markdown: str, levels: int = 2) -> str:
    """`# Title` -> `### Title`: the card sits under the page's own headings."""
    return re.sub(
        r"^(#{1,4}) ", lambda m: "#" * (len(m.group(1)) + levels) + " ", markdown, flags=re.M
    )


def show_report(row: dict) -> None:
    """The report of one export (a row of Store.exports), then its download buttons."""
    report = row["report"]
    source = f"fine-tune `{report['finetune_id']}`" if report.get("finetune_id") else "recalibrated"
    st.markdown(
        f"**Export `{row['export_id']}`** · subnet {report['subnet_id']} ({source})"
        + (" · with INT8" if report.get("int8") else "")
        + f" · {row['created_at']:%Y-%m-%d %H:%M} UTC"
    )
    st.markdown(comparison_markdown(report))
    lat = report["latency"]
    threads = f"{lat['threads']} intra-op thread{'s' if lat['threads'] != 1 else ''}"
    st.caption(
        f"Latency: ONNX Runtime on this machine's CPU, median of {lat['runs']} runs, {threads}; "
        f"the parent exported and timed the same way. {FLOPS_NOTE}"
        + padding_note(report.get("channel_block", 1))
    )
    st.markdown(accuracy_text(report))
    par = report["parity"]
    numbers = (
        f"max |ONNX Runtime − PyTorch| on the logits: {par['batch_1']:.1e} at batch 1, "
        f"{par['batch_8']:.1e} at batch 8; tolerance {par['tolerance']:.0e}."
    )
    if par["ok"]:
        st.success(f"**Parity passed** — {numbers}", icon=":material/check_circle:")
    else:
        st.error(f"**Parity failed** — {numbers} Do not ship this file.", icon=":material/error:")
    if report.get("int8"):
        st.markdown("**INT8**")
        st.markdown(int8_markdown(report))
        q = report["int8"]
        st.caption(f"{q['scheme']}; calibrated on {q['calibration_images']} training images.")
    folder = Path(row["out_dir"] or "")
    card = folder / report["files"].get("card_md", "MODEL_CARD.md")
    with st.expander("Model card (MODEL_CARD.md)", expanded=True):
        text = card.read_text() if card.is_file() else model_card_markdown(report)
        st.markdown(_shift_headings(text))
    download_buttons(row)


def download_buttons(row: dict) -> None:
    """One button per file of the export and one for the zip; a missing folder is explained."""
    export_id, folder = row["export_id"], Path(row["out_dir"] or "")
    files = row["report"].get("files", {})
    if not folder.is_dir():
        st.error(
            f"**Export files missing** — The folder `{folder}` of export {export_id} no longer "
            "exists (deleted or moved), so its files cannot be downloaded. The report above "
            "comes from the results database; export the subnet again for new files."
        )
        return
    st.markdown("**Download**")
    if "zip" in files:
        _download(folder / files["zip"], "All files (.zip)", "every file below", primary=True)
    roles = [r for r in DOWNLOADS if r in files]
    columns = st.columns(3)
    for i, role in enumerate(roles):
        with columns[i % 3]:
            _download(folder / files[role], files[role], DOWNLOADS[role])


def _download(path: Path, label: str, what: str, primary: bool = False) -> None:
    there = path.is_file()
    st.download_button(
        label if there else f"{label} (missing)",
        data=lambda: path.read_bytes(),  # read on click, not on every rerun
        file_name=path.name,
        mime=MIME.get(path.suffix, "application/octet-stream"),
        key=f"download_{path.parent.name}_{path.name}",
        on_click="ignore",
        type="primary" if primary else "secondary",
        icon=":material/download:",
        disabled=not there,
        help=f"{what.capitalize()}: {megabytes(path.stat().st_size)}."
        if there
        else f"{path} is gone.",
        width="content" if primary else "stretch",
    )

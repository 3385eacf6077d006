"""Export a stored subnet to ONNX and prove it: checker, parity, latency, size, optional INT8,
model card, one zip.

Every figure is measured on this machine in ONNX Runtime (CPU), for the subnet and for its parent
exported the same way, so the card says what pruning bought in time and bytes, not only FLOPs.
"""

from __future__ import annotations

import json
import tempfile
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from engine.config import ExportConfig, ModelSpec
from engine.errors import ConfigError, ExportError
from engine.evaluate import accuracy_and_loss
from engine.model_card import LATENCY_BATCHES, build_report, model_card_markdown
from engine.models import count_params, create_model, save_checkpoint
from engine.onnx import (
    PARITY_TOLERANCE,
    export_onnx,
    latency_table,
    onnx_accuracy,
    parity,
    quantize_int8,
    session,
)
from engine.parent import Parent
from engine.runtime import channel_block, runtime_flops
from engine.space import SearchSpace
from engine.store import Store
from engine.workspace import (
    cut_with_weights,
    exports_dir,
    finetuned_subnet,
    finished_finetune,
    rebuild_parent,
    scored_subnet,
    usable_subnet,
)

DESCRIPTION_FORMAT = "prunescope-subnet/1"
FILES = {  # role -> file name inside the export folder
    "onnx": "model.onnx",
    "onnx_int8": "model.int8.onnx",
    "weights": "model.safetensors",
    "description": "subnet.json",
    "card_json": "model_card.json",
    "card_md": "MODEL_CARD.md",
}
STEPS = ("model", "onnx", "parity", "parent", "int8", "latency", "card")


# --- rebuilding a downloaded subnet ------------------------------------------------------------


def describe_subnet(parent: Parent, encoding) -> dict:
    """What `load_subnet_files` needs to rebuild the network, plus the input preprocessing."""
    spec = {**parent.model_spec.to_dict(), "weights": "random", "weights_path": None}
    return {
        "format": DESCRIPTION_FORMAT,
        "model": spec,
        "space": parent.space.to_dict(),
        "encoding": [int(w) for w in encoding],
        "preprocessing": preprocessing(parent),
        "class_names": list(parent.splits.class_names),
    }


def preprocessing(parent: Parent) -> dict:
    s = parent.splits
    return {
        "input": [3, s.image_size, s.image_size],
        "scale": "pixels / 255, then (x - mean) / std per RGB channel",
        "mean": list(s.mean),
        "std": list(s.std),
    }


def load_subnet_files(weights: str | Path, description: str | Path) -> nn.Module:
    """Rebuild an exported subnet from its `.safetensors` and `subnet.json`, without the parent."""
    try:
        desc = json.loads(Path(description).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"Cannot read the subnet description {description}: {exc}") from exc
    if not isinstance(desc, dict) or desc.get("format") != DESCRIPTION_FORMAT:
        raise ConfigError(f"{description} is not a Prunescope subnet description.")
    spec = ModelSpec.from_dict({**desc["model"], "weights": "random", "weights_path": None})
    example = torch.zeros(1, spec.in_channels, spec.image_size, spec.image_size)
    space = SearchSpace.from_dict(desc["space"])
    return cut_with_weights(create_model(spec), space, desc["encoding"], example, weights)


# --- the export of one stored subnet -----------------------------------------------------------


def export_subnet(
    store: Store,
    run_id: str,
    subnet_id: int,
    *,
    out_dir: str | Path | None = None,
    finetune_id: str | None = None,
    config: ExportConfig | None = None,
    parent: Parent | None = None,
    progress: Callable[[dict], None] | None = None,
) -> dict:
    """Export a subnet (as recalibrated, or as fine-tuned by `finetune_id`); returns the report.

    Writes into `out_dir` (default: the data folder's exports/<export_id>) the ONNX file, the
    INT8 file when asked, the weights with their rebuild description, the model card and one
    zip, then records an `exports` row. Raises ExportError when the ONNX file fails parity.
    """
    cfg = config or ExportConfig()
    threads = cfg.threads or torch.get_num_threads()
    export_id = uuid.uuid4().hex[:12]
    folder = Path(out_dir) if out_dir else exports_dir() / export_id

    def step(name: str) -> None:
        if progress:
            progress({"stage": "export", "step": name, "done": STEPS.index(name), "total": 7})

    step("model")
    run = store.run(run_id)
    subnet = usable_subnet(store, run_id, subnet_id)
    parent = parent or rebuild_parent(run)
    encoding = subnet["encoding"]
    tuned = finished_finetune(store, run_id, subnet_id, finetune_id) if finetune_id else None
    if tuned:
        model = finetuned_subnet(parent, encoding, tuned["checkpoint"])
    else:
        model = scored_subnet(parent, run, encoding)
    folder.mkdir(parents=True, exist_ok=True)
    files = {k: folder / v for k, v in FILES.items() if cfg.int8 or k != "onnx_int8"}
    val_x, val_y = parent.splits.tensors("val")
    test_x, test_y = parent.splits.tensors("test")
    measured = {
        "val_accuracy": accuracy_and_loss(model, val_x, val_y)[0],
        "test_accuracy": accuracy_and_loss(model, test_x, test_y)[0],
        "params_counted": count_params(model),
    }
    meta = {"kind": "subnet", "run_id": run_id, "subnet_id": int(subnet_id), "encoding": encoding}
    save_checkpoint(model, files["weights"], meta)
    files["description"].write_text(json.dumps(describe_subnet(parent, encoding), indent=2))

    step("onnx")
    export_onnx(model, parent.example_input, files["onnx"])
    sessions = {"subnet": session(files["onnx"], threads)}

    step("parity")
    diffs = parity(model, sessions["subnet"], val_x[:8])
    verdict = {
        **diffs,
        "tolerance": PARITY_TOLERANCE,
        "ok": max(diffs.values()) <= PARITY_TOLERANCE,
    }
    measured["val_onnxruntime"] = onnx_accuracy(sessions["subnet"], val_x, val_y)

    with tempfile.TemporaryDirectory() as tmp:
        step("parent")
        parent_onnx = export_onnx(parent.model, parent.example_input, Path(tmp) / "parent.onnx")
        sessions["parent"] = session(parent_onnx, threads)
        sizes = {"parent": parent_onnx.stat().st_size, "subnet": files["onnx"].stat().st_size}

        step("int8")
        int8 = None
        if cfg.int8:
            images = cfg.int8_calibration_images
            calib_x = parent.splits.sample("calib", images)[0]  # every class, not the first few
            quantize_int8(files["onnx"], files["onnx_int8"], calib_x)
            sessions["int8"] = session(files["onnx_int8"], threads)
            accuracy = onnx_accuracy(sessions["int8"], val_x, val_y)
            int8 = {
                "val_accuracy": accuracy,
                "val_accuracy_drop": measured["val_onnxruntime"] - accuracy,
                "bytes": files["onnx_int8"].stat().st_size,
                "calibration_images": min(images, len(calib_x)),
            }

        step("latency")
        shape = tuple(parent.example_input.shape[1:])
        table = latency_table(sessions, shape, LATENCY_BATCHES, cfg.runs)

    step("card")
    block = channel_block()
    measured["parent_runtime_flops"] = runtime_flops(parent.model, parent.example_input, block)
    measured["runtime_flops"] = runtime_flops(model, parent.example_input, block)
    report = build_report(
        export_id=export_id,
        run=run,
        subnet=subnet,
        finetune=tuned,
        measured=measured,
        sizes=sizes,
        parity=verdict,
        latency={"threads": threads, "runs": cfg.runs, "table": table},
        int8=int8,
        preprocessing=preprocessing(parent),
        channel_block=block,
    )
    _write_card_and_zip(report, files, folder / f"prunescope-{run_id}-subnet{int(subnet_id)}.zip")
    store.add_export(
        {
            "export_id": export_id,
            "run_id": run_id,
            "subnet_id": int(subnet_id),
            "finetune_id": finetune_id,
            "out_dir": str(folder.resolve()),
            "int8": cfg.int8,
            "report": report,
        }
    )
    if not verdict["ok"]:
        raise ExportError(
            f"ONNX Runtime differs from PyTorch by {max(diffs.values()):.2e} "
            f"(> {PARITY_TOLERANCE:g}); the files in {folder} are kept for inspection."
        )
    return report


def _write_card_and_zip(report: dict, files: dict[str, Path], bundle: Path) -> None:
    """model_card.json and MODEL_CARD.md, then every file in one zip (named in the report)."""
    report["files"] = {k: p.name for k, p in files.items()}
    files["card_json"].write_text(json.dumps(report, indent=2))
    files["card_md"].write_text(model_card_markdown(report))
    with zipfile.ZipFile(bundle, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in files.values():
            zf.write(path, path.name)
    report["files"]["zip"] = bundle.name

"""Export a subnet to ONNX and prove it: checker, parity, latency, size, optional INT8, model card.

Every figure is measured on this machine in ONNX Runtime (CPU), for the subnet and for its parent
exported the same way, so the card says what pruning bought in time and bytes, not only FLOPs.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import statistics
import tempfile
import time
import uuid
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engine.config import ModelSpec, home_dir
from engine.errors import ConfigError, ExportError
from engine.evaluate import SubnetEvaluator, accuracy_and_loss
from engine.finetune import cut_with_weights, load_finetuned, usable_subnet
from engine.model_card import LATENCY_BATCHES, model_card_markdown
from engine.models import (
    count_params,
    create_model,
    save_checkpoint,
)
from engine.parent import Parent
from engine.runtime import channel_block, runtime_flops
from engine.search import resume_parent
from engine.space import SearchSpace
from engine.store import Store

PARITY_TOLERANCE = 1e-4  # max |ONNX Runtime - PyTorch| on float32 logits
DESCRIPTION_FORMAT = "prunescope-subnet/1"
PACKAGES = ("torch", "torchvision", "torch-pruning", "onnx", "onnxruntime", "onnxscript", "numpy")
FILES = {  # role -> file name inside the export folder
    "onnx": "model.onnx",
    "onnx_int8": "model.int8.onnx",
    "weights": "model.safetensors",
    "description": "subnet.json",
    "card_json": "model_card.json",
    "card_md": "MODEL_CARD.md",
}
LATENCY_BLOCK = 5  # timed runs per turn of a session
LATENCY_PAUSE_S = 0.05  # before each turn: the previous session's threads stop spinning


# --- ONNX building blocks ------------------------------------------------------------------------


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> Path:
    """ONNX with a dynamic batch dimension (input `input`, output `logits`), checked in full."""
    path.parent.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1, max=65536)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model.eval(),
                (example.repeat(2, 1, 1, 1),),
                str(path),
                input_names=["input"],
                output_names=["logits"],
                dynamic_shapes=({0: batch},),
                dynamo=True,
                external_data=False,
                verbose=False,
            )
    except Exception as exc:
        raise ExportError(f"torch.onnx.export failed: {type(exc).__name__}: {exc}") from exc
    check_onnx(path)
    return path


def check_onnx(path: Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        raise ExportError(f"{path.name} fails onnx.checker (full check): {exc}") from exc


def session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(sess, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    name = sess.get_inputs()[0].name
    return np.concatenate(
        [sess.run(None, {name: x[i : i + batch_size]})[0] for i in range(0, len(x), batch_size)]
    )


def parity(model: nn.Module, sess, x: torch.Tensor) -> dict[str, float]:
    """Max abs difference between PyTorch and ONNX Runtime logits at batch 1 and 8."""
    out = {}
    for batch in (1, 8):
        xb = x[:batch]
        with torch.inference_mode():
            expected = model.eval()(xb).numpy()
        got = sess.run(None, {sess.get_inputs()[0].name: xb.numpy()})[0]
        out[f"batch_{batch}"] = float(np.abs(got - expected).max())
    return out


def latencies_ms(sessions: dict, shape: tuple[int, ...], batch: int, runs: int) -> dict:
    """Median wall time per session of `runs` timed runs at this batch size.

    The sessions take turns in blocks of LATENCY_BLOCK runs (in alternating order), so a change
    in machine load hits all of them alike. Each block starts after a pause and one untimed run:
    ONNX Runtime's threads keep spinning after a run, and the last session's spinning threads
    would otherwise slow the next one (measured: run-by-run turns doubled batch-32 times here).
    """
    x = np.random.default_rng(0).standard_normal((batch, *shape)).astype(np.float32)
    feeds = {name: {s.get_inputs()[0].name: x} for name, s in sessions.items()}
    for name, sess in sessions.items():
        for _ in range(3):
            sess.run(None, feeds[name])
    times = {name: [] for name in sessions}
    order = list(sessions)
    for i, first in enumerate(range(0, runs, LATENCY_BLOCK)):
        for name in order if i % 2 == 0 else order[::-1]:
            time.sleep(LATENCY_PAUSE_S)
            sessions[name].run(None, feeds[name])
            for _ in range(min(LATENCY_BLOCK, runs - first)):
                start = time.perf_counter()
                sessions[name].run(None, feeds[name])
                times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(t) for name, t in times.items()}


def onnx_accuracy(sess, x: torch.Tensor, y: torch.Tensor) -> float:
    logits = run_onnx(sess, x.numpy())
    return float((logits.argmax(1) == y.numpy()).mean())


def quantize_int8(fp32: Path, out: Path, calib_x: torch.Tensor, images: int = 512) -> Path:
    """ONNX Runtime static quantization (QDQ, per-channel int8 weights, uint8 activations)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self):
            data = calib_x[:images].numpy()
            self.batches = iter([{"input": data[i : i + 64]} for i in range(0, len(data), 64)])

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        try:
            quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
            quantize_static(
                str(prepared),
                str(out),
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,  # U8S8: faster than S8S8 here (measured)
                weight_type=QuantType.QInt8,
            )
        except Exception as exc:
            raise ExportError(f"INT8 quantization failed: {type(exc).__name__}: {exc}") from exc
    check_onnx(out)
    return out


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


# --- rebuilding a downloaded subnet ------------------------------------------------------------


def describe_subnet(parent: Parent, encoding) -> dict:
    """What `load_subnet_files` needs to rebuild the network, plus the input preprocessing."""
    spec = {**parent.model_spec.to_dict(), "weights": "random", "weights_path": None}
    splits = parent.splits
    return {
        "format": DESCRIPTION_FORMAT,
        "model": spec,
        "space": parent.space.to_dict(),
        "encoding": [int(w) for w in encoding],
        "preprocessing": preprocessing(parent),
        "class_names": list(splits.class_names),
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
    if desc.get("format") != DESCRIPTION_FORMAT:
        raise ConfigError(f"{description} is not a Prunescope subnet description.")
    spec = ModelSpec(**{**desc["model"], "weights": "random", "weights_path": None})
    example = torch.zeros(1, spec.in_channels, spec.image_size, spec.image_size)
    space = SearchSpace.from_dict(desc["space"])
    return cut_with_weights(create_model(spec), space, desc["encoding"], example, weights)


# --- the export of one stored subnet ---------------------------------------------------------


def export_subnet(
    store: Store,
    run_id: str,
    subnet_id: int,
    *,
    out_dir: str | Path | None = None,
    finetune_id: str | None = None,
    int8: bool = False,
    runs: int = 20,
    threads: int | None = None,
    parent: Parent | None = None,
    progress: Callable[[dict], None] | None = None,
) -> dict:
    """Export a subnet (as recalibrated, or as fine-tuned by `finetune_id`); returns the report.

    Writes into `out_dir` (default: $PRUNESCOPE_HOME/exports/<export_id>) the ONNX file, the INT8
    file when asked, the weights with their rebuild description, the model card and one zip, then
    records an `exports` row. Raises ExportError when the ONNX file fails parity.
    """
    export_id = uuid.uuid4().hex[:12]
    folder = Path(out_dir) if out_dir else home_dir() / "exports" / export_id
    threads = threads or torch.get_num_threads()
    steps = ["model", "onnx", "parity", "parent", "int8", "latency", "card"]

    def step(name: str) -> None:
        if progress:
            progress(
                {"stage": "export", "step": name, "done": steps.index(name), "total": len(steps)}
            )

    step("model")
    run = store.run(run_id)
    subnet = usable_subnet(store, run_id, subnet_id)
    parent = parent or resume_parent(run)
    encoding = subnet["encoding"]
    tuned = None
    if finetune_id:
        tuned = store.finetune(finetune_id)
        if tuned is None or tuned["run_id"] != run_id or int(tuned["subnet_id"]) != int(subnet_id):
            raise ConfigError(f"Fine-tune {finetune_id} does not belong to subnet {subnet_id}.")
        if tuned["status"] != "done" or not Path(tuned["checkpoint"] or "").is_file():
            raise ConfigError(f"Fine-tune {finetune_id} has not finished; resume it first.")
        model = load_finetuned(parent, encoding, tuned["checkpoint"])
    else:
        model = SubnetEvaluator(parent).build(encoding)
    folder.mkdir(parents=True, exist_ok=True)
    files = {k: folder / v for k, v in FILES.items()}
    val_x, val_y = parent.splits.tensors("val")
    test_x, test_y = parent.splits.tensors("test")
    calib_x, _ = parent.splits.tensors("calib")
    val_accuracy = accuracy_and_loss(model, val_x, val_y)[0]
    test_accuracy = accuracy_and_loss(model, test_x, test_y)[0]
    save_checkpoint(
        model,
        files["weights"],
        {"kind": "subnet", "run_id": run_id, "subnet_id": int(subnet_id), "encoding": encoding},
    )
    files["description"].write_text(json.dumps(describe_subnet(parent, encoding), indent=2))

    step("onnx")
    export_onnx(model, parent.example_input, files["onnx"])
    sess = session(files["onnx"], threads)

    step("parity")
    diffs = parity(model, sess, val_x[:8])
    parity_ok = max(diffs.values()) <= PARITY_TOLERANCE
    ort_val_accuracy = onnx_accuracy(sess, val_x, val_y)

    step("parent")
    shape = tuple(parent.example_input.shape[1:])
    with tempfile.TemporaryDirectory() as tmp:
        parent_onnx = export_onnx(parent.model, parent.example_input, Path(tmp) / "parent.onnx")
        sessions = {"parent": session(parent_onnx, threads), "subnet": sess}
        parent_bytes = parent_onnx.stat().st_size

        step("int8")
        int8_report = None
        if int8:
            quantize_int8(files["onnx"], files["onnx_int8"], calib_x)
            sessions["int8"] = session(files["onnx_int8"], threads)
            int8_accuracy = onnx_accuracy(sessions["int8"], val_x, val_y)
            int8_report = {
                "val_accuracy": int8_accuracy,
                "val_accuracy_drop": ort_val_accuracy - int8_accuracy,
                "bytes": files["onnx_int8"].stat().st_size,
                "latency": {},
                "calibration_images": min(512, len(calib_x)),
                "scheme": "static, QDQ, per-channel int8 weights, uint8 activations (MinMax)",
            }
        else:
            files.pop("onnx_int8")

        step("latency")
        latency = {"threads": threads, "runs": runs, "subnet": {}, "parent": {}}
        for batch in LATENCY_BATCHES:
            ms = latencies_ms(sessions, shape, batch, runs)
            for name in ("parent", "subnet"):
                latency[name][f"batch_{batch}_ms"] = ms[name]
            latency[f"speedup_batch_{batch}"] = ms["parent"] / ms["subnet"]
            if int8_report:
                int8_report["latency"][f"batch_{batch}_ms"] = ms["int8"]

    step("card")
    flops, params = float(subnet["flops"]), int(subnet["params"])
    block = channel_block()
    parent_runtime = runtime_flops(parent.model, parent.example_input, block)
    subnet_runtime = runtime_flops(model, parent.example_input, block)
    onnx_bytes = files["onnx"].stat().st_size
    report = {
        "export_id": export_id,
        "run_id": run_id,
        "subnet_id": int(subnet_id),
        "finetune_id": finetune_id,
        "parent": {
            "model": run["model"],
            "weights": run["weights"],
            "dataset": run["dataset"],
            "flops": float(run["parent_flops"]),
            "params": int(run["parent_params"]),
            "val_accuracy": float(run["parent_accuracy"]),
            "onnx_bytes": parent_bytes,
            "runtime_flops": parent_runtime,
        },
        "subnet": {
            "encoding": encoding,
            "hash": subnet["hash"],
            "flops": flops,
            "params": params,
            "params_counted": count_params(model),
            "flops_ratio": flops / float(run["parent_flops"]),
            "params_ratio": params / float(run["parent_params"]),
            "onnx_bytes": onnx_bytes,
            "size_ratio": onnx_bytes / parent_bytes,
            "runtime_flops": subnet_runtime,
            "runtime_flops_ratio": subnet_runtime / parent_runtime,
        },
        "accuracy": {
            "val_recalibrated": float(subnet["accuracy"]),
            "val_before_finetune": tuned["val_accuracy_before"] if tuned else val_accuracy,
            "test_before_finetune": tuned["test_accuracy_before"] if tuned else test_accuracy,
            "val_after_finetune": tuned["val_accuracy_after"] if tuned else None,
            "test_after_finetune": tuned["test_accuracy_after"] if tuned else None,
            "val_exported": val_accuracy,
            "test_exported": test_accuracy,
            "val_onnxruntime": ort_val_accuracy,
            "finetune_recipe": tuned["recipe"] if tuned else None,
        },
        "parity": {**diffs, "tolerance": PARITY_TOLERANCE, "ok": parity_ok},
        "latency": latency,
        "int8": int8_report,
        "preprocessing": preprocessing(parent),
        "flops_note": "FLOPs = 2 x multiply-accumulates per image (torch.utils.flop_counter).",
        "channel_block": block,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
        "versions": package_versions(),
    }
    report["files"] = {k: p.name for k, p in files.items()}
    files["card_json"].write_text(json.dumps(report, indent=2))
    files["card_md"].write_text(model_card_markdown(report))
    bundle = folder / f"prunescope-{run_id}-subnet{int(subnet_id)}.zip"
    with zipfile.ZipFile(bundle, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in files.values():
            zf.write(path, path.name)
    report["files"]["zip"] = bundle.name
    store.add_export(
        {
            "export_id": export_id,
            "run_id": run_id,
            "subnet_id": int(subnet_id),
            "finetune_id": finetune_id,
            "out_dir": str(folder.resolve()),
            "int8": bool(int8),
            "report": report,
        }
    )
    if not parity_ok:
        raise ExportError(
            f"ONNX Runtime differs from PyTorch by {max(diffs.values()):.2e} "
            f"(> {PARITY_TOLERANCE:g}); the files in {folder} are kept for inspection."
        )
    return report

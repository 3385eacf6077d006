"""ONNX mechanics: export with a dynamic batch, the full checker, ONNX Runtime sessions, parity
with PyTorch, latency measured in turns, and INT8 static quantization.

Every step raises ExportError with a clear message; nothing here knows about runs or the store.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engine.errors import ExportError

PARITY_TOLERANCE = 1e-4  # max |ONNX Runtime - PyTorch| on float32 logits
PARITY_BATCHES = (1, 8)  # batch sizes parity is checked at
LATENCY_BLOCK = 5  # timed runs per turn of a session
LATENCY_PAUSE_S = 0.05  # before each turn: the previous session's threads stop spinning


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
    """Max abs difference between PyTorch and ONNX Runtime logits at each of PARITY_BATCHES."""
    out = {}
    for batch in PARITY_BATCHES:
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


def quantize_int8(fp32: Path, out: Path, calib_x: torch.Tensor) -> Path:
    """ONNX Runtime static quantization (QDQ, per-channel int8 weights, uint8 activations),
    calibrated on `calib_x`."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self):
            data = calib_x.numpy()
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


def latency_table(sessions: dict, shape: tuple[int, ...], batches, runs: int) -> dict:
    """{session name: {"batch_<b>_ms": median ms}} for every batch size, sessions in turns."""
    table = {name: {} for name in sessions}
    for batch in batches:
        for name, ms in latencies_ms(sessions, shape, batch, runs).items():
            table[name][f"batch_{batch}_ms"] = ms
    return table

"""Numbers as people read them: 81.6 M FLOPs, 91.3 %, 1 min 20 s."""

from __future__ import annotations

import math

METRIC_LABELS = {"flops": "FLOPs", "params": "Params"}
FLOPS_NOTE = "FLOPs = 2 × multiply-accumulates per image (as torch.utils.flop_counter counts them)."


def si(value: float | None) -> str:
    """81626368 -> '81.6 M'; 272474 -> '272 k'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    value = float(value)
    for threshold, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= threshold:
            return f"{value / threshold:.3g} {suffix}"
    return f"{value:.3g}"


def pct(fraction: float | None, digits: int = 1) -> str:
    """0.9134 -> '91.3%'."""
    if fraction is None or (isinstance(fraction, float) and math.isnan(fraction)):
        return "–"
    return f"{100 * fraction:.{digits}f}%"


def duration(seconds: float) -> str:
    """75 -> '1 min 15 s'."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def run_label(run: dict) -> str:
    """One line naming a run in pickers and legends."""
    return (
        f"{run['run_id']} · {run['model']} · {run['dataset']} · {run['constraint_text']} "
        f"· {run['status']}"
    )


def constraint_metric(run: dict) -> str:
    """'flops' or 'params': what the run's budget limits."""
    text = str(run.get("constraint_text") or "flops")
    return "params" if text.startswith("params") else "flops"

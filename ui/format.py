"""Numbers as people read them: 81.6 M FLOPs, 91.3 %, 1 min 20 s."""

from __future__ import annotations

import math

from engine.config import VAL_SOURCE_TEXT, Constraint, FinetuneRecipe
from engine.errors import PrunescopeError

METRIC_LABELS = {"flops": "FLOPs", "params": "Params", "runtime_flops": "Runtime FLOPs"}
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
    """'flops', 'params' or 'runtime_flops': what the run's budget limits."""
    try:
        return Constraint.parse(str(run.get("constraint_text"))).metric
    except PrunescopeError:
        return "flops"


def validation_split(run: dict) -> str:
    """Which images a run's accuracies are on; runs before the choice held out training images."""
    data = (run.get("config") or {}).get("data") or {}
    return VAL_SOURCE_TEXT.get(data.get("val_from", "train"), VAL_SOURCE_TEXT["train"])


def parent_accuracy_text(run: dict) -> str:
    """'93.4% on search-validation (held-out training images), 92.1% on test'."""
    text = f"{pct(run['parent_accuracy'], 2)} on search-validation ({validation_split(run)})"
    test = run.get("parent_test_accuracy")
    if test is not None and not (isinstance(test, float) and math.isnan(test)):
        text += f", {pct(test, 2)} on test"
    return text


def run_channel_block(run: dict) -> int | None:
    """The ONNX Runtime channel block a run's runtime FLOPs pad to; None for runs before them."""
    block = run.get("channel_block")
    return None if block is None or math.isnan(float(block)) else int(block)


def runtime_note(block: int) -> str:
    return (
        f"Runtime FLOPs: FLOPs with every convolution's channels padded to multiples of {block}, "
        "as ONNX Runtime's CPU kernels compute them; they track CPU speed better than FLOPs."
    )


def stored_recipe(recipe) -> FinetuneRecipe | None:
    """A fine-tune recipe as stored (either layout), or None when it cannot be read."""
    if isinstance(recipe, FinetuneRecipe):
        return recipe
    try:
        return FinetuneRecipe.from_dict(recipe or {})
    except PrunescopeError:
        return None


def recipe_text(recipe) -> str:
    """A fine-tune recipe (FinetuneRecipe or its stored dict) in one line."""
    r = stored_recipe(recipe)
    return "unreadable recipe" if r is None else r.describe()


def recipe_epochs(recipe) -> str:
    """The epochs a stored recipe asks for, as text ('?' when unreadable)."""
    r = stored_recipe(recipe)
    return "?" if r is None else str(r.train.epochs)


def megabytes(n: float | None) -> str:
    """1234567 -> '1.23 MB'."""
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "–"
    return f"{n / 1e6:.3g} MB" if n >= 1e5 else f"{n / 1e3:.3g} kB"

"""Prunescope engine: search spaces of channel widths, subnet evaluation, Pareto fronts, export.

Pure Python + torch + duckdb; never imports Streamlit or Plotly (tests/test_import_hygiene.py
proves it, module by module). The public API, for a library user:

>>> from engine import RunConfig, SearchConfig, Constraint, Store, run_search
>>> with Store("results.duckdb") as store:
...     run_id = run_search(store, RunConfig(search=SearchConfig(constraint=Constraint.parse("flops=50%"))))

Names are imported on first use, so `import engine` stays cheap.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_API = {
    # every knob
    "engine.config": (
        "ModelSpec",
        "DataSpec",
        "Constraint",
        "SpaceConfig",
        "SearchConfig",
        "RunConfig",
        "TrainConfig",
        "FinetuneRecipe",
        "ExportConfig",
    ),
    "engine.errors": ("PrunescopeError", "ConfigError", "ConstraintError", "Cancelled"),
    # the results database and the data folder
    "engine.store": ("Store",),
    "engine.workspace": (
        "home_dir",
        "db_path",
        "rebuild_parent",
        "scored_subnet",
        "finetuned_subnet",
        "delete_run",
    ),
    # the pruning core
    "engine.models": ("create_model", "available_models"),
    "engine.data": ("load_dataset",),
    "engine.parent": ("Parent", "load_parent"),
    "engine.space": ("SearchSpace", "build_space", "materialize"),
    "engine.cost": ("CostModel",),
    "engine.evaluate": ("SubnetEvaluator", "rebuild_subnet"),
    "engine.pareto": ("pareto_front", "knee", "best_under_budget"),
    # workflows
    "engine.search": ("run_search", "start_run", "search"),
    "engine.train": ("train_parent", "train_or_reuse_parent"),
    "engine.finetune": ("finetune",),
    "engine.export": ("export_subnet", "load_subnet_files"),
    "engine.jobs": ("JobRegistry", "Job"),
}
_WHERE = {name: module for module, names in _API.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)


def __dir__() -> list[str]:
    return [*globals(), *__all__]

"""A search: sample encodings, evaluate them, store every row the moment it is measured.

`run_search` starts a run or resumes one (same run id): the history is read back from the store,
nothing stored is evaluated again, and the run ends with its number of unique subnets. The budget
is computed once, when the run is recorded, and read back from the run afterwards.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pandas as pd
import torch

from engine.config import Constraint, ModelSpec, RunConfig, SearchConfig
from engine.cost import CostModel
from engine.data import class_count
from engine.errors import ConfigError, ConstraintError
from engine.evaluate import SubnetEvaluator
from engine.executors import Executor, InProcessExecutor
from engine.models import create_model
from engine.parent import Parent, fit_to_data, load_parent, validation_source
from engine.peers import peer_allocations
from engine.rungs import promotion_bar, tune_finalists
from engine.runtime import channel_block
from engine.samplers import Evaluated, make_sampler
from engine.space import build_space, encoding_hash
from engine.store import Store
from engine.workspace import rebuild_parent, run_config

HEARTBEAT_SECONDS = 5.0
UNITS = {"flops": "FLOPs", "params": "parameters", "runtime_flops": "runtime FLOPs"}


def with_channel_block(cfg: SearchConfig) -> SearchConfig:
    """`cfg` with its channel block fixed: this machine's unless one was given."""
    return cfg if cfg.channel_block else replace(cfg, channel_block=channel_block())


def budget_for(parent: Parent, constraint: Constraint, block: int = 1) -> float:
    """The absolute limit; refuses one below the smallest subnet the space can reach."""
    return budget_within(parent.space, parent.cost, constraint, block)


def budget_within(space, cost, constraint: Constraint, block: int = 1) -> float:
    """The absolute limit in `space` (costed by `cost`); refuses one below its smallest subnet."""
    parent_value, smallest = cost.metric(constraint.metric, [space.full(), space.minimal()], block)
    budget = constraint.limit(parent_value)
    if budget < smallest:
        unit = UNITS[constraint.metric]
        raise ConstraintError(
            f"No subnet satisfies {constraint}: the smallest subnet this space reaches has "
            f"{smallest:,.0f} {unit} ({100 * smallest / parent_value:.1f}% of the parent's "
            f"{parent_value:,.0f}). Ask for at least that, or lower round_to."
        )
    return budget


def describe_weights(spec: ModelSpec) -> str:
    return f"file:{spec.weights_path}" if spec.weights == "file" else spec.weights


def check_before_data(config: RunConfig) -> float:
    """The run's budget from the weights and the cost model alone (seconds, no image decoded):
    bad weights, a dataset that is not there and an impossible constraint fail here."""
    num_classes = class_count(config.data)
    spec = fit_to_data(config.model, num_classes, config.data.image_size, config.data.name)
    model = create_model(spec)
    example = torch.zeros(1, spec.in_channels, spec.image_size, spec.image_size)
    space = build_space(model, example, round_to=config.space.round_to, importance="l1")
    search = with_channel_block(config.search)
    return budget_within(
        space, CostModel(model, space, example), search.constraint, search.channel_block
    )


def start_run(
    store: Store, config: RunConfig, *, parent: Parent | None = None
) -> tuple[str, Parent]:
    """Check what needs no data, prepare the parent (or reuse `parent`, loaded from the same
    specs) with search-validation images it never saw, and record a new run with its budget,
    fixed from now on."""
    val_from = validation_source(config.model, config.data)
    config = replace(config, data=replace(config.data, val_from=val_from))
    if parent is None:
        check_before_data(config)
        parent = load_parent(
            config.model,
            config.data,
            config.space,
            batch_size=config.search.batch_size,
            measure_test=True,
        )
    elif (parent.space.round_to, parent.space.importance) != (
        config.space.round_to,
        config.space.importance,
    ):
        raise ConfigError("The given parent's space was built with another round_to/importance.")
    config = replace(
        config,
        model=parent.model_spec,
        data=replace(parent.data_spec, val_from=parent.splits.val_from),
        search=with_channel_block(config.search),
    )
    cfg = config.search
    budget = budget_for(parent, cfg.constraint, cfg.channel_block)
    full = [parent.space.full()]
    run_id = store.create_run(
        model=parent.model_spec.name,
        weights=describe_weights(parent.model_spec),
        dataset=config.data.name,
        constraint_text=str(cfg.constraint),
        sampler=cfg.sampler,
        num_subnets=cfg.num_subnets,
        parent_accuracy=parent.accuracy,
        parent_loss=parent.loss,
        parent_flops=parent.cost.parent_flops,
        parent_params=parent.cost.parent_params,
        budget=budget,
        channel_block=cfg.channel_block,
        parent_runtime_flops=parent.cost.padded_flops(full, cfg.channel_block)[0],
        parent_test_accuracy=parent.test_accuracy,
        config=config.to_dict(),
        space=parent.space.to_dict(),
    )
    return run_id, parent


def search(
    store: Store,
    run_id: str,
    parent: Parent,
    *,
    num_subnets: int | None = None,
    executor: Executor | None = None,
    progress: Callable[[dict], None] | None = None,
    cancel: threading.Event | None = None,
) -> str:
    """Evaluate until the run holds its number of unique subnets (`num_subnets` when given),
    within the budget stored when the run started; returns the final status."""
    executor = executor or InProcessExecutor()
    run = store.run(run_id)
    cfg = with_channel_block(run_config(run).search)
    if num_subnets:
        cfg = replace(cfg, num_subnets=num_subnets)
    metric, block, budget = cfg.constraint.metric, cfg.channel_block, float(run["budget"])
    evaluate = SubnetEvaluator(parent, cfg.batch_size, block, cfg.screen_images)
    sampler = make_sampler(
        cfg.sampler, parent.space, parent.cost, metric, budget, cfg.num_subnets, block
    )
    if cfg.sampler == "guided":  # the answers of one-line peers, evaluated before evolving
        sampler.peers = peer_allocations(
            parent, lambda e: parent.cost.metric(metric, [e], block)[0], budget, cfg.batch_size
        )
    rows = store.subnets(run_id)
    encodings = [tuple(e) for e in rows["encoding"]]
    costs = parent.cost.metric(metric, encodings, block) if encodings else []
    history = [
        Evaluated(
            encoding,
            float(cost),
            None if isinstance(r.error, str) or pd.isna(r.accuracy) else float(r.accuracy),
        )
        for encoding, cost, r in zip(encodings, costs, rows.itertuples(), strict=True)
    ]
    seen = {encoding_hash(h.encoding) for h in history}
    screened = [  # (cost, screen accuracy): what promotion to full validation is judged against
        (float(c), float(a))
        for c, a in zip(costs, rows.get("screen_accuracy", []), strict=False)
        if pd.notna(a)
    ]
    store.set_status(run_id, "running")
    last_beat, status, message = time.monotonic(), "done", None
    try:
        while len(history) < cfg.num_subnets:
            if cancel is not None and cancel.is_set():
                status, message = "cancelled", "Cancelled by the user."
                break
            tasks = []
            for _ in range(min(executor.slots, cfg.num_subnets - len(history))):
                rng = np.random.default_rng([cfg.seed, len(history) + len(tasks)])
                proposal = sampler.propose(
                    history + [Evaluated(t[0], 0.0, None) for t in tasks], rng
                )
                if proposal is None or encoding_hash(proposal[0]) in seen:
                    break
                encoding, name = proposal
                cost = parent.cost.metric(metric, [encoding], block)[0]
                peer = name.startswith("peer:")  # always fully validated
                tasks.append((encoding, name, None if peer else promotion_bar(screened, cost)))
            if not tasks:
                message = f"The {cfg.sampler} sampler has no new subnets left after {len(history)}."
                break
            for row in executor.map(evaluate, tasks):
                subnet_id = store.add_subnet(run_id, row)
                seen.add(row["hash"])
                history.append(Evaluated(tuple(row["encoding"]), row[metric], row["accuracy"]))
                if row["screen_accuracy"] is not None:
                    screened.append((row[metric], row["screen_accuracy"]))
                if progress:
                    progress(
                        {
                            "run_id": run_id,
                            "done": len(history),
                            "total": cfg.num_subnets,
                            "subnet_id": subnet_id,
                            **row,
                        }
                    )
                if time.monotonic() - last_beat > HEARTBEAT_SECONDS:
                    store.heartbeat(run_id)
                    last_beat = time.monotonic()
        if status == "done":  # the deepest rung: a short fine-tune of the best under the budget
            tune_finalists(store, run_id, parent, cfg, budget, progress=progress, cancel=cancel)
            if cancel is not None and cancel.is_set():
                status, message = "cancelled", "Cancelled by the user."
    except Exception as exc:
        store.set_status(run_id, "failed", f"{exc.__class__.__name__}: {exc}")
        raise
    store.set_status(run_id, status, message)
    return status


def run_search(
    store: Store,
    config: RunConfig | None = None,
    *,
    resume: str | None = None,
    num_subnets: int | None = None,
    **kwargs,
) -> str:
    """Start a new run from `config`, or resume the stored run `resume`; returns the run id."""
    if resume:
        run_id, parent = resume, rebuild_parent(store.run(resume))
    else:
        if config is None:
            raise ConfigError("A new search needs a run configuration (model, data, search).")
        run_id, parent = start_run(store, config)
    search(store, run_id, parent, num_subnets=num_subnets, **kwargs)
    return run_id

"""The Search and Fine-tune & Export forms mapped to the engine's config dataclasses, both ways:
widget defaults come from the dataclasses (never restated here), and the submitted session state
becomes the configs the engine takes."""

from __future__ import annotations

from collections.abc import Mapping

from engine.config import (
    FINETUNE_LR,
    Constraint,
    DataSpec,
    ExportConfig,
    FinetuneRecipe,
    ModelSpec,
    RunConfig,
    SearchConfig,
    SpaceConfig,
    TrainConfig,
)
from engine.models import builtin_weights_path
from engine.runtime import channel_block


def search_defaults() -> dict:
    """Session-state defaults of the Search form's widgets."""
    model, data, space, search = ModelSpec(), DataSpec(), SpaceConfig(), SearchConfig()
    has_builtin = builtin_weights_path(model).exists()
    return {
        "search_weights": model.weights if has_builtin else "random",
        "search_dataset": data.name,
        "search_metric": search.constraint.metric,
        "search_mode": "relative" if search.constraint.relative else "absolute",
        "search_limit": f"{search.constraint.value:g}",
        "search_subnets": search.num_subnets,
        "search_sampler": search.sampler,
        "search_epochs": TrainConfig().epochs,
        "search_round_to": space.round_to,
        "search_block": search.channel_block or channel_block(),
        "search_importance": space.importance,
        "search_calib": data.calib_size,
        "search_val": data.val_size,
        "search_val_from": data.val_from,
        "search_train": data.train_size or 0,  # 0: all
        "search_test": data.test_size or 0,
        "search_seed": search.seed,
        "search_batch": search.batch_size,
        "search_screen": search.screen_images,
        "search_tune_top": search.tune_top,
        "search_tune_images": search.tune_images,
    }


def search_constraint(ss: Mapping) -> Constraint:
    """The constraint the form describes (raises ConstraintError with a clear message)."""
    relative = ss["search_mode"] == "relative"
    return Constraint.of(ss["search_metric"], ss["search_limit"], relative=relative)


def search_config(ss: Mapping, model: ModelSpec, root: str | None) -> RunConfig:
    """The run the Search form describes, for `model` (its weights already resolved)."""
    return RunConfig(
        model=model,
        data=DataSpec(
            name=ss["search_dataset"],
            root=root,
            calib_size=int(ss["search_calib"]),
            val_size=int(ss["search_val"]),
            seed=int(ss["search_seed"]),
            train_size=int(ss["search_train"]) or None,
            test_size=int(ss["search_test"]) or None,
            val_from=ss["search_val_from"],
        ),
        space=SpaceConfig(round_to=int(ss["search_round_to"]), importance=ss["search_importance"]),
        search=SearchConfig(
            num_subnets=int(ss["search_subnets"]),
            sampler=ss["search_sampler"],
            seed=int(ss["search_seed"]),
            constraint=search_constraint(ss),
            channel_block=int(ss["search_block"]),
            batch_size=int(ss["search_batch"]),
            screen_images=int(ss["search_screen"]),
            tune_top=int(ss["search_tune_top"]),
            tune_images=int(ss["search_tune_images"]),
        ),
    )


def parent_training(ss: Mapping) -> TrainConfig:
    """The recipe of a parent trained here ("Train here" weights)."""
    return TrainConfig(epochs=int(ss["search_epochs"]))


def finetune_defaults() -> dict:
    """Session-state defaults of the fine-tune and export widgets."""
    recipe, export = FinetuneRecipe(), ExportConfig()
    t = recipe.train
    return {
        "fx_epochs": t.epochs,
        "fx_optimizer": t.optimizer,
        "fx_lr": t.lr,
        "fx_distill": recipe.distill,
        "fx_temperature": recipe.temperature,
        "fx_alpha": recipe.alpha,
        "fx_weight_decay": t.weight_decay,
        "fx_batch": t.batch_size,
        "fx_augment": t.augment,
        "fx_seed": t.seed,
        "fx_int8": export.int8,
    }


def finetune_lr(optimizer: str) -> float:
    """A good starting learning rate for a fine-tune with this optimizer."""
    return FINETUNE_LR[optimizer]


def finetune_recipe(ss: Mapping) -> FinetuneRecipe:
    """The recipe the fine-tune form describes (raises ConfigError with a clear message)."""
    return FinetuneRecipe.with_training(
        epochs=int(ss["fx_epochs"]),
        optimizer=ss["fx_optimizer"],
        lr=float(ss["fx_lr"]),
        weight_decay=float(ss["fx_weight_decay"]),
        batch_size=int(ss["fx_batch"]),
        augment=bool(ss["fx_augment"]),
        seed=int(ss["fx_seed"]),
        distill=bool(ss["fx_distill"]),
        temperature=float(ss["fx_temperature"]),
        alpha=float(ss["fx_alpha"]),
    )


def export_config(ss: Mapping) -> ExportConfig:
    return ExportConfig(int8=bool(ss["fx_int8"]))

"""The data folder and "a stored run": the one place that knows where Prunescope keeps files and
how a stored row turns back into the network it describes.

- Paths: the data folder (`$PRUNESCOPE_HOME`), the results file, and the folders Prunescope
  makes inside it (fine-tunes, exports, trained parents, uploads, datasets, caches).
- A stored run: its `RunConfig`, its parent rebuilt in the very space it was searched in, a
  subnet rebuilt exactly as it was scored (BatchNorm recalibrated with the run's batch size), a
  fine-tuned subnet with its saved weights, and the run deleted with the files Prunescope made.
- The trained-parent cache: one checkpoint per (model, data, recipe).

Search, fine-tune and export use this module and never each other.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from torch import nn

from engine.config import DataSpec, ModelSpec, RunConfig, TrainConfig
from engine.errors import ConfigError
from engine.evaluate import accuracy_and_loss, rebuild_subnet
from engine.models import apply_state_dict, read_checkpoint_metadata, read_state_dict
from engine.parent import Parent, load_parent
from engine.space import SearchSpace, materialize
from engine.store import Store

REPO_ROOT = Path(__file__).resolve().parent.parent


# --- paths -------------------------------------------------------------------------------------


def home_dir() -> Path:
    """Data folder: `$PRUNESCOPE_HOME`, else `data/` in the repository. Created on demand."""
    path = Path(os.environ.get("PRUNESCOPE_HOME") or REPO_ROOT / "data")
    path.mkdir(parents=True, exist_ok=True)
    return path


def db_path() -> Path:
    """The DuckDB results file: `$PRUNESCOPE_DB`, else `prunescope.duckdb` in the data folder."""
    env = os.environ.get("PRUNESCOPE_DB")
    return Path(env) if env else home_dir() / "prunescope.duckdb"


def finetune_dir(finetune_id: str) -> Path:
    """A fine-tune's folder: its training state while it runs, its weights once done."""
    return home_dir() / "finetunes" / finetune_id


def exports_dir() -> Path:
    """Where exports without a user-chosen folder go; deleting a run removes its folders here."""
    return home_dir() / "exports"


def uploads_dir() -> Path:
    """Uploaded state dicts, saved under their content hash."""
    return home_dir() / "uploads"


def datasets_dir() -> Path:
    """Default download folder of the torchvision datasets."""
    return home_dir() / "datasets"


def cache_dir() -> Path:
    """Decoded datasets and other caches that can be rebuilt."""
    return home_dir() / "cache"


# --- a stored run ------------------------------------------------------------------------------


def run_config(run: dict) -> RunConfig:
    """The configuration a stored run (a `Store.run` dict) was started with."""
    return RunConfig.from_dict(run.get("config"))


def rebuild_parent(run: dict) -> Parent:
    """A stored run's parent, data splits and cost model, in the very space it was searched in."""
    cfg = run_config(run)
    if not isinstance(run.get("space"), dict):
        raise ConfigError(f"Run {run.get('run_id')} has no stored search space to rebuild.")
    return load_parent(
        cfg.model,
        cfg.data,
        cfg.space,
        stored_space=run["space"],
        batch_size=cfg.search.batch_size,
    )


def usable_subnet(store: Store, run_id: str, subnet_id: int) -> dict:
    """The stored subnet row; ConfigError when it failed to evaluate (nothing to build on)."""
    subnet = store.subnet(run_id, subnet_id)
    if subnet.get("error") or subnet.get("accuracy") is None:
        raise ConfigError(f"Subnet {subnet_id} of run {run_id} failed to evaluate; pick another.")
    return subnet


def scored_subnet(parent: Parent, run: dict, encoding) -> nn.Module:
    """The subnet exactly as the run scored it: cut from the parent, BatchNorm recalibrated on
    the calibration split in the run's batch size. Its accuracy is the one on the chart."""
    return rebuild_subnet(parent, encoding, run_config(run).search.batch_size)


def score_subnets_on_test(store: Store, run: dict, parent: Parent, subnet_ids) -> dict[int, float]:
    """Each subnet rebuilt as scored, measured on the reporting test split and stored with it;
    {subnet_id: test accuracy}. Never used to choose a subnet: test is for reporting."""
    test_x, test_y = parent.splits.tensors("test")
    out = {}
    for subnet_id in subnet_ids:
        subnet = usable_subnet(store, run["run_id"], subnet_id)
        model = scored_subnet(parent, run, subnet["encoding"])
        out[int(subnet_id)] = accuracy_and_loss(model, test_x, test_y)[0]
        store.set_test_accuracy(run["run_id"], subnet_id, out[int(subnet_id)])
    return out


def cut_with_weights(
    architecture: nn.Module, space: SearchSpace, encoding, example, weights: str | Path
) -> nn.Module:
    """`architecture` cut to `encoding` (only the shapes matter), then the saved weights loaded."""
    model = materialize(architecture, space, encoding, example)
    apply_state_dict(model, read_state_dict(weights))
    return model.eval()


def finetuned_subnet(parent: Parent, encoding, weights: str | Path) -> nn.Module:
    """A fine-tuned subnet: the parent's architecture cut to `encoding`, with the saved weights."""
    return cut_with_weights(parent.model, parent.space, encoding, parent.example_input, weights)


def finished_finetune(store: Store, run_id: str, subnet_id: int, finetune_id: str) -> dict:
    """The fine-tune row, checked: it belongs to this subnet, finished, and its weights exist."""
    tuned = store.finetune(finetune_id)
    if tuned is None or tuned["run_id"] != run_id or int(tuned["subnet_id"]) != int(subnet_id):
        raise ConfigError(f"Fine-tune {finetune_id} does not belong to subnet {subnet_id}.")
    if tuned["status"] != "done" or not Path(tuned["checkpoint"] or "").is_file():
        raise ConfigError(f"Fine-tune {finetune_id} has not finished; resume it first.")
    return tuned


def latest_finetune(store: Store, run_id: str, subnet_id: int) -> str:
    """The id of the subnet's newest finished fine-tune; ConfigError when it has none."""
    done = store.finetunes(run_id, subnet_id)
    done = done[done["status"] == "done"] if len(done) else done
    if done.empty:
        raise ConfigError(f"Subnet {subnet_id} of run {run_id} has no finished fine-tune.")
    return str(done.iloc[0]["finetune_id"])


def delete_run(store: Store, run_id: str, *, force: bool = False) -> None:
    """Delete a run's rows, then its fine-tune folders and the export folders Prunescope made.

    Export folders outside the data folder's exports/ (a CLI `--out`) belong to the user and
    are kept.
    """
    finetunes, exports = store.finetunes(run_id), store.exports(run_id)
    store.delete_run(run_id, force=force)
    for fid in finetunes["finetune_id"]:
        shutil.rmtree(finetune_dir(fid), ignore_errors=True)
    managed = exports_dir().resolve()
    for out_dir in exports["out_dir"].dropna():
        if Path(out_dir).resolve().is_relative_to(managed):
            shutil.rmtree(out_dir, ignore_errors=True)


# --- the trained-parent cache ------------------------------------------------------------------


def parent_checkpoint(model_spec: ModelSpec, data_spec: DataSpec, cfg: TrainConfig) -> Path:
    """Where a parent trained here is kept: one file per (model, data, recipe)."""
    key = json.dumps([model_spec.name, data_spec.to_dict(), cfg.to_dict()], sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return home_dir() / "parents" / f"{model_spec.name}-{data_spec.name}-{digest}.safetensors"


def finished_parent_spec(path: str | Path, epochs: int) -> ModelSpec | None:
    """The spec that loads the parent at `path` when it has trained all `epochs`, else None."""
    path = Path(path)
    if not path.is_file():
        return None
    meta = read_checkpoint_metadata(path)
    if meta.get("epochs_done") != epochs:
        return None
    trained = meta["model"]  # class count and image size follow the data it was trained on
    return ModelSpec(**{**trained, "weights": "file", "weights_path": str(path)})

"""train_parent: a self-describing checkpoint, cancel between batches, resume from the last epoch."""

import threading

import pytest
import torch

from engine.config import DataSpec, ModelSpec, TrainConfig
from engine.errors import Cancelled
from engine.models import create_model, read_checkpoint_metadata, read_state_dict
from engine.train import train_parent

DATA = DataSpec(train_size=384, test_size=64, calib_size=64, val_size=64)
MODEL = ModelSpec(name="resnet20", weights="random")
CFG = TrainConfig(epochs=2, batch_size=64)


def test_cancelled_training_resumes_to_the_same_weights(tmp_path):
    straight = train_parent(MODEL, DATA, CFG, tmp_path / "straight.safetensors")
    cancel, path = threading.Event(), tmp_path / "resumed.safetensors"

    def stop_after_first_epoch(event):
        if event["stage"] == "epoch":
            cancel.set()

    with pytest.raises(Cancelled):
        train_parent(MODEL, DATA, CFG, path, progress=stop_after_first_epoch, cancel=cancel)
    assert read_checkpoint_metadata(path)["epochs_done"] == 1
    assert path.with_suffix(".state.pt").is_file()

    epochs = []
    resumed = train_parent(MODEL, DATA, CFG, path, progress=lambda e: epochs.append(e["epoch"]))
    assert sorted(set(epochs)) == [2]  # epoch 1 was not trained again
    meta = read_checkpoint_metadata(path)
    assert meta["epochs_done"] == 2 and meta["test_accuracy"] == resumed["test_accuracy"]
    assert not path.with_suffix(".state.pt").exists()
    a = read_state_dict(tmp_path / "straight.safetensors")
    b = read_state_dict(path)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    assert resumed["test_accuracy"] == pytest.approx(straight["test_accuracy"], abs=1e-9)

    # a finished checkpoint is not trained again, and it rebuilds from its own metadata
    again = train_parent(MODEL, DATA, CFG, path, progress=lambda e: epochs.append("again"))
    assert "again" not in epochs and again["test_accuracy"] == meta["test_accuracy"]
    rebuilt = create_model(ModelSpec(**{**meta["model"], "weights_path": str(path)}))
    torch.testing.assert_close(rebuilt.state_dict()["fc.weight"], b["fc.weight"])

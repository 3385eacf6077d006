"""Model factory and safe weights loading: every bad file gets a clear WeightsError."""

import pickle

import pytest
import torch
from safetensors.torch import save_file

from engine.config import ModelSpec
from engine.errors import ConfigError, WeightsError
from engine.models import (
    apply_state_dict,
    available_models,
    create_model,
    read_checkpoint_metadata,
    read_state_dict,
    save_checkpoint,
)


def test_cifar_resnets_have_three_stages_of_16_32_64():
    for name, blocks in (("resnet20", 3), ("resnet32", 5), ("resnet56", 9)):
        model = create_model(ModelSpec(name=name, weights="random", num_classes=7))
        assert len(model.layer1) == blocks and model.layer3[0].conv1.out_channels == 64
        assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 7)


def test_torchvision_models_adapt_to_small_inputs():
    model = create_model(ModelSpec(name="resnet18", weights="random", num_classes=10))
    assert model.conv1.stride == (1, 1) and isinstance(model.maxpool, torch.nn.Identity)
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    assert (
        available_models()[:2] == ["resnet20", "resnet32"] and "mobilenet_v2" in available_models()
    )


def test_unknown_model_and_offline_pretrained_are_clear():
    with pytest.raises(ConfigError, match="Unknown model"):
        create_model(ModelSpec(name="resnet21"))
    with pytest.raises(WeightsError, match="no pretrained weights"):
        create_model(ModelSpec(name="resnet20", weights="pretrained"))


def test_random_weights_rebuild_identically():
    a = create_model(ModelSpec(name="resnet20", weights="random"))
    b = create_model(ModelSpec(name="resnet20", weights="random"))
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())


def test_safetensors_and_pt_round_trip(tmp_path):
    model = create_model(ModelSpec(name="resnet20", weights="random", init_seed=3))
    save_file(model.state_dict(), tmp_path / "w.safetensors")
    torch.save({"state_dict": model.state_dict()}, tmp_path / "w.pt")
    for path in (tmp_path / "w.safetensors", tmp_path / "w.pt"):
        loaded = create_model(ModelSpec(name="resnet20", weights="file", weights_path=str(path)))
        assert torch.equal(loaded.fc.weight, model.fc.weight)


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickle_needing_code_is_refused_not_executed(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"fc.weight": Payload()}, handle)
    torch.save({"model": Payload()}, tmp_path / "evil2.pt")
    for bad in (path, tmp_path / "evil2.pt"):
        with pytest.raises(WeightsError, match="never does that|not a readable"):
            read_state_dict(bad)
    assert "this must never run" not in capsys.readouterr().out


def test_corrupt_and_foreign_files(tmp_path):
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors at all")
    (tmp_path / "junk.pt").write_bytes(b"\x00\x01garbage")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(WeightsError, match="not a readable safetensors"):
        read_state_dict(tmp_path / "junk.safetensors")
    with pytest.raises(WeightsError, match="not a readable PyTorch"):
        read_state_dict(tmp_path / "junk.pt")
    with pytest.raises(WeightsError, match="does not hold a state dict"):
        read_state_dict(tmp_path / "list.pt")
    with pytest.raises(WeightsError, match="does not exist"):
        read_state_dict(tmp_path / "missing.pt")


def test_mismatching_state_dict_names_the_first_bad_key(tmp_path):
    model = create_model(ModelSpec(name="resnet20", weights="random"))
    state = create_model(ModelSpec(name="resnet32", weights="random")).state_dict()
    with pytest.raises(WeightsError, match=r"unexpected key 'layer1\.3"):
        apply_state_dict(model, state)
    state = dict(model.state_dict())
    state["fc.weight"] = torch.zeros(5, 64)
    with pytest.raises(WeightsError, match=r"'fc\.weight' has shape \(5, 64\)"):
        apply_state_dict(model, state)
    del state["conv1.weight"]
    with pytest.raises(WeightsError, match=r"'conv1\.weight' is missing"):
        apply_state_dict(model, state)


def test_checkpoint_carries_what_rebuilds_it(tmp_path):
    model = create_model(ModelSpec(name="resnet20", weights="random"))
    save_checkpoint(
        model, tmp_path / "c.safetensors", {"model": {"name": "resnet20"}, "epochs_done": 2}
    )
    assert read_checkpoint_metadata(tmp_path / "c.safetensors")["epochs_done"] == 2
    assert not list(tmp_path.glob("*.tmp"))

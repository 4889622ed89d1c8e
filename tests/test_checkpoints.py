"""Checkpoints: safetensors + JSON round trip, and one plain CheckpointError for every kind of damage."""

import json
import re
from pathlib import Path

import pytest
import torch

from talkface.audio import FEATURES
from talkface.checkpoints import BUNDLED, BUNDLED_NAMES, bundled, load_checkpoint, model_registry, save_checkpoint
from talkface.errors import CheckpointError
from talkface.models.a2l import LandmarkPredictor

TINY = dict(audio_channels=(4, 4, 4), audio_dim=8, landmark_dim=8, hidden=8, num_layers=1)
REPO = Path(__file__).parent.parent


def trained_tiny(seed: int = 0) -> LandmarkPredictor:
    """A tiny predictor whose weights (including batch-norm statistics) are far from their initial values."""
    torch.manual_seed(seed)
    model = LandmarkPredictor(**TINY)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
        model(torch.randn(3, 2, 28, 12), torch.randn(3, 68, 2))  # updates running stats in train mode
    return model.eval()


@pytest.fixture
def saved(tmp_path):
    model = trained_tiny()
    stem = save_checkpoint(tmp_path / "a2l", model, {"features": FEATURES, "metrics": {"lmd": 1.5}})
    return model, stem


def test_round_trip_restores_outputs_and_config(saved):
    model, stem = saved
    loaded, config = load_checkpoint(stem)
    assert isinstance(loaded, LandmarkPredictor) and not loaded.training
    assert config["model_class"] == "LandmarkPredictor"
    assert config["features"] == FEATURES and config["metrics"] == {"lmd": 1.5}
    x, ref = torch.randn(2, 5, 28, 12), torch.randn(2, 68, 2)
    assert torch.equal(loaded(x, ref), model(x, ref))
    # either file of the pair names the checkpoint too
    assert torch.equal(load_checkpoint(stem.with_suffix(".json"))[0](x, ref), model(x, ref))


def test_state_dict_with_explicit_class(tmp_path):
    model = trained_tiny()
    with pytest.raises(ValueError):
        save_checkpoint(tmp_path / "x", model.state_dict(), {})
    stem = save_checkpoint(
        tmp_path / "x", model.state_dict(), {"model_class": "LandmarkPredictor", "model_kwargs": model.init_kwargs}
    )
    loaded, _ = load_checkpoint(stem, model_cls=LandmarkPredictor)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))


def test_half_precision_is_smaller_and_upcast(tmp_path):
    model = trained_tiny()
    full = save_checkpoint(tmp_path / "full", model, {})
    half = save_checkpoint(tmp_path / "half", model, {}, half=True)
    assert half.with_suffix(".safetensors").stat().st_size < 0.6 * full.with_suffix(".safetensors").stat().st_size
    loaded, config = load_checkpoint(half)
    assert config["dtype"] == "float16"
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    for name, tensor in model.state_dict().items():
        expected = tensor.half().to(tensor.dtype) if tensor.is_floating_point() else tensor
        assert torch.equal(loaded.state_dict()[name], expected), name


def _error(stem) -> str:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(stem)
    message = str(info.value)
    assert "\n" not in message and message.endswith(".")
    return message


def test_missing_files(saved):
    _, stem = saved
    stem.with_suffix(".safetensors").unlink()
    assert "a2l.safetensors is missing" in _error(stem)
    stem.with_suffix(".json").unlink()
    assert "a2l.json is missing" in _error(stem)


def test_truncated_weights(saved):
    _, stem = saved
    path = stem.with_suffix(".safetensors")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert re.search(r"a2l\.safetensors is damaged or incomplete", _error(stem))
    path.write_bytes(b"")
    assert "a2l.safetensors is damaged" in _error(stem)


def test_bad_json(saved):
    _, stem = saved
    path = stem.with_suffix(".json")
    path.write_text(path.read_text()[:-20])
    assert "a2l.json is damaged" in _error(stem)
    path.write_text(json.dumps({"features": FEATURES}))
    assert "a2l.json does not say which model" in _error(stem)
    path.write_text(json.dumps({"model_class": "NoSuchModel", "model_kwargs": {}}))
    assert "unknown model 'NoSuchModel'" in _error(stem)
    path.write_text(json.dumps({"model_class": "LandmarkPredictor", "model_kwargs": {"no_such_size": 3}}))
    assert "a2l.json has model settings" in _error(stem)


def test_wrong_shape(saved, tmp_path):
    _, stem = saved
    config = json.loads(stem.with_suffix(".json").read_text())
    config["model_kwargs"]["hidden"] = 16
    stem.with_suffix(".json").write_text(json.dumps(config))
    message = _error(stem)
    assert "a2l.safetensors has tensor" in message and "where the model expects" in message


def test_missing_and_extra_key(tmp_path):
    model = trained_tiny()
    state = model.state_dict()
    config = {"model_class": "LandmarkPredictor", "model_kwargs": model.init_kwargs}
    missing = dict(state)
    del missing["head.bias"]
    assert "lacks the tensor 'head.bias'" in _error(save_checkpoint(tmp_path / "m", missing, config))
    extra = dict(state, surplus=torch.zeros(2))
    assert "tensor 'surplus' that the model does not use" in _error(save_checkpoint(tmp_path / "e", extra, config))


def test_save_is_atomic_and_leaves_no_temporaries(saved):
    _, stem = saved
    assert sorted(p.name for p in stem.parent.iterdir()) == ["a2l.json", "a2l.safetensors"]


def test_registry_and_bundled_names():
    registry = model_registry()
    assert {"LandmarkPredictor", "WordDetector", "MIEstimator"} <= set(registry)
    assert bundled("a2l_wd_tr") == BUNDLED / "a2l_wd_tr"
    assert len(BUNDLED_NAMES) == 7
    with pytest.raises(CheckpointError, match="no bundled checkpoint called 'nope'"):
        bundled("nope")


def test_no_pickle_loading_anywhere():
    """torch.load unpickles, which can run code from a file: the project must never call it."""
    offenders = []
    for path in [*REPO.glob("talkface/**/*.py"), *REPO.glob("train/**/*.py"), *REPO.glob("*.py")]:
        text = path.read_text()
        if re.search(r"torch\.load\(|pickle\.loads?\(", text):
            offenders.append(str(path.relative_to(REPO)))
    assert offenders == []


def test_features_other_than_this_versions_are_refused(saved):
    """A predictor trained on other MFCCs would run and move the lips wrongly; loading must say so instead."""
    _, stem = saved
    path = stem.with_suffix(".json")
    config = json.loads(path.read_text())
    path.write_text(json.dumps({**config, "features": {**FEATURES, "n_mfcc": 13}}))
    assert re.search(r"a2l\.json was trained on audio features with n_mfcc = 13, but this version computes "
                     r"n_mfcc = 12", _error(stem))
    path.write_text(json.dumps({**config, "features": {k: v for k, v in FEATURES.items() if k != "fps"}}))
    assert "a2l.json does not record its audio feature 'fps'" in _error(stem)
    path.write_text(json.dumps({k: v for k, v in config.items() if k != "features"}))
    load_checkpoint(stem)  # the image side records no audio features and is not checked


def test_bundled_checkpoints_record_this_versions_features():
    for name in ("a2l_baseline", "a2l_wd", "a2l_tr", "a2l_wd_tr", "word_detector", "mi_estimator"):
        config = json.loads((BUNDLED / f"{name}.json").read_text())
        assert {k: config["features"][k] for k in FEATURES} == FEATURES, name


def test_a_stem_with_a_dot_reads_its_own_files(tmp_path):
    """`a2l_v1.2` is a stem, not `a2l_v1` with a suffix: its files are a2l_v1.2.json / .safetensors."""
    model = trained_tiny()
    save_checkpoint(tmp_path / "a2l_v1.2", model, {"stage": "a2l", "features": FEATURES})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a2l_v1.2.json", "a2l_v1.2.safetensors"]
    for name in ("a2l_v1.2", "a2l_v1.2.json", "a2l_v1.2.safetensors"):
        loaded, config = load_checkpoint(tmp_path / name)
        assert config["stage"] == "a2l" and isinstance(loaded, LandmarkPredictor)


def test_nan_or_infinite_weights_are_refused_by_name(saved):
    from safetensors.torch import load_file, save_file

    stem = saved[1]
    weights = stem.with_name(stem.name + ".safetensors")
    state = load_file(weights)
    name = sorted(k for k, v in state.items() if v.is_floating_point())[0]
    state[name][0] = float("nan")
    save_file(state, weights)
    with pytest.raises(CheckpointError, match=rf"NaN or infinite values in tensor '{re.escape(name)}'"):
        load_checkpoint(stem)


def test_model_settings_the_model_rejects_are_a_checkpoint_error(saved):
    stem = saved[1]
    path = stem.with_name(stem.name + ".json")
    config = json.loads(path.read_text())
    config["model_kwargs"]["audio_dim"] = -1  # torch refuses this size with a RuntimeError
    path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="model settings this version cannot use"):
        load_checkpoint(stem)

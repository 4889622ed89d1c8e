"""Model checkpoints: weights in safetensors, everything else in a readable JSON next to them.

A checkpoint is two files sharing a stem: `STEM.safetensors` (tensors only, so loading can never run
code, unlike pickle) and `STEM.json` (which model class, its constructor keywords, the feature
definition it was trained on, how it was trained, its measured metrics). Loading rebuilds the model from
the JSON and checks every tensor name and shape, so a damaged or mismatched file is reported in one
sentence instead of a traceback halfway through a video.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import pkgutil
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from talkface.errors import CheckpointError

BUNDLED = Path(__file__).parent.parent / "assets" / "checkpoints"
# The four A2L checkpoints of the paper's ablation (Table IV), in the order every table and grid shows them:
# checkpoint a2l_<name> -> label. The one place they are listed.
ABLATIONS: dict[str, str] = {"baseline": "Baseline", "wd": "+WD", "tr": "+TR", "wd_tr": "+WD+TR"}
BUNDLED_NAMES = ("word_detector", "mi_estimator", *(f"a2l_{name}" for name in ABLATIONS), "l2f")
FORMAT = "talkface-checkpoint/1"

# helpers


def bundled(name: str) -> Path:
    """Stem (path without suffix) of a checkpoint shipped in assets/checkpoints."""
    if name not in BUNDLED_NAMES:
        raise CheckpointError(
            f"There is no bundled checkpoint called '{name}'; choose one of {', '.join(BUNDLED_NAMES)}."
        )
    return BUNDLED / name


def _stem(path_stem: str | os.PathLike) -> Path:
    """Accept a stem, or either file of the pair, so callers can pass whatever they have. A stem may itself
    hold dots (``a2l_v1.2``): only the two known suffixes are ever taken off or put on (``_file``)."""
    path = Path(path_stem)
    return path.with_suffix("") if path.suffix in (".safetensors", ".json") else path


def _file(stem: Path, suffix: str) -> Path:
    """`stem` + `suffix`, keeping any dot in the stem (``with_suffix`` would replace ``.2`` of ``a2l_v1.2``)."""
    return stem.with_name(stem.name + suffix)


def _fsync_replace(tmp: Path, final: Path) -> None:
    """Move a fully written temporary file over the final name: readers see the old file or the new one."""
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)


def atomic_save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write a safetensors file so that a crash mid-write never leaves a truncated file under `path`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # safetensors refuses tensors that share memory or are non-contiguous; a copy on the CPU is both.
    save_file({k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}, str(tmp), metadata)
    _fsync_replace(tmp, path)


def atomic_save_json(obj: Any, path: Path) -> None:
    """Write JSON atomically (temporary file + os.replace)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    _fsync_replace(tmp, path)


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read all tensors and the metadata of a safetensors file, turning any failure into a CheckpointError."""
    if not path.is_file():
        raise CheckpointError(f"The checkpoint weights file {path} is missing.")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except Exception as e:  # safetensors raises its own error types, OSError or ValueError depending on the damage
        raise CheckpointError(f"The checkpoint weights file {path} is damaged or incomplete ({e}).") from e


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside DistributedDataParallel or torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


# model registry


_REGISTRY: dict[str, type[nn.Module]] = {}


def model_registry() -> dict[str, type[nn.Module]]:
    """Every nn.Module class defined in talkface.models, by class name (what a checkpoint's JSON names)."""
    if not _REGISTRY:
        import talkface.models as package

        for info in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            for name, obj in vars(module).items():
                if inspect.isclass(obj) and issubclass(obj, nn.Module) and obj.__module__ == module.__name__:
                    _REGISTRY[name] = obj
    return _REGISTRY


# save / load


def save_checkpoint(
    path_stem: str | os.PathLike,
    model_or_state_dict: nn.Module | dict[str, torch.Tensor],
    config: dict[str, Any],
    half: bool = False,
) -> Path:
    """Write STEM.safetensors and STEM.json; returns the stem.

    `config` is stored as given (feature definition, training command, data hash, metrics...). When a model
    is passed, its class name and `init_kwargs` fill `model_class` / `model_kwargs` unless config sets them;
    a bare state dict needs both in config. `half` stores floating tensors as fp16 to halve the size.
    """
    stem = _stem(path_stem)
    config = dict(config)
    if isinstance(model_or_state_dict, nn.Module):
        model = unwrap(model_or_state_dict)
        config.setdefault("model_class", type(model).__name__)
        config.setdefault("model_kwargs", dict(getattr(model, "init_kwargs", {})))
        state = model.state_dict()
    else:
        state = dict(model_or_state_dict)
    if "model_class" not in config or "model_kwargs" not in config:
        raise ValueError("config needs 'model_class' and 'model_kwargs' when saving a bare state dict")
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    config = {"format": FORMAT, **config, "dtype": "float16" if half else "float32"}
    stem.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_tensors(state, _file(stem, ".safetensors"))
    atomic_save_json(config, _file(stem, ".json"))
    return stem


def read_config(path_stem: str | os.PathLike) -> dict[str, Any]:
    """The JSON half of a checkpoint, checked to be readable and to name a model."""
    path = _file(_stem(path_stem), ".json")
    if not path.is_file():
        raise CheckpointError(f"The checkpoint config file {path} is missing.")
    try:
        config = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"The checkpoint config file {path} is damaged (it is not valid JSON).") from e
    if not isinstance(config, dict) or not isinstance(config.get("model_class"), str):
        raise CheckpointError(f"The checkpoint config file {path} does not say which model it holds.")
    if not isinstance(config.get("model_kwargs", {}), dict):
        raise CheckpointError(f"The checkpoint config file {path} has unreadable model settings.")
    return config


def load_state_dict_checked(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Copy `state` into `model` after checking names and shapes; fp16 is upcast to the model's dtype."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing:
        raise CheckpointError(
            f"The checkpoint weights file {path} lacks the tensor '{missing[0]}' that the model needs."
        )
    if extra:
        raise CheckpointError(
            f"The checkpoint weights file {path} has a tensor '{extra[0]}' that the model does not use."
        )
    for name, tensor in expected.items():
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"The checkpoint weights file {path} has tensor '{name}' of shape {tuple(state[name].shape)} "
                f"where the model expects {tuple(tensor.shape)}."
            )
        if state[name].is_floating_point() and not torch.isfinite(state[name]).all():
            raise CheckpointError(f"The checkpoint weights file {path} has NaN or infinite values in tensor "
                                  f"'{name}' (a diverged or damaged training run); it cannot be used.")
    # load_state_dict copies into the existing tensors, which casts fp16 to the model's own dtype.
    model.load_state_dict(state, strict=True)


def check_features(config: dict[str, Any], json_path: Path) -> None:
    """Refuse a checkpoint whose recorded input features differ from what this version computes.

    Only checkpoints that record ``features`` (the A2L side: predictor, word detector, MI estimator) are
    checked; a model fed other MFCCs would still run, just with wrong lips, so the mismatch must be loud.
    """
    recorded = config.get("features")
    if recorded is None:
        return
    from talkface.audio import FEATURES

    if not isinstance(recorded, dict):
        raise CheckpointError(f"The checkpoint config file {json_path} has unreadable feature settings.")
    for key, value in FEATURES.items():
        if key not in recorded:
            raise CheckpointError(f"The checkpoint config file {json_path} does not record its audio feature "
                                  f"'{key}', so it cannot be checked against this version ({key} = {value}).")
        if recorded[key] != value:
            raise CheckpointError(f"The checkpoint {json_path} was trained on audio features with {key} = "
                                  f"{recorded[key]}, but this version computes {key} = {value}; retrain it.")


def load_checkpoint(
    path_stem: str | os.PathLike,
    model_cls: type[nn.Module] | None = None,
    device: str | torch.device | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a checkpoint describes and load its weights; returns (model in eval mode, config).

    Any problem (missing file, damaged file, mismatching tensors) raises CheckpointError naming the file.
    """
    stem = _stem(path_stem)
    config = read_config(stem)
    json_path = _file(stem, ".json")
    check_features(config, json_path)
    if model_cls is None:
        model_cls = model_registry().get(config["model_class"])
        if model_cls is None:
            raise CheckpointError(
                f"The checkpoint config file {json_path} names an unknown model '{config['model_class']}'."
            )
    try:
        model = model_cls(**config.get("model_kwargs", {}))
    except (TypeError, ValueError, RuntimeError, AssertionError) as e:
        raise CheckpointError(
            f"The checkpoint config file {json_path} has model settings this version cannot use ({e})."
        ) from e
    weights_path = _file(stem, ".safetensors")
    state, _ = read_safetensors(weights_path)
    load_state_dict_checked(model, state, weights_path)
    if device is not None:
        model.to(device)
    return model.eval(), config

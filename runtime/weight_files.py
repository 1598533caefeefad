"""Reading weights: tensors by name from a safetensors, npz or torch file, or from a mapping."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np


class WeightsError(ValueError):
    """A weights file does not fit the model: unknown or missing keys, wrong shapes, unreadable file."""


def read_weights(source) -> dict[str, np.ndarray]:
    """Tensors by name from a safetensors/npz/torch file or a mapping (torch tensors become arrays)."""
    if isinstance(source, Mapping):
        return _named_tensors(source.items(), "the mapping")
    path = Path(source)
    if not path.is_file():
        raise WeightsError(f"no such weights file: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.numpy import load_file

            return dict(load_file(str(path)))
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                if len(set(data.files)) != len(data.files):  # a zip may hold one name twice: which is meant?
                    twice = sorted({k for k in data.files if data.files.count(k) > 1})
                    raise WeightsError(f"{path} holds {', '.join(twice)} more than once")
                return {k: data[k] for k in data.files}
        if suffix in (".pt", ".pth", ".bin", ".ckpt"):
            import torch

            obj = torch.load(str(path), map_location="cpu", weights_only=True)
            if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
                obj = obj["state_dict"]
            if not isinstance(obj, Mapping):
                raise WeightsError(f"{path} does not hold a state_dict")
            return _named_tensors(obj.items(), str(path))
    except WeightsError:
        raise
    except Exception as exc:  # a corrupt file surfaces as whatever its reader raises
        raise WeightsError(f"cannot read weights from {path}: {exc}") from exc
    raise WeightsError(f"unsupported weights format '{suffix}' (use .safetensors, .npz or a torch .pt state_dict)")


def _named_tensors(items, where: str) -> dict[str, np.ndarray]:
    out = {}
    for k, v in items:
        if not isinstance(k, str):
            raise WeightsError(f"{where}: weight names are strings, got the key {k!r}")
        out[k] = _to_numpy(v)
    return out


def _to_numpy(v) -> np.ndarray:
    if hasattr(v, "detach"):
        return v.detach().cpu().numpy()
    return np.asarray(v)

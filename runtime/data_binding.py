"""The shapes that weights and inputs give a model's data-bound dimensions, at run time.

A spec's ``auto`` hyperparameters are bound when it is compiled (``compiler/data_dims.py``); a
``Model`` keeps the shapes of the weights it loaded and the inputs it ran on, and recompiles when
new data gives one of its ``DataDim``s another value (as a ``torch.nn.LazyLinear`` takes its
input width from the first batch).  ``npz_shapes`` reads only the array headers of an ``.npz``.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from nspec.compiler.data_dims import DataShapes, evidence
from nspec.compiler.ir import Program


def shapes_of(arrays: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Each array's shape by name (anything ``np.shape`` takes: arrays, tensors, nested lists)."""
    return {k: tuple(int(n) for n in (v.shape if hasattr(v, "shape") else np.shape(v))) for k, v in arrays.items()}


def npz_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """The shape of every array of an ``.npz`` file, from the headers alone (the data is not read)."""
    out = {}
    with zipfile.ZipFile(path) as z:
        for member in z.namelist():
            if member.endswith(".npy"):
                with z.open(member) as f:
                    version = np.lib.format.read_magic(f)
                    if version == (1, 0):
                        shape = np.lib.format.read_array_header_1_0(f)[0]
                    elif version == (2, 0):
                        shape = np.lib.format.read_array_header_2_0(f)[0]
                    else:  # a newer header: read the array
                        with z.open(member) as g:
                            shape = np.lib.format.read_array(g, allow_pickle=False).shape
                    out[member[:-4]] = tuple(int(n) for n in shape)
    return out


def changed(program: Program, data: DataShapes) -> dict[str, int]:
    """The data-bound dimensions to which ``data`` gives a value other than the compiled one."""
    out = {}
    for dim in program.data_dims:
        values = {e.value for e in evidence(list(dim.uses), data)}
        if values and values != {dim.value}:
            out[dim.name] = min(values)
    return out

"""Values from outside (weights, inputs, states) become the model's dtypes losslessly, or not at all.

``convert(value, dtype, what)`` accepts a cast that keeps every value: bool and integers into a
wider or float type, floats rounded to a narrower float (f64 -> f32 rounds to nearest, as every
framework does), integral floats into integers in range, 0/1 into bool.  It refuses, naming
``what``, the dtype and the first offending value: NaN or a fraction into an integer, a value out
of the target's range (1e300 into f32 would become inf), complex numbers, strings, dates,
structured records and Python objects.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class LossyCastError(ValueError):
    """A value would change (or has no numeric meaning) in the model's dtype."""


def _first(mask: np.ndarray, arr: np.ndarray) -> str:
    index = tuple(int(i) for i in np.argwhere(mask)[0]) if arr.ndim else ()
    where = f" at index {list(index)}" if index else ""
    value = arr[index]
    return f"{value.item() if hasattr(value, 'item') else value!r}{where}"


def convert(value: Any, dtype: np.dtype, what: str) -> np.ndarray:
    """``value`` as an array of ``dtype``, or ``LossyCastError`` naming ``what``."""
    arr = np.asarray(value)
    target = np.dtype(dtype)
    if arr.dtype == target:
        return arr
    if arr.dtype.kind == "c":
        if np.any(arr.imag != 0):
            raise LossyCastError(f"{what}: complex values cannot become {target.name} (first: "
                                 f"{_first(arr.imag != 0, arr)})")
        arr = arr.real
    if arr.dtype.kind not in "biuf":
        raise LossyCastError(f"{what}: values of type {arr.dtype} cannot become {target.name}")
    if target.kind == "b":
        bad = (arr != 0) & (arr != 1)
        if np.any(bad):
            raise LossyCastError(f"{what}: only 0 and 1 become bool, got {_first(bad, arr)}")
        return arr.astype(target)
    if target.kind in "iu":
        info = np.iinfo(target)
        if arr.dtype.kind == "f":
            bad = ~np.isfinite(arr) | (arr != np.round(arr))
            if np.any(bad):
                raise LossyCastError(f"{what}: {target.name} needs whole numbers, got {_first(bad, arr)}")
            bad = (arr < float(info.min)) | (arr >= float(info.max) + 1)  # both bounds exact in float64
        elif np.can_cast(arr.dtype, target) or arr.size == 0:
            return arr.astype(target)
        elif int(arr.min()) >= info.min and int(arr.max()) <= info.max:
            return arr.astype(target)
        else:
            wide = arr.astype(object)
            bad = (wide < info.min) | (wide > info.max)
        if np.any(bad):
            raise LossyCastError(f"{what}: {_first(bad, arr)} is outside {target.name}'s range "
                                 f"[{info.min}, {info.max}]")
        return arr.astype(target)
    # a float target: rounding to the nearest value is fine, overflowing to inf is not
    with np.errstate(over="ignore"):
        out = arr.astype(target)
    bad = np.isinf(out) & ~np.isinf(arr) if arr.dtype.kind == "f" else np.isinf(out)
    if np.any(bad):
        raise LossyCastError(f"{what}: {_first(bad, arr)} does not fit in {target.name} (it would become inf)")
    return out


__all__ = ["LossyCastError", "convert"]

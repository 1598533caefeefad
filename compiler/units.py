"""Physical units: the names a spec may use, their SI scale, and dimension arithmetic.

Dimensions come from pint (a kept units library) so `mV / ms` and `nS * mV` reduce correctly;
values are stored as SI floats (``20 ms`` -> 0.02).  Only the curated names in ``UNIT_NAMES``
are units in a spec, so a user's ``N`` or ``D`` is never read as newton or debye.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
import math
import re

import pint

_REG = pint.UnitRegistry()

# spec name -> pint expression
UNIT_NAMES: dict[str, str] = {
    "s": "second", "ms": "millisecond", "us": "microsecond", "ns": "nanosecond", "minute": "minute",
    "Hz": "hertz", "kHz": "kilohertz",
    "V": "volt", "mV": "millivolt", "uV": "microvolt",
    "A": "ampere", "mA": "milliampere", "uA": "microampere", "nA": "nanoampere", "pA": "picoampere",
    "S": "siemens", "mS": "millisiemens", "uS": "microsiemens", "nS": "nanosiemens", "pS": "picosiemens",
    "ohm": "ohm", "kohm": "kiloohm", "Mohm": "megaohm", "Gohm": "gigaohm",
    "F": "farad", "uF": "microfarad", "nF": "nanofarad", "pF": "picofarad",
    "m": "meter", "mm": "millimeter", "um": "micrometer", "cm": "centimeter",
    "M": "molar", "mM": "millimolar", "uM": "micromolar",
}


@dataclass(frozen=True, slots=True)
class Dim:
    """A physical dimension as sorted (base, exponent) pairs; ``Dim()`` is dimensionless."""

    exps: tuple[tuple[str, float], ...] = ()

    @staticmethod
    def of(units) -> "Dim":
        dims = _REG.Quantity(1, units).to_base_units().dimensionality
        return Dim(tuple(sorted((str(k), float(v)) for k, v in dims.items() if v)))

    def __mul__(self, other: "Dim") -> "Dim":
        acc = dict(self.exps)
        for k, v in other.exps:
            acc[k] = acc.get(k, 0.0) + v
        return Dim(tuple(sorted((k, v) for k, v in acc.items() if abs(v) > 1e-12)))

    def __truediv__(self, other: "Dim") -> "Dim":
        return self * other ** -1

    def __pow__(self, p: float) -> "Dim":
        return Dim(tuple((k, v * p) for k, v in self.exps if abs(v * p) > 1e-12))

    @property
    def dimensionless(self) -> bool:
        return not self.exps

    def __str__(self) -> str:
        return describe(self)


DIMENSIONLESS = Dim()


def is_unit(name: str) -> bool:
    return name in UNIT_NAMES


@lru_cache(maxsize=None)
def unit(name: str) -> tuple[float, Dim]:
    """SI scale and dimension of a unit name: ``unit("ms") == (0.001, Dim(time))``."""
    q = _REG.Quantity(1, UNIT_NAMES[name]).to_base_units()
    return float(q.magnitude), Dim.of(UNIT_NAMES[name])


def quantity(value: float, name: str) -> float:
    """``quantity(20, "ms") == 0.02``: a literal in SI."""
    return value * unit(name)[0]


def parse_duration(value: str | int | float) -> float:
    """A positive, finite model time in seconds, from a string with a unit of time (``1s``,
    ``200ms``, ``0.5 s``: what ``nspec run --duration`` and ``Model.run(duration=...)`` take) or a
    number of seconds; ValueError names the mistake."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"a duration is a time such as '200 ms' or a number of seconds, got {value!r}")
    if isinstance(value, str):
        m = re.fullmatch(r"\s*((?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*([A-Za-z]+)\s*", value)
        if m is None:
            raise ValueError(f"a duration is a time such as 1s or 200ms, got {value!r}")
        if not is_unit(m[2]) or unit(m[2])[1] != unit("s")[1]:
            raise ValueError(f"a duration needs a unit of time (s, ms, us), not {m[2]!r}")
        seconds = float(m[1]) * unit(m[2])[0]
    else:
        seconds = float(value)
    if not math.isfinite(seconds) or seconds <= 0:
        shown = value.strip() if isinstance(value, str) else value
        raise ValueError(f"the duration must be a positive, finite time, got {shown!r}")
    return seconds


# Names to print dimensions in, preferred first (a message says "mV", not "kg*m^2/(A*s^3)").
_PREFERRED = ["second", "volt", "ampere", "siemens", "ohm", "farad", "hertz", "meter", "molar"]
_SHORT = {"second": "s", "volt": "V", "ampere": "A", "siemens": "S", "ohm": "ohm", "farad": "F",
          "hertz": "Hz", "meter": "m", "molar": "M"}


@lru_cache(maxsize=None)
def describe(dim: Dim) -> str:
    """A readable name of a dimension: ``V``, ``V/s``, ``dimensionless``."""
    if dim.dimensionless:
        return "dimensionless"
    for name in _PREFERRED:
        if Dim.of(name) == dim:
            return _SHORT[name]
    for a in _PREFERRED:
        for b in _PREFERRED:
            if Dim.of(a) / Dim.of(b) == dim:
                return f"{_SHORT[a]}/{_SHORT[b]}"
            if Dim.of(a) * Dim.of(b) == dim:
                return f"{_SHORT[a]}*{_SHORT[b]}"
    return " ".join(f"{k}^{v:g}" for k, v in dim.exps)


def base_unit_name(dim: Dim) -> str:
    """The SI unit a value of this dimension is stored in, for reports ('' if dimensionless)."""
    return "" if dim.dimensionless else describe(dim)


def dim_of_base_unit(text: str) -> Dim:
    """The inverse of ``base_unit_name``: a ``Var``'s stored unit text back to its dimension."""
    if not text:
        return DIMENSIONLESS
    long = {short: name for name, short in _SHORT.items()}
    for sep in ("/", "*"):
        a, found, b = text.partition(sep)
        if found and a in long and b in long:
            return Dim.of(long[a]) / Dim.of(long[b]) if sep == "/" else Dim.of(long[a]) * Dim.of(long[b])
    if text in long:
        return Dim.of(long[text])
    return Dim(tuple((k, float(v)) for k, _, v in (part.partition("^") for part in text.split(" "))))

"""``compiler/unit_table.py`` (the units a spec may name, written out so nspec imports without
pint) against pint itself, the oracle it was generated from."""

import math
import subprocess
import sys

from nspec.compiler import units
from nspec.compiler.unit_table import BASE


def test_every_spec_unit_is_in_the_table_and_equals_pint():
    assert set(units.UNIT_NAMES.values()) <= set(BASE)
    for name, (scale, exps) in BASE.items():
        pint_scale, pint_exps = units.pint_base(name)
        assert math.isclose(scale, pint_scale, rel_tol=1e-15), name
        assert exps == pint_exps, name
    assert units.table_source() == open(units.__file__.replace("units.py", "unit_table.py")).read()


def test_unit_lookups_agree_with_pint_for_compound_units():
    for a, b in [("millivolt", "millisecond"), ("nanosiemens", "millivolt"), ("picoampere", "picofarad")]:
        ratio = units.Dim.of(a) / units.Dim.of(b)
        assert ratio == units.Dim(units.pint_base(f"{a} / {b}")[1])
    assert units.unit("ms") == (0.001, units.Dim.of("second"))


def test_importing_the_compiler_does_not_load_pint():
    code = "import sys, nspec.compiler; from nspec.compiler.units import unit; unit('mV'); print('pint' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"

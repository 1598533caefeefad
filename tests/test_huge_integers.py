"""Numbers past their type are located errors naming the value and the range, never an internal error and never
a silent wrap-around: integer literals and folded integers outside i64, integers past a declared i32, floats that
overflow to inf (a literal, a product, a quantity in SI units, a unit's scale, a value narrowed to f32), wherever
they are written (a ``let``, a size, an exponent, a hyperparameter's default, ``--param`` on the command line).

Before: ``99999999999999999999 * 99999999999999999999`` was ``internal error: KeyError: dtype('O')`` (the fold met
a Python int NumPy holds as an object), ``2^62 * 2^62`` and ``2^64`` folded to 0 silently (int64 wraps), ``2^-1``
was a ValueError from NumPy, ``kHz^400`` an OverflowError, ``int(1.0 / 0.0)`` an OverflowError, and
``--param seed=abc`` a ValueError.
"""

from __future__ import annotations

import textwrap

import pytest

import nspec
from nspec.cli import main
from nspec.compiler.driver import check_files
from nspec.dsl import NspecError

I64 = "outside the range of i64, -2^63 to 2^63 - 1 (-9223372036854775808 to 9223372036854775807)"
I32 = "outside the range of i32, -2^31 to 2^31 - 1 (-2147483648 to 2147483647)"
INF = "this number is too large for a float: it would be inf"


def _check(tmp_path, body: str, name: str = "spec.nspec") -> list:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    diags, _ = check_files([path])
    return [d for d in diags if d.severity == "error"]


def _first(tmp_path, body: str) -> tuple[int, int, str]:
    errors = _check(tmp_path, body)
    assert errors, "expected an error"
    return errors[0].span.line, errors[0].span.col, errors[0].message


# ---------------------------------------------------------------- module constants: the issue's file
def test_the_issues_file_gives_one_located_error_per_constant(tmp_path):
    errors = _check(tmp_path, """\
        module t "t"
        let w = 2^62 * 2^62 * 2^62
        let u = 99999999999999999999 * 99999999999999999999 - 5
        let m = 99999999999999999999 % 7
        """)
    assert [(d.span.line, d.span.col) for d in errors] == [(2, 9), (3, 9), (4, 9)]
    assert errors[0].message == ("integer overflow: 4611686018427387904 * 4611686018427387904 = "
                                 f"21267647932558653966460912964485513216 is {I64}")
    for d in errors[1:]:
        assert d.message.startswith(f"the integer 99999999999999999999 is {I64}"), d.message
        assert d.message.endswith("a float is written with a point or an exponent, like 1e20"), d.message


@pytest.mark.parametrize("expr, col, message", [
    ("9223372036854775807", None, None),  # the largest i64 is exact (a float literal would round it to 2^63)
    ("-2^62 * 2", None, None),  # -2^63 fits
    ("9223372036854775807 + 1", 9, f"integer overflow: 9223372036854775807 + 1 = 9223372036854775808 is {I64}"),
    ("-(-2^62 * 2)", 9, f"the integer 9223372036854775808 is {I64}"),
    ("2^63", 9, f"integer overflow: 2 ^ 63 = 9223372036854775808 is {I64}"),
    ("2^64", 9, f"integer overflow: 2 ^ 64 = 18446744073709551616 is {I64}"),
    ("3^40", 9, f"integer overflow: 3 ^ 40 = 12157665459056928801 is {I64}"),
    ("2^1000", 9, f"integer overflow: 2 ^ 1000 = about 1.07e+301 is {I64}"),
    ("3^100000000", 9, f"integer overflow: 3 ^ 100000000 = more than 1e308 is {I64}"),  # not computed exactly
    ("[2^62, 1] * 4", 9, f"integer overflow: 4611686018427387904 * 4 = 18446744073709551616 is {I64}"),
    ("2^-1", 9, "an integer to a negative power (2 ^ -1): integers have no fractions; raise a float, like 2.0 ^ -1"),
    ("[2, 3]^-1", 9, "an integer to a negative power ([...] ^ -1)"),
    ("-99999999999999999999", 10, f"the integer 99999999999999999999 is {I64}"),
    ("9" * 500, 9, f"an integer of hundreds of digits is {I64}"),
    ("1e309", 9, INF),
    ("1e300 * 1e300", 9, "float overflow: 1e+300 * 1e+300 is inf, past the largest float64 (about 1.798e+308)"),
    ("1e400 ms", 9, INF),
    ("1e308 kHz", 9, "1e+308 kHz is inf in SI units (Hz): too large for a float"),
    ("2^62 * 2^62 * 1 ms", 9, "integer overflow: 4611686018427387904 * 4611686018427387904"),
    ("int(1e30)", 13, f"int() of 1e+30: the result is {I64}"),
    ("int(1.0 / 0.0)", 13, f"int() of inf: the result is {I64}"),
    ("[\"a\"] * 2", 9, "cannot multiply a list of strings"),
])
def test_constants(tmp_path, expr, col, message):
    errors = _check(tmp_path, f"module t \"t\"\nlet x = {expr}\n")
    if message is None:
        assert errors == []
        return
    assert errors and (errors[0].span.line, errors[0].span.col) == (2, col), errors
    assert errors[0].message.startswith(message), errors[0].message


def test_a_float_divided_by_zero_or_a_fractional_power_is_not_an_overflow(tmp_path):
    assert _check(tmp_path, "module t \"t\"\nlet a = 1.0 / 0.0\nlet b = 0.0 ^ -1\nlet c = 2.0 ^ 1000\nlet d = 2^0.5\n") == []


def test_a_typed_constant_must_fit_its_integer_type(tmp_path):
    assert _first(tmp_path, "let k: i32 = 2^40\n") == (1, 14, f"the integer 1099511627776 does not fit in i32: it is "
                                                              f"{I32}")
    assert _first(tmp_path, "let y: i64 = 99999999999999999999999\n")[:2] == (1, 14)


# ---------------------------------------------------------------- in systems: values, sizes, exponents, casts
SYSTEM = """
system S {
  STMT
  out y: f32
  y = 1.0
}
simulate S for 2 s, dt = 1 s
"""


@pytest.mark.parametrize("stmt, col, message", [
    ("state v: i64 = 0\n  next v = v * 99999999999999999999", 16, f"the integer 99999999999999999999 is {I64}"),
    ("state v: i64 = 0\n  next v = v ^ -1", 12, "an integer to a negative power (v ^ -1): the result is i64"),
    ("state v: i32 = 0\n  next v = v + 2^40", 12, f"the integer 1099511627776 does not fit in i32: it is {I32}"),
    ("state v: i32 = 2^40", 18, f"the integer 1099511627776 does not fit in i32: it is {I32}"),
    ("state v: f32 = 0\n  let k: i32 = 2^40\n  next v = v + float(k)", 16, "the integer 1099511627776 does not fit in i32"),
    ("state v: f32 = 0\n  let k: i64 = 1e30\n  next v = v + float(k)", 16, f"the number 1e+30 does not fit in i64: it is {I64}"),
    ("state v: f32 = 1e300", 18, "1e+300 does not fit in f32 (its largest value is about 3.403e+38); it would be inf"),
    ("state v: f32 = 0\n  next v = v + 1e300", 12, "1e+300 does not fit in f32"),
    ("state v: f32[2^62 * 4] = 0", 16, f"integer overflow: 4611686018427387904 * 4 = 18446744073709551616 is {I64}"),
    ("state v: f32[99999999999999999999] = 0", 16, f"the integer 99999999999999999999 is {I64}"),
    ("param p: i64[3] = [1, 2, 2^63]", 28, f"integer overflow: 2 ^ 63 = 9223372036854775808 is {I64}"),
    ("state v: f32 kHz^400 = 0", 16, "the unit kHz^400 is 1000^400 in SI units, outside the range of a float"),
    ("state v: f32 ms^-99999 = 0", 16, "the unit ms^-99999 is 0.001^-99999 in SI units"),
    ("state v: f32 ms^99999 = 0", 16, "the unit ms^99999 is 0.001^99999 in SI units"),  # a scale of 0
])
def test_in_a_system(tmp_path, stmt, col, message):
    line, got_col, got = _first(tmp_path, SYSTEM.replace("STMT", stmt))
    assert (line, got_col) == (3 + min(stmt.count("\n"), 1), col), got
    assert got.startswith(message), got


def test_the_largest_i64_state_keeps_its_value(tmp_path):
    path = tmp_path / "big.nspec"
    path.write_text("system S {\n  state v: i64 = 9223372036854775807\n  out y: i64\n  y = v\n}\n"
                    "simulate S for 2 s, dt = 1 s\n")
    out = nspec.load(path).run(steps=1)
    assert int(out["y"].reshape(-1)[0]) == 2**63 - 1


def test_range_of_huge_bounds_is_counted_not_built(tmp_path):
    """len(range(-2^62, 2^62)) overflowed a C ssize_t (found by bench/fuzz_specs.py, seed 7, elm_v2.nspec)."""
    body = SYSTEM.replace("STMT", "state v: f32 = 0\n  for i in range(-2^62, 2^62) {\n    next v = v + 1.0\n  }")
    line, col, message = _first(tmp_path, body)
    assert message == ("range() would build a compile-time list of 9,223,372,036,854,775,808 values; at most "
                       "67,108,864 (2**26)"), message


# ---------------------------------------------------------------- hyperparameters: defaults and --param
HYPER = """
module h "h"
hyper n: int = 4
hyper g = 0.5
neuron N {
  state v: f32 = 0
  next v = v * g + float(n)
}
network Net {
  population P: N[n]
}
simulate Net for 1 ms, dt = 0.1 ms
"""


def test_a_hyperparameters_default_is_checked_like_any_constant(tmp_path):
    assert _first(tmp_path, HYPER.replace("hyper n: int = 4", "hyper n: int = 2^64")) == (
        3, 16, f"integer overflow: 2 ^ 64 = 18446744073709551616 is {I64}")
    assert _first(tmp_path, HYPER.replace("hyper g = 0.5", "hyper g = 1e309"))[:2] == (4, 11)


@pytest.mark.parametrize("param, line, message", [
    ("n=99999999999999999999", 3, f"--param n='99999999999999999999': the integer 99999999999999999999 is {I64}"),
    ("n=2^62*4", 3, f"--param n='2^62*4': integer overflow: 4611686018427387904 * 4 = 18446744073709551616 is {I64}"),
    ("n=[99999999999999999999]", 3, f"--param n: the integer 99999999999999999999 is {I64}"),
    ("g=1e400", 4, f"--param g='1e400': {INF}"),
    ("seed=abc", 1, "--param seed='abc' is not a seed, an integer from 0 to 2^63 - 1: unknown name 'abc'"),
    ("seed=-1", 1, "--param seed='-1' is not a seed, an integer from 0 to 2^63 - 1"),
    ("seed=1.5", 1, "--param seed='1.5' is not a seed"),
    ("seed=99999999999999999999", 1, f"--param seed='99999999999999999999' is not a seed, an integer from 0 to "
                                     f"2^63 - 1: the integer 99999999999999999999 is {I64}"),
    ("dt=0", 1, "--param dt='0' is not a positive, finite duration"),
    ("dt=-1 ms", 1, "--param dt='-1 ms' is not a positive, finite duration"),
    ("dt=2 mV", 1, "--param dt='2 mV' is not a positive, finite duration"),
    ("dt=1e400 s", 1, f"--param dt='1e400 s' is not a positive, finite duration: {INF}"),
])
def test_param_on_the_command_line(tmp_path, capsys, param, line, message):
    path = tmp_path / "h.nspec"
    path.write_text(HYPER)
    for command in ("check", "run"):
        code = main([command, str(path), "--param", param, *(["--steps", "2"] if command == "run" else [])])
        err = capsys.readouterr().err
        assert code == 1, (command, err)
        # dt and seed are located where they were written, on the command line; hyperparameters at their declaration
        where = "<command line>:1:" if param.startswith(("seed=", "dt=")) else f"h.nspec:{line}:1:"
        assert f"{where}" in err and f"error: {message}" in err, (command, err)
        assert err.index(where) < err.index(f"error: {message}"), (command, err)


def test_param_values_that_fit_still_run(tmp_path, capsys):
    path = tmp_path / "h.nspec"
    path.write_text(HYPER)
    assert main(["run", str(path), "--param", "seed=5", "--param", "dt=0.2 ms", "--param", "n=3", "--steps", "2"]) == 0


def test_a_python_int_past_i64_given_to_load(tmp_path):
    path = tmp_path / "h.nspec"
    path.write_text(HYPER)
    with pytest.raises(NspecError) as raised:
        nspec.load(path, n=10**20)
    assert raised.value.diagnostics[0].message == f"--param n: the integer 100000000000000000000 is {I64}"


def test_a_negative_simulate_seed(tmp_path):
    assert _first(tmp_path, HYPER.replace("dt = 0.1 ms", "dt = 0.1 ms, seed = -1"))[2] == \
        "a seed is an integer from 0 to 2^63 - 1, got -1"


RUNTIME_POWER = """module runtime_power "integer powers whose exponent is known only at run time"
system P {
  in base: i64[8]
  in e: i64[8]
  out y: i64[8]
  y = base ^ e
}
simulate P for 1 s, dt = 1 s
"""


@pytest.mark.parametrize("backend", ["reference", "onnxruntime", "tvm", "torch"])
def test_an_integer_to_a_run_time_negative_power_is_defined_on_every_backend(tmp_path, backend):
    """1 / base^|e| rounded toward zero: 1 for base 1, +-1 for base -1 by parity, else 0.  The reference
    interpreter raised 'Integers to negative integer powers are not allowed' (an internal error) and TVM could
    not build an integer pow at all."""
    import numpy as np

    path = tmp_path / "p.nspec"
    path.write_text(RUNTIME_POWER, encoding="utf-8")
    base = np.array([[2, 1, -1, -1, 0, 3, -2, 7]], np.int64)
    e = np.array([[-1, -5, -3, -4, -2, 4, 3, 0]], np.int64)
    y = np.asarray(nspec.load(path).run(inputs={"base": base, "e": e}, steps=1, backend=backend)["y"]).ravel()
    np.testing.assert_array_equal(y, [0, 1, -1, 1, 0, 81, -8, 1])

"""Bounds and integer division (#14 item 1): no backend reads or writes outside a buffer, and every
backend reports the same located error for the same mistake.

An index or a divisor is proven when its values are known (``compiler/bounds.py``): constants and
constant initial values at compile time (``nspec check`` too), parameters and input ports when a run
starts or weights are loaded, and anything computed at run time by CHECK nodes whose status the
runtime turns into a located error after the run.  Kernels clamp indices and divide by 1 where an
integer divisor is 0, so nothing traps before the error is raised.  The TVM cases run in a
subprocess: a crash (segfault, SIGFPE) fails the test instead of killing pytest.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nspec
from nspec.compiler import bounds
from nspec.compiler.driver import check_files
from nspec.compiler.ir import DType, GraphBuilder, Op, Program, Var
from nspec.compiler.passes.check_bounds import check_bounds
from nspec.dsl.diagnostics import NspecError, Span
from nspec.runtime.checks import RunCheckError

IN_PROCESS = ("reference", "onnxruntime", "torch")
ROUTE = """\
module route "a gather by a routing parameter loaded from a weights file"

system Route {
  in x: f32[3]
  out y: f32[3]
  out s: f32[3]
  param route: i64[3] = [0, 1, 2] key "route"
  y = x[route]
  s = scatter_add(zeros([3]), route, x, axis = 0)
}

simulate Route for 2 ms, dt = 1 ms
"""
COMPUTED = """\
module computed "indices and divisors computed at run time"

system Computed {
  in x: f32[5]
  in k: i64[4]
  in d: i64
  out y: f32[4]
  out s: f32[5]
  out q: i64[4]
  out r: f32[4]
  y = x[k - d]
  s = scatter_add(zeros([5]), k - d, x[0:4], axis = 0)
  q = k % (k - d)
  r = k / (k - d)
}

simulate Computed for 2 ms, dt = 1 ms
"""
TICKS = """\
module ticks "an index computed inside internal ticks, from a state that changes each tick"

system Tick {
  in x: f32[4]
  in k: i64
  out y: f32
  out seen: f32 stack
  state acc: f32 = 0
  state j: i64 = 0
  y = acc
  seen = acc
  next j = j + k
  next acc = acc + x[j]
  ticks 3
}

simulate Tick for 2 ms, dt = 1 ms
"""
LINES = {"gather": 11, "scatter": 12, "mod": 13, "div": 14}  # the lines of COMPUTED's four sites


@pytest.fixture(scope="module")
def specs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("memory_safety")
    (root / "route.nspec").write_text(ROUTE)
    (root / "computed.nspec").write_text(COMPUTED)
    (root / "ticks.nspec").write_text(TICKS)
    return root


@pytest.fixture(scope="module")
def computed(specs):
    return nspec.load(specs / "computed.nspec")


def _run_tvm(script: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """A Python script in a fresh process (TVM: a crash must fail the test, not pytest)."""
    path = tmp_path / "tvm_case.py"
    path.write_text(textwrap.dedent(script))
    return subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=600)


def _first_line(exc: BaseException | str) -> str:
    """The located first line of an error, its file named without the folder."""
    line = str(exc).split("\n", 1)[0]
    return line[line.rfind("/", 0, line.find(".nspec:")) + 1:]


# ---------------------------------------------------------------- where each site is proven
def test_sites_are_proven_at_the_earliest_moment(specs, computed):
    route = nspec.load(specs / "route.nspec")
    assert {(s.kind, s.when) for s in bounds.classify(route.program.step)} == {("index", "start")}
    assert sorted((s.kind, s.when, s.span.line) for s in bounds.classify(computed.program.step)) == [
        ("divisor", "run", LINES["mod"]), ("divisor", "run", LINES["div"]),
        ("index", "run", LINES["gather"]), ("index", "run", LINES["scatter"])]
    # the status state is added only to a program that needs run-time checks
    assert bounds.STATUS not in {v.name for v in route.program.states}
    assert bounds.STATUS in {v.name for v in computed.program.states}


def test_cuba_needs_no_run_time_check():
    program = nspec.load(Path(__file__).resolve().parents[1] / "specs" / "cuba.nspec").program
    sites = bounds.classify(program.step)
    assert sites and {s.when for s in sites} == {"compile"}  # its CSR connectivity is constant
    assert bounds.STATUS not in {v.name for v in program.states}


@pytest.mark.parametrize("expr, size, proven", [
    ("argmax(x, axis = 0)", 5, True),       # a position of x itself
    ("k % 5", 5, True),                     # np.mod by a positive constant
    ("k % 6", 5, False),
    ("where(k > 0, 4, -5)", 5, True),       # both branches in [-5, 5)
    ("where(k > 0, 5, 0)", 5, False),
])
def test_interval_analysis_proves_computed_indices(tmp_path, expr, size, proven):
    spec = tmp_path / "iv.nspec"
    spec.write_text(f"system S {{\n  in x: f32[{size}]\n  in k: i64\n  out y: f32\n  y = x[{expr}]\n}}\n"
                    "simulate S for 1 ms, dt = 1 ms\n")
    (site,) = [s for s in bounds.classify(nspec.load(spec).program.step) if s.kind == "index"]
    assert (site.when == "never") == proven


# ---------------------------------------------------------------- compile time
@pytest.mark.parametrize("line, expect", [
    ("y = x[route]", "index 5 is out of range for an axis of size 3 (the initial value of param 'route')"),
    ("y = gather(x, arange(2) + 2, axis = 0)", "index 3 is out of range for an axis of size 3"),
    ("y = x[arange(2) - 4]", "index -4 is out of range for an axis of size 3"),
])
def test_constant_indices_out_of_range_are_located_check_errors(tmp_path, line, expect):
    spec = tmp_path / "frozen.nspec"
    spec.write_text("system S {\n  in x: f32[3]\n  out y: f32[2]\n  param route: i64[2] = [0, 5] frozen\n"
                    f"  {line}\n}}\nsimulate S for 1 ms, dt = 1 ms\n")
    diags, _ = check_files([spec])
    assert [(d.span.line, d.message) for d in diags] == [(5, expect)]
    with pytest.raises(NspecError, match=r"frozen.nspec:5:7: error: " + expect.replace("(", r"\(").replace(")", r"\)")):
        nspec.load(spec)
    cli = subprocess.run([sys.executable, "-m", "nspec", "check", str(spec)], capture_output=True, text=True)
    assert cli.returncode == 1 and expect in cli.stderr


@pytest.mark.parametrize("expr, expect", [
    ("n % (2 - 2)", "integer remainder by zero: the divisor 2 - 2 is 0"),
    ("n / 0", "integer division by zero: the divisor 0 is 0"),
    ("7 % 0 + n", "integer remainder by zero: the divisor 0 is 0"),
    ("n % zero", "integer division by zero (the initial value of param 'zero')"),
])
def test_a_folded_zero_divisor_is_a_compile_error(tmp_path, expr, expect):
    spec = tmp_path / "fold.nspec"
    spec.write_text("system S {\n  in n: i64[2]\n  out y: f32[2]\n  param zero: i64[2] = [1, 0] frozen\n"
                    f"  y = float({expr})\n}}\nsimulate S for 1 ms, dt = 1 ms\n")
    diags, _ = check_files([spec])
    assert [d.message for d in diags] == [expect] and diags[0].span.line == 5


def test_a_float_division_by_a_folded_zero_is_ieee_on_every_backend(tmp_path):
    spec = tmp_path / "fdiv.nspec"
    spec.write_text("system S {\n  in x: f32[3]\n  out y: f32[3]\n  y = x / (1 - 1)\n}\n"
                    "simulate S for 1 ms, dt = 1 ms\n")
    x = np.array([1.0, -2.0, 0.0], np.float32)
    model = nspec.load(spec)
    for backend in IN_PROCESS:
        y = model.run({"x": x}, backend=backend, nan_check="off")["y"]
        np.testing.assert_array_equal(y, [np.inf, -np.inf, np.nan], err_msg=backend)
    out = _run_tvm(f"""
        import numpy as np, nspec
        m = nspec.load({str(spec)!r})
        print(repr(m.run({{"x": np.array([1.0, -2.0, 0.0], np.float32)}}, backend="tvm", nan_check="off")["y"].tolist()))
    """, tmp_path)
    assert out.returncode == 0, out.stderr  # was an internal error: TVM's simplifier refused x / 0.0
    assert out.stdout.strip().splitlines()[-1] == "[inf, -inf, nan]"


# ---------------------------------------------------------------- when weights are loaded and a run starts
BAD_ROUTES = [([0, 4, 2], 4, 1), ([0, 100_000_000, 2], 100_000_000, 1), ([-4, 0, 1], -4, 0)]


@pytest.mark.parametrize("route, value, position", BAD_ROUTES)
def test_a_loaded_index_out_of_range_names_key_index_value_and_line(specs, route, value, position):
    model = nspec.load(specs / "route.nspec")
    want = (f"route.nspec:8:7: error: index {value} is out of range for an axis of size 3: weight 'route' "
            f"holds {value} at position {position}")
    with pytest.raises(RunCheckError) as err:
        model.load_weights({"route": np.array(route)})
    assert _first_line(err.value).endswith(want)
    assert model.params is None  # nothing was loaded
    for backend in IN_PROCESS:  # the same when the values reach a run another way (a weights file's params)
        model.params = {"route": np.array(route, np.int64)}
        with pytest.raises(RunCheckError) as err:
            model.run({"x": np.ones(3, np.float32)}, backend=backend)
        assert _first_line(err.value).endswith(want), backend


@pytest.mark.parametrize("route, value, position", BAD_ROUTES)
def test_tvm_refuses_a_loaded_index_out_of_range_through_the_cli(specs, tmp_path, route, value, position):
    np.savez(tmp_path / "w.npz", route=np.array(route))
    np.savez(tmp_path / "x.npz", x=np.ones((1, 3), np.float32))
    cli = subprocess.run([sys.executable, "-m", "nspec", "run", str(specs / "route.nspec"), "--backend", "tvm",
                          "--weights", str(tmp_path / "w.npz"), "--inputs", str(tmp_path / "x.npz"), "-q",
                          "-o", str(tmp_path / "out.npz")], capture_output=True, text=True, timeout=600)
    assert cli.returncode == 1, cli.stderr  # not 0 with memory from outside the buffer, not a segfault
    assert (f"route.nspec:8:7: error: index {value} is out of range for an axis of size 3: weight 'route' holds "
            f"{value} at position {position}") in cli.stderr
    assert not (tmp_path / "out.npz").exists()


def test_an_input_read_as_divisor_is_checked_when_the_run_starts(tmp_path):
    spec = tmp_path / "div_input.nspec"
    spec.write_text("system S {\n  in n: i64[3]\n  in d: i64[3]\n  out q: i64[3]\n  q = n % d\n}\n"
                    "simulate S for 2 ms, dt = 1 ms\n")
    model = nspec.load(spec)
    d = np.array([[1, 2, 3], [4, 0, 6]])  # [T, 3]: step 1, element 1 is 0
    for backend in IN_PROCESS:
        with pytest.raises(RunCheckError, match=r"div_input.nspec:5:7: error: integer division by zero: input 'd' "
                                                r"holds 0 at sample 0, step 1\[1\]"):
            model.run({"n": np.ones((2, 3), np.int64), "d": d}, backend=backend)


# ---------------------------------------------------------------- at run time
def _oracle(k: np.ndarray, d: np.ndarray, size: int = 5) -> str | None:
    """The first failing site of COMPUTED (step first, then the sites in order, then the position)."""
    for t in range(k.shape[0]):
        idx = k[t] - d[t]
        checks = [("gather", (idx < -size) | (idx >= size), "index {} is out of range for an axis of size 5"),
                  ("scatter", (idx < -size) | (idx >= size), "index {} is out of range for an axis of size 5"),
                  ("mod", idx == 0, "integer division by zero"), ("div", idx == 0, "integer division by zero")]
        for site, bad, text in checks:
            if bad.any():
                value = int(idx[int(np.argmax(bad))])
                return f"computed.nspec:{LINES[site]}:7: error: {text.format(value)} (step {t})"
    return None


def _computed_inputs(k) -> dict:
    k = np.asarray(k, np.int64)
    return {"x": np.arange(5 * len(k), dtype=np.float32).reshape(len(k), 5), "k": k, "d": np.zeros(len(k), np.int64)}


def _expected_values(k: np.ndarray) -> dict:
    x = np.arange(5 * len(k), dtype=np.float32).reshape(len(k), 5)
    s = np.zeros((len(k), 5), np.float32)
    for t in range(len(k)):
        np.add.at(s[t], k[t], x[t, :4])
    return {"y": np.take_along_axis(x, np.where(k < 0, k + 5, k), 1), "s": s, "q": np.zeros_like(k),
            "r": np.ones(k.shape, np.float32)}


def _outcome(model, inputs, backend) -> str | dict:
    try:
        return model.run(inputs, backend=backend)
    except RunCheckError as exc:
        return _first_line(exc)


@pytest.mark.parametrize("k, expect", [
    ([[1, 2, 3, 4], [1, 2, 3, 5]], "computed.nspec:11:7: error: index 5 is out of range for an axis of size 5 (step 1)"),
    ([[1, 2, 3, 4], [1, 2, 10**8, 4]], "computed.nspec:11:7: error: index 100000000 is out of range for an axis of size 5 (step 1)"),
    ([[-6, 1, 2, 3], [1, 2, 3, 4]], "computed.nspec:11:7: error: index -6 is out of range for an axis of size 5 (step 0)"),
    ([[1, 2, 3, 4], [1, 0, 3, 4]], "computed.nspec:13:7: error: integer division by zero (step 1)"),
])
def test_computed_mistakes_give_the_same_located_error_on_every_backend(computed, tmp_path, k, expect):
    assert _oracle(np.array(k), np.zeros(2, np.int64)) == expect
    for backend in IN_PROCESS:
        assert _outcome(computed, _computed_inputs(k), backend) == expect, backend
    out = _run_tvm(f"""
        import numpy as np, nspec
        from nspec.runtime.checks import RunCheckError
        m = nspec.load({str(Path(computed.path))!r})
        k = np.array({k!r}, np.int64)
        try:
            m.run({{"x": np.arange(5 * len(k), dtype=np.float32).reshape(len(k), 5), "k": k,
                   "d": np.zeros(len(k), np.int64)}}, backend="tvm")
        except RunCheckError as exc:
            print(str(exc).split("\\n", 1)[0])
    """, tmp_path)
    assert out.returncode == 0, out.stderr  # no segfault, no SIGFPE
    assert _first_line(out.stdout.strip().splitlines()[-1]) == expect


def test_an_index_computed_inside_ticks_is_checked_on_every_backend(specs, tmp_path):
    """The status is carried through the LOOP of internal ticks (stacked outputs keep their place)."""
    model = nspec.load(specs / "ticks.nspec")
    x = np.array([1, 2, 3, 4], np.float32)
    want = "ticks.nspec:13:20: error: index 4 is out of range for an axis of size 4 (step 1)"  # j = 0..2, then 3, 4
    ok = {}
    for backend in IN_PROCESS:
        assert _outcome(model, {"x": x, "k": np.array(1)}, backend) == want, backend
        ok[backend] = model.run({"x": x, "k": np.array(0)}, backend=backend)  # j stays 0: x[0] each tick
        np.testing.assert_array_equal(ok[backend]["seen"], [[0, 1, 2], [3, 4, 5]], err_msg=backend)
        np.testing.assert_array_equal(ok[backend]["y"], [2, 5], err_msg=backend)  # the last tick's
    out = _run_tvm(f"""
        import numpy as np, nspec
        from nspec.runtime.checks import RunCheckError
        m = nspec.load({str(specs / "ticks.nspec")!r})
        x = np.array([1, 2, 3, 4], np.float32)
        print(m.run({{"x": x, "k": np.array(0)}}, backend="tvm")["seen"].tolist())
        try:
            m.run({{"x": x, "k": np.array(1)}}, backend="tvm")
        except RunCheckError as exc:
            print(str(exc).split("\\n", 1)[0])
    """, tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[-2] == "[[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]" and _first_line(lines[-1]) == want


def test_in_range_values_are_unchanged_on_every_backend(computed):
    k = np.array([[1, 2, 3, 4], [-1, -5, 4, 1]])
    want = _expected_values(k)
    for backend in IN_PROCESS:
        got = computed.run(_computed_inputs(k), backend=backend)
        for name, value in want.items():
            np.testing.assert_array_equal(got[name], value, err_msg=f"{backend} {name}")
        assert computed.state[bounds.STATUS].tolist() == [[0, 2, 0]], backend  # clear after 2 clean steps


def test_a_batched_run_names_the_first_failing_sample(computed):
    k = np.array([[[1, 2, 3, 4], [1, 2, 3, 4]], [[1, 2, 3, 4], [1, 9, 3, 4]], [[1, 2, 3, 4], [1, 2, 7, 4]]])
    inputs = {"x": np.ones((3, 2, 5), np.float32), "k": k, "d": np.zeros((3, 2), np.int64)}
    for backend in IN_PROCESS:
        with pytest.raises(RunCheckError, match=r"computed.nspec:11:7: error: index 9 is out of range for an axis "
                                                r"of size 5 \(step 1, sample 1\)"):
            computed.run(inputs, backend=backend, batch=3)


def test_a_chunked_run_counts_steps_across_chunks(computed):
    k = np.tile([1, 2, 3, 4], (1200, 1))
    k[1100, 2] = 5
    for backend in ("reference", "torch"):
        with pytest.raises(RunCheckError, match=r"index 5 is out of range for an axis of size 5 \(step 1100\)"):
            computed.run(_computed_inputs(k), backend=backend, progress=True)


# ---------------------------------------------------------------- generated index vectors
INDEX = st.integers(-12, 12)
VECTORS = st.lists(st.lists(INDEX, min_size=4, max_size=4), min_size=1, max_size=3)
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FAST
@given(k=VECTORS)
def test_generated_computed_indices_match_the_numpy_oracle(computed, k):
    k = np.array(k, np.int64)
    want = _oracle(k, np.zeros(len(k), np.int64))
    for backend in IN_PROCESS:
        got = _outcome(computed, _computed_inputs(k), backend)
        if want is None:
            for name, value in _expected_values(k).items():
                np.testing.assert_array_equal(got[name], value, err_msg=f"{backend} {name}")
        else:
            assert got == want, backend


@FAST
@given(route=st.lists(st.integers(-8, 8), min_size=3, max_size=3))
def test_generated_loaded_routes_match_the_numpy_oracle(specs, route):
    model = nspec.load(specs / "route.nspec")
    route = np.array(route, np.int64)
    bad = (route < -3) | (route >= 3)
    if not bad.any():
        model.load_weights({"route": route})
        x = np.array([1.0, 2.0, 4.0], np.float32)
        got = model.run({"x": x}, steps=1)
        np.testing.assert_array_equal(got["y"], x[route])
        s = np.zeros(3, np.float32)
        np.add.at(s, route, x)
        np.testing.assert_array_equal(got["s"], s)
        return
    p = int(np.argmax(bad))
    with pytest.raises(RunCheckError) as err:
        model.load_weights({"route": route})
    assert _first_line(err.value).endswith(f"route.nspec:8:7: error: index {route[p]} is out of range for an axis "
                                           f"of size 3: weight 'route' holds {route[p]} at position {p}")


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cases=st.lists(VECTORS, min_size=6, max_size=6))
def test_generated_computed_indices_on_tvm_match_the_numpy_oracle(computed, tmp_path, cases):
    """Six generated runs per subprocess (one compile, from the cache after the first)."""
    out = _run_tvm(f"""
        import json, numpy as np, nspec
        from nspec.runtime.checks import RunCheckError
        m = nspec.load({str(Path(computed.path))!r})
        results = []
        for k in {cases!r}:
            k = np.array(k, np.int64)
            try:
                got = m.run({{"x": np.arange(5 * len(k), dtype=np.float32).reshape(len(k), 5), "k": k,
                             "d": np.zeros(len(k), np.int64)}}, backend="tvm")
                results.append({{name: got[name].tolist() for name in ("y", "s", "q", "r")}})
            except RunCheckError as exc:
                results.append(str(exc).split("\\n", 1)[0])
        print(json.dumps(results))
    """, tmp_path)
    assert out.returncode == 0, out.stderr
    results = json.loads(out.stdout.strip().splitlines()[-1])
    for k, got in zip(cases, results):
        k = np.array(k, np.int64)
        want = _oracle(k, np.zeros(len(k), np.int64))
        if want is None:
            for name, value in _expected_values(k).items():
                np.testing.assert_array_equal(np.array(got[name]), value, err_msg=name)
        else:
            assert _first_line(got) == want


# ---------------------------------------------------------------- connectivity
def _propagate_program(indptr, indices, computed: bool = False):
    g = GraphBuilder()
    spikes = g.arg("spikes", "input", DType.f32, (3,))
    ptr, idx = g.const(np.array(indptr, np.int64), DType.i64), g.const(np.array(indices, np.int64), DType.i64)
    if computed:  # connectivity read from an input: no spec builds it, but the IR could hold it
        idx = g.add(Op.ADD, [idx, g.arg("shift", "input", DType.i64, ())], DType.i64, (len(indices),))
    w = g.const(np.ones(len(indices), np.float32))
    g.result("y", "output", g.add(Op.PROPAGATE, [spikes, ptr, idx, w], DType.f32, (2,), (("n_post", 2),),
                                  Span("net.nspec", 4, 5)))
    inputs = (Var("spikes", DType.f32, (3,)),) + ((Var("shift", DType.i64, ()),) if computed else ())
    return Program("net", g.build(), GraphBuilder().build(), (), (), inputs, (Var("y", DType.f32, (2,)),))


@pytest.mark.parametrize("indptr, indices, expect", [
    ([0, 1, 2, 3], [0, 1, 2], "connectivity target 2 is out of range for 2 postsynaptic neurons"),
    ([0, 2, 1, 3], [0, 1, 1], "connectivity row table is not a non-decreasing table from 0 (entry 1)"),
    ([1, 1, 2, 3], [0, 1, 1], "connectivity row table is not a non-decreasing table from 0 (entry 1)"),
    ([0, 1, 2, 4], [0, 1, 1], "connectivity row table ends at 4, past its 3 targets"),
])
def test_constant_connectivity_out_of_range_is_a_located_compile_error(indptr, indices, expect):
    with pytest.raises(NspecError, match=r"net.nspec:4:5: error: " + expect.replace("(", r"\(").replace(")", r"\)")):
        check_bounds(_propagate_program(indptr, indices))
    assert check_bounds(_propagate_program([0, 1, 2, 3], [0, 1, 1])).states == ()  # valid: nothing added


def test_connectivity_computed_at_run_time_is_refused():
    with pytest.raises(NspecError, match=r"net.nspec:4:5: error: synaptic connectivity must be constant or parameters"):
        check_bounds(_propagate_program([0, 1, 2, 3], [0, 1, 1], computed=True))

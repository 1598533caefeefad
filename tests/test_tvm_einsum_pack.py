"""TVM's CPU einsum packs an operand that its inner (axpy) loop would read with a stride.

The CPU template runs the last output letter innermost.  In Q K^T ("htn,hsn->hts", BDH's parallel
form) that letter s is not K's last axis, so the inner loop jumped N floats per element; the
lowering now copies such an operand once into a scratch buffer with that letter last (when the
contraction reuses each element often enough to pay for the copy).  Checked here: the results
against a float64 NumPy einsum, batched and unbatched operands, the packed code is really
emitted, and it is bit-identical to the unpacked code (same loops, same summation order).
"""

from __future__ import annotations

import numpy as np
import pytest

from nspec.compiler import ir
from nspec.compiler.ir import DType, GraphBuilder, Op, Program, Var
from nspec.lowering.tvm import einsum_tiles, emit
from nspec.lowering.tvm.executor import TvmExecutor
from nspec.lowering.tvm.tir import Options
from nspec.runtime.executor import RunRequest

F32 = DType.f32

# (equation, operand shapes, operand roles): a role "input" is batched, "param" is shared by trials
CASES = [
    ("htn,hsn->hts", ((2, 24, 20), (2, 24, 20)), ("input", "input")),        # Q K^T, both batched
    ("ik,jk->ij", ((40, 12), (33, 12)), ("input", "param")),                 # x W^T with a shared W
    ("tn,sdn->tsd", ((9, 6), (10, 17, 6)), ("param", "input")),              # packed operand of rank 3
    ("hts,sd->htd", ((3, 16, 16), (16, 5)), ("input", "input")),             # already contiguous: no pack
    ("dm,mhd->dh", ((7, 5), (5, 3, 7)), ("input", "param")),                 # strided but not reused: no pack
]
PACKED = {"htn,hsn->hts", "ik,jk->ij", "tn,sdn->tsd"}


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("NSPEC_CACHE_DIR", str(tmp_path / "cache"))


def einsum_program(equation: str, shapes, roles, relu: bool = False) -> Program:
    """One step graph: ``y = einsum(equation, a, b)`` over two arguments of the given roles
    (``a`` through a ReLU when ``relu``)."""
    b = GraphBuilder()
    args = [b.arg(name, role, F32, shape) for name, role, shape in zip("ab", roles, shapes)]
    if relu:
        args[0] = b.add(Op.RELU, (args[0],), F32, shapes[0])
    sizes = {c: d for term, shape in zip(equation.split("->")[0].split(","), shapes) for c, d in zip(term, shape)}
    out_shape = tuple(sizes[c] for c in equation.split("->")[1])
    b.result("y", "output", b.add(Op.EINSUM, tuple(args), F32, out_shape, (("equation", equation),)))
    params = [Var(n, F32, s) for n, r, s in zip("ab", roles, shapes) if r == "param"]
    inputs = [Var(n, F32, s) for n, r, s in zip("ab", roles, shapes) if r == "input"]
    p = Program("einsum", b.build(), ir.Graph((), ()), tuple(params), (), tuple(inputs),
                (Var("y", F32, out_shape),), (), dt=1.0)
    ir.verify_program(p)
    return p


def operands(shapes, roles, batch: int, rng):
    """Per role: params [*shape], inputs [B, 1 step, *shape]."""
    out = {}
    for name, role, shape in zip("ab", roles, shapes):
        lead = (batch, 1) if role == "input" else ()
        out[name] = rng.normal(size=lead + tuple(shape)).astype(np.float32)
    return out


def run_tvm(program: Program, values: dict, roles, **options) -> np.ndarray:
    params = {n: values[n] for n, r in zip("ab", roles) if r == "param"}
    inputs = {n: values[n] for n, r in zip("ab", roles) if r == "input"}
    request = RunRequest(params, {}, inputs, 1, ())
    return TvmExecutor(program, progress=False, **options).run(request).outputs["y"]


@pytest.mark.parametrize("equation, shapes, roles", CASES, ids=[c[0] for c in CASES])
def test_einsum_matches_numpy_in_float64(equation, shapes, roles):
    rng = np.random.default_rng(len(equation))
    values = operands(shapes, roles, 3, rng)
    got = run_tvm(einsum_program(equation, shapes, roles), values, roles)
    for trial in range(3):
        ops = [values[n][trial, 0] if r == "input" else values[n] for n, r in zip("ab", roles)]
        want = np.einsum(equation, *(o.astype(np.float64) for o in ops))
        np.testing.assert_allclose(got[trial, 0], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("equation, shapes, roles", CASES, ids=[c[0] for c in CASES])
def test_packing_is_emitted_where_it_pays(equation, shapes, roles, monkeypatch):
    """The packed function differs from the one built with packing off exactly for the strided,
    reused operands."""
    program = einsum_program(equation, shapes, roles)
    opts = Options(parallel=False)
    packed = str(emit.build_primfunc(program, opts)[0])
    monkeypatch.setattr(einsum_tiles, "PACK_REUSE", float("inf"))
    plain = str(emit.build_primfunc(program, opts)[0])
    assert (packed != plain) == (equation in PACKED)


@pytest.mark.parametrize("strict", [False, True], ids=["fast", "strict"])
def test_packing_does_not_change_a_bit(strict, monkeypatch):
    equation, shapes, roles = CASES[0]
    program = einsum_program(equation, shapes, roles)
    values = operands(shapes, roles, 2, np.random.default_rng(1))
    packed = run_tvm(program, values, roles, strict=strict, cache=False)
    monkeypatch.setattr(einsum_tiles, "PACK_REUSE", float("inf"))
    plain = run_tvm(program, values, roles, strict=strict, cache=False)
    np.testing.assert_array_equal(packed, plain)

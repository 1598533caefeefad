"""TVM's CPU einsum runs as register tiles, and its loops never form short constant-trip nests.

The tiled kernel (``einsum_tiles.tiles``) splits the output into TILE_ROWS x (TILE_VECTORS x
VECTOR_LANES) blocks, with remainder blocks of fewer rows, fewer vectors and single columns, and
runs a long reduction in passes of TILE_DEPTH steps.  Checked here: results against a float64
NumPy einsum over sizes that hit every remainder (1, 15, 16, 17, 33 and a reduction longer than
one pass), batched and unbatched operands; in strict mode (no FMA) the bits of a float32
reference that adds the products one at a time in the reduction letters' order; and the loop
structure the compile-time fix relies on (no vector loop under a perfect nest of more than two
constant-trip serial loops: LLVM fully unrolled such nests, e.g. a ReLU over [4, 16, 512]).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from nspec.compiler import ir
from nspec.compiler.ir import DType, GraphBuilder, Op, Program, Var
from nspec.lowering.tvm import build, einsum_tiles, emit
from nspec.lowering.tvm.executor import TvmExecutor
from nspec.lowering.tvm.tir import Options, tvm_modules
from nspec.runtime.executor import RunRequest
from test_tvm_einsum_pack import einsum_program, operands

F32 = DType.f32
SIZES = (1, 15, 16, 17, 33)


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("NSPEC_CACHE_DIR", str(tmp_path / "cache"))


def run(equation, shapes, roles, batch, rng, **options):
    """(TVM's outputs [B, 1, ...], per-trial operand lists)."""
    values = operands(shapes, roles, batch, rng)
    params = {n: values[n] for n, r in zip("ab", roles) if r == "param"}
    inputs = {n: values[n] for n, r in zip("ab", roles) if r == "input"}
    ex = TvmExecutor(einsum_program(equation, shapes, roles), progress=False, cache=False, **options)
    got = ex.run(RunRequest(params, {}, inputs, 1, ())).outputs["y"]
    ops = [[values[n][t, 0] if r == "input" else values[n] for n, r in zip("ab", roles)] for t in range(batch)]
    return got, ops


# matmul rows x depth @ depth x cols over every remainder of rows and columns; depth 40
MATMULS = [("ik,kj->ij", ((m, 40), (40, n)), roles)
           for (m, n), roles in zip(itertools.product(SIZES, SIZES), itertools.cycle([("input", "param"),
                                                                                      ("param", "input"),
                                                                                      ("input", "input")]))]
OTHERS = [
    ("td,hdn->htn", ((17, 9), (3, 9, 33)), ("input", "param")),      # a batch letter outside the tile
    ("htn,hnd->td", ((2, 15, 150), (2, 150, 17)), ("input", "param")),  # two reduction letters, 300 > TILE_DEPTH
    ("k,kj->j", ((600,), (600, 33)), ("input", "param")),            # a vector-matrix product: no row letter
    ("htn,hsn->hts", ((2, 17, 20), (2, 33, 20)), ("input", "input")),  # Q K^T: packed, then tiled
    ("ij,j->ij", ((16, 17), (17,)), ("input", "param")),             # no reduction at all
    ("dm,mhd->dh", ((33, 15), (15, 17, 33)), ("input", "param")),    # CTM's NLM: computed as [h, d], transposed
]


@pytest.mark.parametrize("equation, shapes, roles", MATMULS + OTHERS,
                         ids=[f"{e}-{'x'.join(map(str, s[0]))}-{'x'.join(map(str, s[1]))}-{r[0][0]}{r[1][0]}"
                              for e, s, r in MATMULS + OTHERS])
def test_tiles_match_numpy_in_float64(equation, shapes, roles):
    got, ops = run(equation, shapes, roles, 2, np.random.default_rng(sum(map(sum, shapes))))
    for trial, operands in enumerate(ops):
        want = np.einsum(equation, *(o.astype(np.float64) for o in operands))
        np.testing.assert_allclose(got[trial, 0], want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("vectors", [1, 2])
@pytest.mark.parametrize("equation, shapes, roles", [MATMULS[19], OTHERS[-1]], ids=["17x40x33", "dm,mhd->dh"])
def test_every_tile_width_matches_numpy(equation, shapes, roles, vectors, monkeypatch):
    """The tile width is the CPU's choice (AVX-512: 2 vectors, else 1): both are checked on any CPU."""
    monkeypatch.setattr(build, "cpu_tile_vectors", lambda: vectors)
    got, ops = run(equation, shapes, roles, 1, np.random.default_rng(vectors))
    want = np.einsum(equation, *(o.astype(np.float64) for o in ops[0]))
    np.testing.assert_allclose(got[0, 0], want, rtol=1e-5, atol=1e-4)


def test_runs_reuse_their_copies_but_never_their_results():
    """The executor keeps its parameter, input and workspace copies between runs: a second run
    with other inputs gives its own answer and leaves the first run's outputs alone."""
    equation, shapes, roles = "htn,hsn->hts", ((2, 17, 20), (2, 33, 20)), ("input", "input")
    ex = TvmExecutor(einsum_program(equation, shapes, roles), progress=False, cache=False)
    rng = np.random.default_rng(3)
    results, wants = [], []
    for _ in range(2):
        values = operands(shapes, roles, 1, rng)
        results.append(ex.run(RunRequest({}, {}, values, 1, ())).outputs["y"])
        wants.append(np.einsum(equation, values["a"][0, 0].astype(np.float64), values["b"][0, 0]))
    for got, want in zip(results, wants):
        np.testing.assert_allclose(got[0, 0], want, rtol=1e-5, atol=1e-4)


def masked_program(T: int, N: int, offset: int) -> Program:
    """``y = einsum("htn,hsn->hts", a, b) * float(t - s > offset)``, the mask built from aranges as
    BDH's causal mask is (left unfolded)."""
    b = GraphBuilder()
    x = [b.arg(name, "input", F32, (2, T, N)) for name in "ab"]
    e = b.add(Op.EINSUM, tuple(x), F32, (2, T, T), (("equation", "htn,hsn->hts"),))
    rows = b.add(Op.CONST, (), DType.i64, (T, 1), (("value", np.arange(T).reshape(T, 1) - offset),))
    cols = b.add(Op.CONST, (), DType.i64, (1, T), (("value", np.arange(T).reshape(1, T)),))
    mask = b.add(Op.CAST, (b.add(Op.GT, (rows, cols), DType.bool, (T, T)),), F32, (T, T), (("dtype", F32),))
    b.result("y", "output", b.add(Op.MUL, (e, mask), F32, (2, T, T)))
    p = Program("masked", b.build(), ir.Graph((), ()), (), (), tuple(Var(n, F32, (2, T, N)) for n in "ab"),
                (Var("y", F32, (2, T, T)),), (), dt=1.0)
    ir.verify_program(p)
    return p


@pytest.mark.parametrize("offset", [0, 3, -5])
def test_masked_blocks_are_left_out_but_the_result_is_unchanged(offset):
    """BDH's Q K^T * causal mask: the tiles wholly under the mask are only zeroed (fast mode)."""
    T, N = 45, 20
    program = masked_program(T, N, offset)
    graph = program.step
    einsum_node = next(i for i, n in enumerate(graph.nodes) if n.op is Op.EINSUM)
    assert einsum_tiles.masked_diagonal(graph, einsum_node, "hts") == -offset  # zero where s >= t - offset
    values = operands(((2, T, N), (2, T, N)), ("input", "input"), 1, np.random.default_rng(5))
    ex = TvmExecutor(program, progress=False, cache=False)
    got = ex.run(RunRequest({}, {}, values, 1, ())).outputs["y"][0, 0]
    t, s = np.arange(T)[:, None], np.arange(T)[None, :]
    want = np.einsum("htn,hsn->hts", values["a"][0, 0].astype(np.float64), values["b"][0, 0]) * (t - s > offset)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def sequential_f32(equation: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The reference order in float32: start at 0, add each product, reduction letters nested in
    their order of first appearance, each product and sum rounded (no FMA)."""
    lhs, rhs = equation.split("->")
    ta, tb = lhs.split(",")
    sizes = dict(zip(ta, a.shape)) | dict(zip(tb, b.shape))
    red = [c for c in dict.fromkeys(ta + tb) if c not in rhs]
    out = np.zeros(tuple(sizes[c] for c in rhs), np.float32)
    for ks in itertools.product(*(range(sizes[c]) for c in red)):
        fix = dict(zip(red, ks))
        av = a[tuple(fix[c] if c in fix else slice(None) for c in ta)]
        bv = b[tuple(fix[c] if c in fix else slice(None) for c in tb)]
        ra, rb = "".join(c for c in ta if c not in fix), "".join(c for c in tb if c not in fix)
        prod = np.einsum(f"{ra},{rb}->{rhs}", av, bv).astype(np.float32)  # one product per element: exact in f32
        out = (out + prod).astype(np.float32)
    return out


@pytest.mark.parametrize("equation, shapes", [
    ("ik,kj->ij", ((17, 300), (300, 33))),       # two passes over the output, remainder tiles
    ("htn,hnd->td", ((2, 7, 140), (2, 140, 17))),  # two reduction letters flattened across passes
    ("dm,mhd->dh", ((33, 15), (15, 17, 33))),     # computed as [h, d], then transposed
])
def test_strict_mode_adds_in_the_reference_order(equation, shapes):
    got, ops = run(equation, shapes, ("input", "param"), 1, np.random.default_rng(7), strict=True)
    np.testing.assert_array_equal(got[0, 0], sequential_f32(equation, *ops[0]))


def _nest_depths(stmt, tirx):
    """For every vectorised loop, the number of constant-extent serial loops that perfectly nest it
    (each the only statement of its parent's body, buffer declarations aside)."""
    depths = []

    def walk(node, chain):
        if isinstance(node, tirx.For):
            if node.kind == tirx.ForKind.VECTORIZED:
                depths.append(chain)
            serial = node.kind == tirx.ForKind.SERIAL and isinstance(node.extent, tirx.IntImm)
            walk(node.body, chain + 1 if serial else 0)
            return
        if isinstance(node, tirx.SeqStmt):
            for s in node.seq:
                walk(s, 0)
            return
        for attr in ("body", "then_case", "else_case"):
            child = getattr(node, attr, None)
            if isinstance(child, tirx.Stmt):
                walk(child, chain if attr == "body" and not isinstance(node, tirx.IfThenElse) else 0)

    walk(stmt, 0)
    return depths


@pytest.mark.parametrize("shape", [(4, 16, 512), (4, 15, 512), (2, 3, 16, 64)])
def test_vector_loops_sit_under_at_most_two_constant_loops(shape):
    """A ReLU feeding Q K^T: the elementwise loop runs over (flattened rows) x (vectors), the
    einsum over tiles; before, [4, 16, 512] was a nest of three constant loops that LLVM fully
    unrolled into 512 vector operations (seconds of compile time)."""
    letters = "abcd"[:len(shape) - 1]
    equation = f"{letters}n,{letters[:-1]}sn->{letters}s".replace("s", "z")
    program = einsum_program(equation, (shape, shape), ("input", "input"), relu=True)
    func, _ = emit.build_primfunc(program, Options(parallel=False))
    depths = _nest_depths(func.body, tvm_modules().tirx)
    assert depths and max(depths) <= 2, depths

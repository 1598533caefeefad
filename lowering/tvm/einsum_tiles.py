"""The EINSUM kernel of the TVM backend, with its CPU templates: register tiles, and operand
packing for the axpy template.

On CUDA (or for a scalar result) every output element is one thread's serial reduction.  On CPU
the output letter to vectorise is the last one, or another whose operand is far larger and
contiguous along it (``vector_letter``: the result is then computed in that order and transposed);
an operand that the inner loop would read with a stride is first packed (``pack_for_axpy``);
then, for float einsums whose operands are all contiguous along the last output letter, the
output is computed in register tiles (``tiles``); otherwise the axpy template runs, with that
letter innermost and the reductions outside it.  In fast mode, tiles that every use of the result
multiplies by a constant zero (BDH's causal ``Q K^T * (t > s)``: ``masked_diagonal``) are only
zeroed.  In every template each output element starts at 0 and adds the products in the
reduction letters' loop order, as the reference does, so strict mode (no FMA) gives the
reference's bits.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import numpy as np

from nspec.compiler.interpret import RULES as FOLD_RULES
from nspec.compiler.interpret import Context
from nspec.compiler.ir import Graph, Node, Op
from nspec.lowering.tvm.tir import LOGICAL, VECTOR_LANES, Ref, cast, imm, is_float, tvm_modules, unflatten

if TYPE_CHECKING:  # annotations only: the emitter and scheduler import the rule table, which imports this
    from nspec.lowering.tvm.emitter import Emitter
    from nspec.lowering.tvm.schedule import Plan


def einsum(em: Emitter, graph: Graph, i: int, vals, plan: Plan):
    """The EINSUM kernel: picks the template (see the module docstring)."""
    T = tvm_modules().T
    n = graph.nodes[i]
    lhs, rhs = n.attrs.equation.replace(" ", "").split("->")
    terms = lhs.split(",")
    sizes: dict[str, int] = {}
    for term, j in zip(terms, n.inputs):
        for c, d in zip(term, graph.nodes[j].shape):
            sizes[c] = d
    red = [c for c in dict.fromkeys("".join(terms)) if c not in rhs]
    dt = LOGICAL[n.dtype]
    out = vals[i]
    xs = [vals[j] for j in n.inputs]

    def product(env):
        p = None
        for term, x in zip(terms, xs):
            v = cast(x.load(tuple(env[c] for c in term)), dt)
            p = v if p is None else p * v
        return p

    if em.opts.device == "cuda" or not rhs:
        stack, idx = em.foreach(n.shape)
        with stack:
            env = dict(zip(rhs, idx))
            out.store(idx, imm(0, dt))
            with contextlib.ExitStack() as s:
                env.update({c: s.enter_context(T.serial(0, sizes[c])) for c in red})
                out.store(idx, out.load(idx) + product(env))
        return
    nodes = [graph.nodes[j] for j in n.inputs]
    vec = vector_letter(terms, rhs, nodes, n.shape)
    if vec == rhs[-1]:
        zero_from = None if em.opts.strict else masked_diagonal(graph, i, rhs)
        contract(em, terms, xs, nodes, rhs, red, sizes, dt, out, product, zero_from)
        return
    # computed with ``vec`` as the last output letter, then copied into the output's own order
    order = rhs.replace(vec, "") + vec
    tmp = Ref(em.scratch(tuple(sizes[c] for c in order), n.dtype), (), dt)
    contract(em, terms, xs, nodes, order, red, sizes, dt, tmp, product)
    transpose(tmp, order, out, rhs, sizes)


def vector_letter(terms: list[str], rhs: str, nodes: list[Node], out_shape) -> str:
    """The output letter the CPU templates put innermost (and vectorise): the last one, unless
    the largest operand would be read along it with a stride while that operand's own last
    letter is another output letter, and the output is small enough to transpose afterwards.
    E.g. CTM's per-neuron MLP "dm,mhd->dh" with weights W[m, h, d]: along h they are D floats
    apart (scalar loads); along d they are contiguous, so the output is computed as [h, d]."""
    k = max(range(len(terms)), key=lambda k: int(np.prod(nodes[k].shape)))
    term, last = terms[k], terms[k][-1]
    if (rhs[-1] in term and last != rhs[-1] and last in rhs and term.count(last) == 1
            and len(set(rhs)) == len(rhs) and TRANSPOSE_RATIO * int(np.prod(out_shape)) <= int(np.prod(nodes[k].shape))):
        return last
    return rhs[-1]


MASK_OPS = frozenset({Op.CONST, Op.CAST, Op.RESHAPE, Op.BROADCAST, Op.GT, Op.GE, Op.LT, Op.LE, Op.EQ, Op.NE,
                      Op.ADD, Op.SUB, Op.MUL, Op.WHERE, Op.NOT, Op.AND, Op.OR})


def constant_value(graph: Graph, j: int, memo: dict) -> np.ndarray | None:
    """The value of node ``j`` when it is computed from constants alone by MASK_OPS (a mask the
    fold-constants pass left unfolded for its size, e.g. ``float(t > s)``), else None."""
    if j not in memo:
        n = graph.nodes[j]
        memo[j] = None
        if n.op is Op.CONST:
            memo[j] = np.asarray(n.attr("value"))
        elif n.op in MASK_OPS:
            args = [constant_value(graph, k, memo) for k in n.inputs]
            if all(a is not None for a in args):
                with np.errstate(all="ignore"):
                    memo[j] = np.asarray(FOLD_RULES[n.op](n, args, [False] * len(args), Context({})))
    return memo[j]


def masked_diagonal(graph: Graph, i: int, rhs: str) -> int | None:
    """When every use of einsum ``i`` multiplies it by a constant mask that is 0 wherever the
    last output letter's index c and the one before's, r, have c >= r + k: the smallest such k
    (e.g. 0 for BDH's causal ``Q K^T * (t > s)``), else None.  The tiles then skip those blocks."""
    if len(rhs) < 2 or any(r.node == i for r in graph.results):
        return None
    k, memo = None, {}
    for c, n in enumerate(graph.nodes):
        if i not in n.inputs:
            continue
        if n.op is not Op.MUL or n.inputs.count(i) != 1 or n.shape != graph.nodes[i].shape:
            return None
        mask = constant_value(graph, n.inputs[1 - n.inputs.index(i)], memo)
        if mask is None:
            return None
        rows, cols = np.nonzero(np.broadcast_to(mask, n.shape).reshape((-1,) + n.shape[-2:]).any(axis=0))
        here = int((cols - rows).max()) + 1 if rows.size else -n.shape[-2]
        k = here if k is None else max(k, here)
    return k if k is not None and k < graph.nodes[i].shape[-1] else None


TRANSPOSE_RATIO = 4  # reorder the output only when the operand read better is this many times larger


def contract(em: Emitter, terms: list[str], xs: list, nodes: list[Node], rhs: str, red: list[str], sizes: dict,
             dt: str, out, product, zero_from: int | None = None):
    """The CPU einsum into ``out`` (letters ``rhs``): packs operands read with a stride along
    ``rhs[-1]`` where that pays, then register tiles (``zero_from``: see ``tiles``), or else the
    axpy template.  ``product`` reads ``terms`` and ``xs``, which packing updates in place."""
    T = tvm_modules().T
    shape = tuple(sizes[c] for c in rhs)
    work = int(np.prod([sizes[c] for c in sizes]))
    for k, term in enumerate(terms):
        packed = pack_for_axpy(em, term, rhs[-1], nodes[k], xs[k], work)
        if packed is not None:
            terms[k], xs[k] = packed
    if is_float(dt) and all(t.count(rhs[-1]) == 0 or (t[-1] == rhs[-1] and t.count(rhs[-1]) == 1)
                             for t in terms):
        tiles(em, rhs, red, sizes, dt, out, product, zero_from)
        return
    # CPU template where an operand is read along the last output axis with a stride: that axis
    # innermost and reductions outside it, an axpy over the output that LLVM vectorises
    stack, idx = em.foreach(shape)
    with stack:
        out.store(idx, imm(0, dt))
    with contextlib.ExitStack() as s:
        env = {c: s.enter_context(T.serial(0, sizes[c])) for c in rhs[:-1]}
        env.update({c: s.enter_context(T.serial(0, sizes[c])) for c in red})
        env[rhs[-1]] = s.enter_context(T.serial(0, sizes[rhs[-1]]))
        oidx = tuple(env[c] for c in rhs)
        out.store(oidx, out.load(oidx) + product(env))


TILE_ROWS = 6     # output rows of one register tile
TILE_DEPTH = 256  # reduction steps per pass over the output, so a tile's operand panels stay in cache
# TVM's LowerTVMBuiltin keeps an allocation on the stack only in "global" scope and under this
# many bytes (runtime::kMaxStackAlloca); anything else becomes a TVMBackendAllocWorkspace call,
# whose pointer LLVM cannot prove distinct from the operands, so it stores the whole tile back to
# memory at every reduction step (measured: 35-42 GFLOP/s instead of 90-100 on a Zen 4 core).
STACK_BYTES = 1024


def tile_vectors(opts_vectors: int, dt: str) -> int:
    """Column vectors per register tile: the CPU's choice (``Options.tile_vectors``), fewer if the
    accumulator would not fit on the stack (e.g. float64)."""
    itemsize = np.dtype(dt).itemsize
    vectors = max(1, opts_vectors)
    while vectors > 1 and TILE_ROWS * vectors * VECTOR_LANES * itemsize >= STACK_BYTES:
        vectors -= 1
    return vectors


def tiles(em: Emitter, rhs: str, red: list[str], sizes: dict, dt: str, out, product, zero_from: int | None = None):
    """The CPU einsum as register tiles: TILE_ROWS output rows (letter ``rhs[-2]``) by
    ``tile_vectors`` x VECTOR_LANES columns (``rhs[-1]``, contiguous in every operand that has it)
    accumulate in a local buffer LLVM keeps in registers while the reduction runs, then are
    stored.  Column blocks run outside row blocks, so an operand's panel of columns stays in
    cache across the rows; a long reduction (its letters flattened, in their loop order) runs
    in passes of TILE_DEPTH steps over the whole output, each pass resuming from the stored
    partial sums.  Remainders: a narrower block of whole vectors, then one column at a time;
    fewer rows.  Each output element still starts at 0 and adds the products in the reduction
    letters' loop order, as the reference does, so strict mode (no FMA) gives the same bits.
    ``zero_from`` (see ``masked_diagonal``): a block whose every column c and row r have
    c >= r + zero_from is only zeroed, its products left out: every consumer multiplies it by 0."""
    _, tirx, _, T = tvm_modules()
    lanes = VECTOR_LANES
    col = rhs[-1]
    row = rhs[-2] if len(rhs) > 1 else None
    n_rows = sizes[row] if row else 1
    n_cols = sizes[col]
    red_shape = tuple(sizes[c] for c in red)
    depth = int(np.prod(red_shape))
    vectors_per_tile = tile_vectors(em.opts.tile_vectors, dt)
    # "global" scope and under STACK_BYTES: a stack array, which LLVM keeps in registers
    acc = T.decl_buffer((TILE_ROWS, vectors_per_tile * lanes), dt, scope="global")

    def tile(outer: dict, r0, rows: int, c0, vectors: int, width: int, k0, steps: int, first):
        """One block: ``rows`` rows from ``r0`` by ``vectors`` runs of ``width`` columns from
        ``c0``, reduction steps ``k0`` .. ``k0 + steps``; ``first``: whether k0 is 0."""
        def cells(fn):
            for r in range(rows):
                for v in range(vectors):
                    if width == 1:
                        fn(r, c0 + v, (r, v))
                    else:
                        with T.vectorized(0, width) as lane:
                            fn(r, c0 + v * width + lane, (r, v * width + lane))

        def at(r, c):
            env = dict(outer)
            env[col] = c
            if row:
                env[row] = r0 + r
            return env

        def oidx(r, c):
            return tuple(at(r, c)[ch] for ch in rhs)

        def compute():
            cells(lambda r, c, a: T.buffer_store(
                acc, imm(0, dt) if first is True else out.load(oidx(r, c)) if first is False
                else tirx.Select(first, imm(0, dt), out.load(oidx(r, c))), list(a)))
            with T.serial(k0, k0 + steps) as k:
                reduce = dict(zip(red, unflatten(k, red_shape)))
                cells(lambda r, c, a: T.buffer_store(
                    acc, tirx.BufferLoad(acc, list(a)) + product({**at(r, c), **reduce}), list(a)))
            cells(lambda r, c, a: out.store(oidx(r, c), tirx.BufferLoad(acc, list(a))))

        if zero_from is None or not row:
            compute()
            return
        dead = c0 >= r0 + (rows - 1 + zero_from)  # the block's lowest-left cell is masked: all are
        if isinstance(dead, bool):
            cells(lambda r, c, a: out.store(oidx(r, c), imm(0, dt))) if dead else compute()
            return
        with T.If(dead):
            with T.Then():
                cells(lambda r, c, a: out.store(oidx(r, c), imm(0, dt)))
            with T.Else():
                compute()

    def blocks(k0, steps: int, first):
        stack, idx = em.foreach(tuple(sizes[c] for c in rhs[:-2]))
        with stack:
            outer = dict(zip(rhs[:-2], idx))

            def row_blocks(c0, vectors: int, width: int):
                if n_rows >= TILE_ROWS:
                    with T.serial(0, n_rows // TILE_ROWS) as rb:
                        tile(outer, rb * TILE_ROWS, TILE_ROWS, c0, vectors, width, k0, steps, first)
                if n_rows % TILE_ROWS:
                    tile(outer, n_rows - n_rows % TILE_ROWS, n_rows % TILE_ROWS, c0, vectors, width, k0, steps, first)

            block = vectors_per_tile * lanes
            if n_cols >= block:
                with T.serial(0, n_cols // block) as cb:
                    row_blocks(cb * block, vectors_per_tile, lanes)
            if n_cols % block >= lanes:
                row_blocks(n_cols - n_cols % block, n_cols % block // lanes, lanes)
            if n_cols % lanes:
                with T.serial(n_cols - n_cols % lanes, n_cols) as c:
                    row_blocks(c, 1, 1)

    if depth <= TILE_DEPTH:
        blocks(0, depth, True)
        return
    with T.serial(0, depth // TILE_DEPTH) as kp:
        blocks(kp * TILE_DEPTH, TILE_DEPTH, kp == 0)
    if depth % TILE_DEPTH:
        blocks(depth - depth % TILE_DEPTH, depth % TILE_DEPTH, False)


PACK_REUSE = 8  # pack an operand when the contraction reads each of its elements at least this often


def pack_for_axpy(em: Emitter, term: str, inner: str, node: Node, x, work: int):
    """An einsum operand that the CPU template's inner loop (over output letter ``inner``) would
    read with a stride, copied once into a scratch buffer with ``inner`` as its last axis:
    (new term, Ref), or None when it is already contiguous there or too little reused to pay
    for the copy.  E.g. Q K^T ("htn,hsn->hts"): K[h, s, n] is read along s, N floats apart; the
    copy is one pass over K, the contraction then T passes over contiguous rows.  The loops
    and the summation order are unchanged, so the results are bit-identical."""
    if inner not in term or term[-1] == inner or len(set(term)) != len(term):
        return None
    size = int(np.prod(node.shape))
    if work < PACK_REUSE * size:
        return None
    packed_term = term.replace(inner, "") + inner
    shape = tuple(node.shape[term.index(c)] for c in packed_term)
    ref = Ref(em.scratch(shape, node.dtype), (), LOGICAL[node.dtype])
    transpose(x, term, ref, packed_term, dict(zip(term, node.shape)))
    return packed_term, ref


def transpose(src, term: str, dst, packed_term: str, sizes: dict):
    """Copy ``src`` (letters ``term``) into ``dst`` (``packed_term``: the same letters, another
    last one) in blocks of VECTOR_LANES along ``term``'s last letter: each block reads whole
    cache lines of ``src`` and fills VECTOR_LANES lines of ``dst`` side by side.  Copying in
    either array's own order instead reads (or writes) one element per line at a large stride,
    which the cache's associativity turns into misses: that copy took a third of BDH's Q K^T."""
    _, _, _, T = tvm_modules()
    last, inner = term[-1], packed_term[-1]
    others = [c for c in packed_term[:-1] if c != last]
    outer = tuple(sizes[c] for c in others)
    lanes = VECTOR_LANES

    def copy(blocks: int, first: int, width: int):
        with T.serial(0, int(np.prod(outer + (blocks,)))) as flat:
            idx = unflatten(flat, outer + (blocks,))
            with T.serial(0, sizes[inner]) as i, T.serial(0, width) as lane:
                at = dict(zip(others, idx[:-1]))
                at[inner], at[last] = i, first + idx[-1] * lanes + lane
                dst.store(tuple(at[c] for c in packed_term), src.load(tuple(at[c] for c in term)))

    if sizes[last] >= lanes:
        copy(sizes[last] // lanes, 0, lanes)
    if sizes[last] % lanes:
        copy(1, sizes[last] - sizes[last] % lanes, sizes[last] % lanes)



__all__ = ["einsum", "vector_letter", "contract", "tiles", "tile_vectors", "pack_for_axpy", "transpose",
           "TILE_ROWS", "TILE_DEPTH", "STACK_BYTES", "PACK_REUSE", "TRANSPOSE_RATIO",
           "MASK_OPS", "constant_value", "masked_diagonal"]

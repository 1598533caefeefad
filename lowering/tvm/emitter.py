"""The TVM backend's emitter: one evaluation of a graph as TIR, following its ``schedule.Plan``.

``Emitter.emit_graph`` allocates the plan's buffers in per-dtype workspaces, binds leaves and
inline scalar expressions, and emits the plan's order: each kernel through its ``Kernel`` rule,
each group of fusible nodes as one loop nest (``emit_group``) whose body computes every node of
the group at one index through its ``Elementwise`` or ``Select`` rule.  A LOOP node emits its
body graph inside a serial loop (``emit_loop``).
"""

from __future__ import annotations

import contextlib

import numpy as np

from nspec.compiler.ir import DType, Graph, Node, Op, Program, batched
from nspec.compiler.ops import LoopAttrs
from nspec.lowering.tvm.rules import FUSIBLE, RULES, Elementwise, Kernel, Leaf, aligned_read, input_index
from nspec.lowering.tvm.schedule import Plan, in_place_ok, is_inline_leaf, plan_graph
from nspec.lowering.tvm.tir import (ALIGN_BYTES, LOGICAL, STORAGE, VECTOR_LANES, Bound, Imm, Lazy, LoweringError,
                                    Options, Ref, cast, imm, tvm_modules, unflatten)


class Emitter:
    """Emits the PrimFunc for one program.  ``layout`` (from a first emission) sizes workspaces."""

    def __init__(self, program: Program, opts: Options, layout: dict | None = None):
        self.program, self.opts = program, opts
        self.layout = layout
        self.used: dict[str, int] = {}
        self.consts: list[np.ndarray] = []
        self.const_bufs: dict[int, object] = {}
        self.ws: dict[str, object] = {}  # storage dtype -> workspace buffer argument
        self.events: frozenset[str] = frozenset()  # records written as event lists
        self.b = None  # the trial index (CPU loop variable or CUDA block), set by the function's emission
        self.tx = None  # the CUDA thread index (None on CPU)
        self.masks: dict = {}  # the current graph's spike vectors read as byte masks: node -> (Ref, fusible)

    # -- storage
    def scratch(self, shape, dtype: DType | str, pad: int = 0):
        """A per-trial buffer of ``shape`` in the workspace of its storage dtype."""
        _, tirx, _, T = tvm_modules()
        st = STORAGE[dtype] if isinstance(dtype, DType) else dtype
        size = max(int(np.prod(shape)), 1) + pad
        per = ALIGN_BYTES // np.dtype(st).itemsize
        off = -(-self.used.get(st, 0) // per) * per
        self.used[st] = off + size
        stride = self.layout.get(st, 0) if self.layout else 0
        ws = self.ws[st]
        shape = tuple(shape) if shape else (1,)
        return T.decl_buffer(shape, st, data=ws.data, elem_offset=self.b * stride + off) if self.layout else \
            tirx.decl_buffer(shape, st, "scratch", data=ws.data, elem_offset=self.b * stride + off)

    def scratch_ref(self, node: Node):
        return Ref(self.scratch(node.shape, node.dtype, pad=16 if node.dtype is DType.bool else 0), (),
                   LOGICAL[node.dtype])

    # -- loops
    def foreach(self, shape):
        """Loops over ``shape`` (CPU: one flat loop over the leading axes, one over the last; CUDA:
        block-strided over the flattened shape)."""
        _, tirx, _, T = tvm_modules()
        stack = contextlib.ExitStack()
        if not shape:
            if self.opts.device == "cuda":
                stack.enter_context(T.If(self.tx == 0))
                stack.enter_context(T.Then())
            return stack, ()
        if self.opts.device == "cuda":
            size = int(np.prod(shape))
            n = self.opts.threads
            it = stack.enter_context(T.serial(0, -(-size // n)))
            flat = it * n + self.tx
            stack.enter_context(T.If(flat < size))
            stack.enter_context(T.Then())
            return stack, unflatten(flat, shape)
        # the leading axes as one flat loop, the last as its own (see vloop: no short nests)
        row = stack.enter_context(T.serial(0, int(np.prod(shape[:-1]))))
        return stack, unflatten(row, shape[:-1]) + (stack.enter_context(T.serial(0, shape[-1])),)

    def vectorized(self, shape) -> bool:
        return self.opts.device != "cuda" and bool(shape) and shape[-1] >= VECTOR_LANES

    def vloop(self, shape, fn):
        """Calls ``fn(idx, lane)`` inside loops over ``shape``.  On CPU the last axis is split
        into vector lanes (``lane`` is the lane variable) plus a scalar tail (``lane`` None):
        LLVM alone gives up on loops that touch many buffers."""
        T = tvm_modules().T
        lanes = VECTOR_LANES
        if not self.vectorized(shape):
            stack, idx = self.foreach(shape)
            with stack:
                fn(idx, None)
            return
        # The leading axes run as one flat loop (same iteration order as the nest): LLVM fully
        # unrolls a nest of short constant-trip loops around the vector loop when their product
        # is just small enough (a ReLU over [4, 16, 512] became 512 straight-line vector ops and
        # took 3.6 s to compile, against 0.2 s at [4, 15, 512] or as one loop of 64 rows).
        d, rows = shape[-1], int(np.prod(shape[:-1]))
        with T.serial(0, rows) as row:
            outer = unflatten(row, shape[:-1])
            with T.serial(0, d // lanes) as io:
                with T.vectorized(0, lanes) as ii:
                    fn(outer + (io * lanes + ii,), ii)
            if d % lanes:
                with T.serial(d - d % lanes, d) as it:
                    fn(outer + (it,), None)

    def single(self):
        """A block run by one thread (CUDA) or simply run (CPU)."""
        T = tvm_modules().T
        stack = contextlib.ExitStack()
        if self.opts.device == "cuda":
            stack.enter_context(T.If(self.tx == 0))
            stack.enter_context(T.Then())
        return stack

    def sync(self):
        _, tirx, _, T = tvm_modules()
        if self.opts.device == "cuda":
            T.evaluate(tirx.op.tvm_storage_sync("shared"))

    def copy(self, dst, src, shape):
        self.vloop(shape, lambda idx, lane: dst.store(idx, src.load(idx)))

    # -- graphs
    def emit_graph(self, graph: Graph, env: dict, roots: list[int], flags: list[bool], inplace: dict) -> dict:
        """Emit one evaluation of ``graph``: ``env`` maps ARG names to values, ``inplace`` maps
        result nodes to the Ref they may be stored into directly.  Returns node -> value."""
        plan = plan_graph(graph, roots, flags)
        vals: dict[int, object] = {}
        for i in sorted(plan.live):
            n = graph.nodes[i]
            rule = RULES.get(n.op)
            if isinstance(rule, Leaf):
                vals[i] = rule.value(self, env, i, n)
        for i in sorted(plan.live):  # inline scalar expressions
            n = graph.nodes[i]
            if i not in vals and is_inline_leaf(graph, flags, i):
                vals[i] = self.lazy(graph, n, vals)
        for i in sorted(plan.stored):
            vals[i] = inplace.get(i) or self.scratch_ref(graph.nodes[i])
        masks = {}
        for m in plan.masks:
            mn, ref = graph.nodes[m], vals.get(m)
            if mn.op not in FUSIBLE:
                masks[m] = (None, False)  # an argument or a kernel's value: read it directly
            elif mn.dtype is DType.bool and isinstance(ref, Ref) and ref.prefix == () and m not in inplace:
                masks[m] = (ref, True)
            else:
                masks[m] = (Ref(self.scratch(mn.shape, "int8", pad=16), (), "bool"), True)
        self.masks = masks
        for item in plan.order:
            if item[0] == "kernel":
                i = item[1]
                n = graph.nodes[i]
                rule = RULES.get(n.op)
                if not isinstance(rule, Kernel):
                    raise LoweringError(f"{n.span}: %{i}: no TIR rule for {n.op.value}")
                if i not in vals:
                    vals[i] = self.scratch_ref(n) if n.op not in (Op.LOOP, Op.ITEM) else None
                rule.emit(self, graph, i, vals, plan)
                self.sync()
            else:
                self.emit_group(graph, item[1], item[2], vals, plan, masks, inplace)
                self.sync()
        return vals

    def emit_group(self, graph, shape, nodes, vals, plan, masks, inplace):
        """One loop nest computing the fusible ``nodes`` of one shape and level (and storing the
        accumulator of each seeded PROPAGATE among them into that PROPAGATE's buffer)."""
        T = tvm_modules().T
        # Scalar loops let-bind every value.  Vector loops cannot (TVM 0.27 crashes on let-bound
        # vectors), so there a value is inlined into its consumers, read back from the buffer it
        # is stored to, or captured in a per-trial lane buffer when it is used twice.  In both,
        # states updated in place are written last, so no expression of the loop body reads a
        # state after its update.
        def reads(i):  # (input, read at the node's own index?) for each input of group member i
            n = graph.nodes[i]
            if i in plan.seeded:
                return ((plan.seeded[i], True),)
            return tuple((j, aligned_read(graph, n, k)) for k, j in enumerate(n.inputs))

        uses = {i: 0 for i in nodes}
        for i in nodes:
            for j, aligned in reads(i):
                if j in uses and aligned:
                    uses[j] += 1
        lane_bufs = {}
        if self.vectorized(shape):
            # workspace slices, not allocations: an allocation here would run every step
            lane_bufs = {i: self.scratch((VECTOR_LANES,), graph.nodes[i].dtype) for i in nodes
                         if i in inplace or (i not in plan.stored and uses[i] > 1
                                             and graph.nodes[i].dtype is not DType.bool)}

        def body(idx, lane):
            local: dict[int, object] = {}
            deferred = []
            for i in nodes:
                n = graph.nodes[i]
                xs = []
                for j, aligned in reads(i):
                    src = local.get(j) if aligned else None
                    xs.append(src if src is not None else vals.get(j))
                if i in plan.seeded:  # starts at its accumulator; the PROPAGATE kernel adds the events
                    value = cast(xs[0].load(idx), LOGICAL[n.dtype])
                else:
                    value = self.expr(graph, n, xs, idx)
                if lane is None:
                    var = cast(T.bind(cast(value, "int8")), "bool") if n.dtype is DType.bool else T.bind(value)
                    if i in inplace:  # as in vector loops: a state is written after every read of it
                        deferred.append((vals[i], var))
                    elif i in plan.stored:
                        vals[i].store(idx, var)
                elif i in lane_bufs:
                    ref = Ref(lane_bufs[i], (), LOGICAL[n.dtype])
                    ref.store((lane,), value)
                    var = ref.load((lane,))
                    if i in plan.stored:
                        deferred.append((vals[i], var))
                elif i in plan.stored:
                    vals[i].store(idx, value)
                    var = vals[i].load(idx)
                else:
                    var = value
                local[i] = Bound(var, LOGICAL[n.dtype])
                mask = masks.get(i, (None,))[0]
                if mask is not None and mask is not vals.get(i):
                    mask.store(idx, cast(var, "bool"))
            for ref, var in deferred:
                ref.store(idx, var)

        self.vloop(shape, body)

    def emit_loop(self, graph: Graph, i: int, vals, plan: Plan):
        """A LOOP node: carried values in buffers, the body emitted inside a serial loop (the
        LOOP's ``Kernel`` rule; ``vals[i]`` becomes the tuple its ITEMs read)."""
        _, tirx, _, T = tvm_modules()
        n = graph.nodes[i]
        loop = LoopAttrs.of(n)
        body: Graph = loop.body
        count = int(loop.count)
        carried, invariant, stacked, until = loop.carried, loop.invariant, loop.stacked, loop.until
        args = body.args()
        carry_refs = []
        for name, j in zip(carried, n.inputs):
            src = graph.nodes[j]
            ref = Ref(self.scratch(src.shape, src.dtype, pad=16 if src.dtype is DType.bool else 0), (), LOGICAL[src.dtype])
            self.copy(ref, vals[j], src.shape)
            carry_refs.append(ref)
        self.sync()
        env = dict(zip(carried, carry_refs))
        env.update({name: vals[j] for name, j in zip(invariant, n.inputs[len(carried):])})
        next_nodes = [loop.result_node(c, "next") for c in carried]
        out_nodes = [loop.result_node(s, "output") for s in stacked]
        until_node = loop.result_node(until, "value") if until else None
        stack_refs = []
        for k in out_nodes:
            bn = body.nodes[k]
            stack_refs.append(Ref(self.scratch((count,) + bn.shape, bn.dtype), (), LOGICAL[bn.dtype]))
        roots = next_nodes + out_nodes + ([until_node] if until_node is not None else [])
        outer = plan.flags
        unbatched = {name for name, j in zip(invariant, n.inputs[len(carried):]) if not outer[j]}
        if not any(outer[j] for j in n.inputs):
            unbatched |= set(carried)
        flags = batched(body, frozenset(unbatched))
        done = Ref(self.scratch((), "int32"), (), "int32") if until else None
        if done is not None:
            with self.single():
                done.store((), imm(0, "int32"))
            self.sync()
        with T.serial(0, count) as it:
            def run_body():
                bplan = plan_graph(body, roots, flags)
                end_readers = set(out_nodes) | ({until_node} if until_node is not None else set())
                inplace = {}
                for name, k, ref in zip(carried, next_nodes, carry_refs):
                    a = args.get(name)
                    if a is not None and in_place_ok(body, bplan, a, k, end_readers) and k not in inplace:
                        inplace[k] = ref
                bvals = self.emit_graph(body, env, roots, flags, inplace)
                for k, ref in zip(out_nodes, stack_refs):
                    self.copy(Ref(ref.buf, (it,), ref.logical), bvals[k], body.nodes[k].shape)
                if until_node is not None:
                    with self.single():
                        with T.If(bvals[until_node].load(())):
                            with T.Then():
                                done.store((), imm(1, "int32"))
                for name, k, ref in zip(carried, next_nodes, carry_refs):
                    if inplace.get(k) is not ref:
                        self.copy(ref, bvals[k], body.nodes[k].shape)
                self.sync()

            if done is None:
                run_body()
            else:
                with T.If(tirx.EQ(done.buf[0], imm(0, "int32"))):
                    with T.Then():
                        run_body()
                    with T.Else():
                        for k, ref in zip(out_nodes, stack_refs):
                            self.copy(Ref(ref.buf, (it,), ref.logical), Ref(ref.buf, (it - 1,), ref.logical),
                                    body.nodes[k].shape)
                self.sync()
        vals[i] = tuple(carry_refs) + tuple(stack_refs)

    def expr(self, graph, n: Node, xs: list, idx):
        """The value of fusible node ``n`` at ``idx``, reading its inputs' values ``xs``."""
        rule = RULES[n.op]
        if not isinstance(rule, Elementwise):
            return rule.expr(graph, n, xs, idx)
        args = [x.load(input_index(n, k, idx, graph.nodes[j].shape)) for k, (x, j) in enumerate(zip(xs, n.inputs))]
        return rule.expr(n, args)

    def lazy(self, graph, n: Node, vals):
        xs = [vals[j] for j in n.inputs]
        return Lazy(lambda idx: self.expr(graph, n, xs, idx), LOGICAL[n.dtype])

    def const(self, i: int, n: Node):
        """A CONST's value: an immediate for one element, else its registered argument buffer."""
        value = np.asarray(n.attrs.value)
        if value.size == 1:
            return Imm(value.reshape(()).item(), LOGICAL[n.dtype])
        key = id(n)
        if key not in self.const_bufs:
            raise LoweringError(f"{n.span}: %{i}: constant array was not registered")
        return Ref(self.const_bufs[key], (), LOGICAL[n.dtype])




__all__ = ["Emitter"]

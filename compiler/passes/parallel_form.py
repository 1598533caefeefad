"""The parallel form of an outer-product recurrence: ``parallel_form(program, length) -> program`` (pure).

A step graph whose only memory is sums of outer products read linearly (BDH's Hebbian state,
causal linear attention) computes, run over ``length`` steps from a state ``S_0``::

    S_{t+1} = S_t + outer(k_t, v_t)          y_t = read(q_t, S_t)       (or of S_{t+1})
          =>  y_t = read(q_t, S_0) + sum_{s < t} (q_t . k_s) v_s        (s <= t reading S_{t+1})
              S_L = S_0 + sum_s outer(k_s, v_s)

(with a decay ``S_{t+1} = a_t * S_t + ...``, each term weighed by the product of the decays between)

so the time loop can be hoisted: every value of the step gets a leading time axis of ``length``
(the step's ops applied to all tokens at once), each read becomes two contractions with a causal
mask between them (scores ``q_t . k_s``, then scores times ``v_s``: the masked matmul of
attention), and each final state one contraction over the time axis.  The result is a program of
one step over a whole chunk of ``length`` tokens, with the same parameters and states: run chunk
after chunk, each carrying its final state into the next, it is the chunked form
(flash-linear-attention's per-chunk state carry).  ``runtime/parallel.py`` runs it.

``plan_parallel_form(program)`` decides; the rewrite applies only when all of these hold
(``Plan.reason`` names the first that does not, and the program then stays recurrent):

1. Every state is either an *accumulator* or a *counter*.  An accumulator ``S`` (f32) has the
   next value ``S + einsum("A,B->C", k, v)``, an outer product: no index summed, none repeated;
   or ``a * S + einsum(...)``, decayed (gated) by ``a >= 0`` (a non-negative constant, or built by
   exp, sigmoid, softplus, relu or abs), constant or per step, which varies only along axes of the
   key ``k`` that every read contracts with its query (a scalar decay, GLA's per-key-channel gate).  A counter ``p`` has the next value ``p + c`` with ``c`` an integer
   constant; its value at step ``t`` of a chunk is ``p_0 + c t`` (exact while it stays below 2^24
   in f32).  A state set to a new value, or any other recurrence: recurrent.
2. There is at least one accumulator.
3. An accumulator's value (``S``) and its written value (``S + outer(k, v)``) are used only by
   that write, by its ``next`` result and by *reads*: two-operand einsums with ``S`` as one
   operand (no repeated index on either), whose other operand ``q`` is not itself an accumulator's
   value.  So ``S`` is read linearly, and nothing else of the step (an output, another state, a
   nonlinearity) sees it except through a read.
4. Neither ``k``, ``v``, the decay ``a`` nor any read's ``q`` depends on that accumulator ``S`` within the step:
   the write and the reads are linear in ``S``.  They may depend on the inputs, on counters and
   on reads of *other* accumulators (BDH's layer l + 1 reads layer l's output): the step is then
   a composition of sequence maps, hoisted one after the other.
5. Every op that depends on an input or a state has a rule for the time axis: elementwise ops,
   reductions, normalisations, einsum, reshape/transpose/broadcast/concat/slice, and gathers
   along a static table's first axis.  Random draws (keyed by the step), loops, synaptic
   propagation, scatters and run-time checks do not: such a program stays recurrent.

A decay enters as the sums ``L_t`` of ``log a`` over the chunk's steps (a matmul with a triangular
matrix): ``q_t . k_s`` is weighed by ``exp(L_t - L_s)`` (per key channel, zero where ``s`` does
not reach ``t``, so no exponent is positive), the start state by ``exp(L_t)`` and each write in the
final state by ``exp(L_last - L_s)``.  Outputs and final states equal the recurrent ones up to
float rounding (sums in another order).

``final=False`` leaves the accumulators' final states out (their contraction over the time axis,
for BDH a quarter of the form's multiply-adds) and outputs instead what they are summed from, for
``runtime/parallel.py`` to add up only when the state is read: per accumulator ``S`` the outputs
``FACTORS`` (``S/key`` ``k``, ``S/value`` ``v`` and, decaying, ``S/log_decay`` the sums ``L_t``,
each ``[length, ...]``).  ``S`` then stays in the form's states with next value ``S`` (the start
value, untouched), or, in a form ``from_zero``, is no state of the form at all.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, replace

import numpy as np

from nspec.compiler.batching import batched_equation
from nspec.compiler.ir import DType, GraphBuilder, IRError, Node, Op, Program, Var
from nspec.compiler.ops import ARITHMETIC, COMPARISONS, ELEMENTWISE_UNARY, REDUCTIONS, SliceAttrs

ELEMENTWISE = ARITHMETIC | COMPARISONS | ELEMENTWISE_UNARY | {Op.WHERE}
AXIS_OPS = {Op.ARGMAX, Op.SOFTMAX, Op.LOGSUMEXP}
FACTORS = ("key", "value", "log_decay")  # a form without final states outputs "<state>/<factor>"


@dataclass(frozen=True)
class Accumulator:
    """A state ``S`` whose next value is ``S + outer(k, v)`` (or ``a * S + outer(k, v)``): its ARG,
    the write (ADD), the outer product (EINSUM), the reads (EINSUMs of ``S`` or of the written
    value, and of a ``q``) and, for a decaying state, the product ``a * S`` and the decay ``a``."""

    state: str
    arg: int
    write: int
    outer: int
    reads: tuple[int, ...]
    scaled: int | None = None  # the MUL node a * S of a decaying state, else None
    decay: int | None = None   # its factor a (per step, broadcast over S along the key's axes)


@dataclass(frozen=True)
class Counter:
    """A state ``p`` whose next value is ``p + c``, ``c`` an integer constant (node ``increment``)."""

    state: str
    arg: int
    increment: int


@dataclass(frozen=True)
class Plan:
    """What ``plan_parallel_form`` found: the accumulators and counters, or why the program stays recurrent."""

    accumulators: tuple[Accumulator, ...] = ()
    counters: tuple[Counter, ...] = ()
    reason: str | None = None

    @property
    def applies(self) -> bool:
        return self.reason is None


class _Recurrent(Exception):
    """Raised while planning: the condition that does not hold (the program stays recurrent)."""


def plan_parallel_form(program: Program) -> Plan:
    """Whether ``program``'s time loop can be hoisted into the parallel form (module docstring)."""
    try:
        plan = _plan(program)
        parallel_form(program, 2, plan)  # condition 5: every timed op has a rule for the time axis
    except _Recurrent as exc:
        return Plan(reason=str(exc))
    except IRError as exc:  # a case the rewrite gets wrong: a bug, but the recurrent run is still right
        return Plan(reason=f"the rewrite does not type-check ({exc}): a bug of this pass")
    return plan


def _plan(program: Program) -> Plan:
    g = program.step
    nodes = g.nodes
    args = g.args()
    users: dict[int, list[int]] = {}
    for i, n in enumerate(nodes):
        for j in n.inputs:
            users.setdefault(j, []).append(i)
    accumulators, counters = [], []
    for var in program.states:
        nxt = g.result(var.name, "next")
        arg = args.get(var.name)
        where = f"state {var.name!r}"
        if nxt is None or arg is None:
            raise _Recurrent(f"{where}: its next value does not read it (a state set anew each step)")
        w = nodes[nxt.node]
        scaled = decay = None
        if w.op is Op.ADD and arg not in w.inputs:  # a * S + outer(k, v): a decaying (gated) state
            scaled = next((j for j in w.inputs if nodes[j].op is Op.MUL and nodes[j].inputs.count(arg) == 1), None)
            if scaled is not None:
                m = nodes[scaled]
                decay = m.inputs[1 - m.inputs.index(arg)]
                if m.shape != var.shape or nodes[decay].dtype is not DType.f32:
                    raise _Recurrent(f"{where}: its decay at {m.span} must be f32 and broadcast over the state")
                if not _nonnegative(nodes, decay):
                    raise _Recurrent(f"{where}: its decay at {m.span} is not known to be >= 0 (a constant, or an exp, "
                                     "sigmoid, softplus, relu or abs): a sign-changing decay stays recurrent")
                other = w.inputs[1 - w.inputs.index(scaled)] if w.inputs.count(scaled) == 1 else None
                if other is None or not _is_outer(nodes[other]) or var.dtype is not DType.f32:
                    raise _Recurrent(f"{where}: what its next value adds to a * {var.name.split('/')[-1]} is not an "
                                     "outer product einsum('A,B->C', k, v) (no index summed or repeated) of f32 values")
                accumulators.append(Accumulator(var.name, arg, nxt.node, other, (), scaled, decay))
                continue
        if w.op is not Op.ADD or arg not in w.inputs or w.inputs.count(arg) != 1:
            raise _Recurrent(f"{where}: its next value is not {var.name.split('/')[-1]} + (an outer product "
                             "or an integer constant), nor a * it + an outer product: another recurrence stays recurrent")
        other = w.inputs[1 - w.inputs.index(arg)]
        inc = nodes[other]
        if inc.op is Op.CONST and np.array_equal(inc.attrs.value, np.round(inc.attrs.value)) \
                and np.broadcast_shapes(inc.shape, var.shape) == var.shape:
            counters.append(Counter(var.name, arg, other))
            continue
        if inc.op is Op.CONST:
            raise _Recurrent(f"{where}: a counter must step by an integer constant (p_0 + c t is then exact), "
                             f"not {inc.attrs.value.reshape(-1)[:4].tolist()}")
        if not _is_outer(inc) or var.dtype is not DType.f32:
            raise _Recurrent(f"{where}: what its next value adds is not an outer product "
                             "einsum('A,B->C', k, v) (no index summed or repeated) of f32 values")
        accumulators.append(Accumulator(var.name, arg, nxt.node, other, ()))
    if not accumulators:
        raise _Recurrent("no state is a sum of outer products: nothing to parallelise")
    special = {a.arg for a in accumulators} | {a.write for a in accumulators} | \
        {a.scaled for a in accumulators if a.scaled is not None}
    out = []
    for acc in accumulators:
        where = f"state {acc.state!r}"
        reads = []
        for holder in (acc.arg, acc.write):
            for u in users.get(holder, []):
                if u in (acc.write, acc.scaled):
                    continue
                n = nodes[u]
                if not (n.op is Op.EINSUM and len(n.inputs) == 2 and n.inputs.count(holder) == 1):
                    raise _Recurrent(f"{where} is used by {n.op.value} at {n.span}, not only read linearly by "
                                     "a two-operand einsum")
                terms, _ = n.attrs.terms
                if any(len(set(t)) != len(t) for t in terms):
                    raise _Recurrent(f"{where}: the read at {n.span} repeats an index (a diagonal)")
                q = n.inputs[1 - n.inputs.index(holder)]
                if q in special:
                    raise _Recurrent(f"{where}: the read at {n.span} multiplies two states")
                reads.append(u)
        if acc.scaled is not None and (users.get(acc.scaled) != [acc.write]
                                       or any(r.node == acc.scaled for r in g.results)):
            raise _Recurrent(f"{where}: its decayed value a * {acc.state.split('/')[-1]} is used besides the write")
        for r in g.results:
            if r.node == acc.arg or (r.node == acc.write and not (r.name == acc.state and r.kind == "next")):
                raise _Recurrent(f"{where} is the result {r.name!r} ({r.kind.value}), not only read linearly")
        outer = nodes[acc.outer]
        operands = [*outer.inputs, *(nodes[u].inputs[1 - nodes[u].inputs.index(acc.arg if acc.arg in nodes[u].inputs
                                                                                    else acc.write)] for u in reads)]
        if any(o in special for o in outer.inputs):
            raise _Recurrent(f"{where}: its outer product at {outer.span} multiplies a state")
        if acc.decay is not None:
            operands.append(acc.decay)
            if acc.decay in special:
                raise _Recurrent(f"{where}: its decay is a state")
        depends = g.reachable(operands)
        if acc.arg in depends:
            raise _Recurrent(f"{where}: the keys, values, queries or decay of its write and reads depend on it "
                             "within the step (the recurrence is not linear in it)")
        if acc.decay is not None:
            _decay_letters(program, acc, reads)
        out.append(replace(acc, reads=tuple(reads)))
    return Plan(tuple(out), tuple(counters))


def _decay_letters(program: Program, acc: Accumulator, reads) -> str:
    """The state axes along which the decay varies (its other axes are 1), as the letters of the
    outer product's result; each must index the key and every read's query (else: recurrent)."""
    nodes = program.step.nodes
    (ka, _), c = nodes[acc.outer].attrs.terms
    a = nodes[acc.decay].shape
    padded = (1,) * (len(c) - len(a)) + a
    letters = "".join(x for x, size in zip(c, padded) if size != 1)
    for u in reads:
        n = nodes[u]
        terms, _ = n.attrs.terms
        holder = acc.arg if acc.arg in n.inputs else acc.write
        at = n.inputs.index(holder)
        s_term, q_term = terms[at], terms[1 - at]
        to_read = dict(zip(c, s_term))
        if any(to_read[x] not in q_term for x in letters):
            raise _Recurrent(f"state {acc.state!r}: its decay varies along an axis that the read at {n.span} does "
                             "not contract with its query")
    if any(x not in ka for x in letters):
        raise _Recurrent(f"state {acc.state!r}: its decay varies along an axis of the value, not only of the key")
    return letters


def _nonnegative(nodes, i: int) -> bool:
    """Whether node ``i`` is >= 0 by construction (its log is then defined, a zero clamped)."""
    n = nodes[i]
    if n.op is Op.CONST:
        return bool(np.all(n.attrs.value >= 0))
    if n.op in (Op.EXP, Op.SIGMOID, Op.SOFTPLUS, Op.RELU, Op.ABS):
        return True
    if n.op in (Op.RESHAPE, Op.BROADCAST, Op.TRANSPOSE, Op.SLICE):
        return _nonnegative(nodes, n.inputs[0])
    if n.op in (Op.MUL, Op.ADD, Op.MAXIMUM):
        return all(_nonnegative(nodes, j) for j in n.inputs)
    return False


def _is_outer(n: Node) -> bool:
    """An einsum of two operands that sums no index and repeats none: an outer product."""
    if n.op is not Op.EINSUM or len(n.inputs) != 2:
        return False
    terms, result = n.attrs.terms
    return (all(len(set(t)) == len(t) for t in (*terms, result))
            and set(terms[0]) | set(terms[1]) == set(result))


# ---------------------------------------------------------------- the rewrite
def parallel_form(program: Program, length: int, plan: Plan | None = None, from_zero: bool = False,
                  final: bool = True) -> Program:
    """``program`` as one step over ``length`` tokens: inputs ``[length, *shape]``, outputs
    ``[length, *shape]``, the same parameters and states (the state after the chunk's last token).

    ``from_zero``: the form for a chunk that starts with every accumulator at zero (a run from the
    initial state): the reads leave out the start state's term ``read(q_t, S_0)``, which costs as
    much as the scores ``q_t . k_s`` and is zero there.  Given a non-zero start state it is wrong.

    ``final=False``: the accumulators' final states are not computed; their factors are outputs
    instead (module docstring, ``FACTORS``).

    ``plan`` (default: ``plan_parallel_form(program)``) must apply; else ``ValueError`` with its reason."""
    if plan is None:
        plan = plan_parallel_form(program)
        if not plan.applies:
            raise ValueError(f"the parallel form does not apply: {plan.reason}")
    if length < 1:
        raise ValueError(f"the parallel form needs a length of at least 1, got {length}")
    return _Rewrite(program, length, plan, from_zero, final).program()


def factor_shapes(program: Program, plan: Plan, length: int) -> dict[str, tuple[str, tuple[int, ...]]]:
    """The outputs of a form with ``final=False``: name -> (factor, shape without batch and step axes)."""
    nodes = program.step.nodes
    out = {}
    for acc in plan.accumulators:
        k, v = (nodes[j].shape for j in nodes[acc.outer].inputs)
        out[f"{acc.state}/key"], out[f"{acc.state}/value"] = ("key", (length, *k)), ("value", (length, *v))
        if acc.decay is not None:
            c, _, _, letters = outer_letters(program, acc)
            sizes = tuple(nodes[acc.arg].shape[c.index(x)] for x in letters)
            out[f"{acc.state}/log_decay"] = ("log_decay", (length, *sizes))
    return out


def outer_letters(program: Program, acc: Accumulator) -> tuple[str, str, str, str]:
    """The state's axes, its key's and value's (as the state's letters) and the decay's, for ``runtime/parallel.py``."""
    (ka, kb), c = program.step.nodes[acc.outer].attrs.terms
    decay = _decay_letters(program, acc, acc.reads) if acc.decay is not None else ""
    return c, ka, kb, decay


class _Rewrite:
    def __init__(self, program: Program, length: int, plan: Plan, from_zero: bool, final: bool = True):
        self.p, self.L, self.plan, self.from_zero, self.final = program, length, plan, from_zero, final
        # whether a read or the result needs an accumulator's start value
        self.needs_start = final or not from_zero
        self.b = GraphBuilder()
        self.map: dict[int, tuple[int, bool]] = {}  # old node -> (new node, has the time axis)
        self.read_of = {r: acc for acc in plan.accumulators for r in acc.reads}
        self.counter_of = {c.arg: c for c in plan.counters}
        self.start: dict[str, int] = {}  # state -> its ARG: the value at the chunk's start
        self.decays: dict[str, tuple] = {}  # decaying state -> (letters, sizes, log-decay sums incl., excl.)

    # ------------------------------------------------------------ order
    def _order(self) -> list[int]:
        """The nodes the chunk's results need, inputs first, each read after its accumulator's k and
        v.  A write and its outer product of one token are never built: only their sum over the chunk."""
        nodes, results = self.p.step.nodes, self.p.step.results
        deps = {i: list(n.inputs) for i, n in enumerate(nodes)}
        for r, acc in self.read_of.items():
            kept = [j for j in deps[r] if self.needs_start or j not in (acc.arg, acc.write)]
            deps[r] = [acc.arg if j == acc.write else j for j in kept]
            deps[r] += list(nodes[acc.outer].inputs)
            deps[r] += [acc.decay] if acc.decay is not None else []
        roots = [r.node for r in results if r.kind == "output"]
        for c in self.plan.counters:
            roots.append(c.arg)
        for acc in self.plan.accumulators:
            roots += [acc.arg] if self.needs_start else []
            roots += [*nodes[acc.outer].inputs] + ([acc.decay] if acc.decay is not None else [])
        order, seen = [], set()
        for root in sorted(set(roots)):
            stack = [(root, False)]
            while stack:
                i, done = stack.pop()
                if done:
                    order.append(i)
                    continue
                if i in seen:
                    continue
                seen.add(i)
                stack.append((i, True))
                stack.extend((j, False) for j in reversed(deps[i]) if j not in seen)
        return order

    def program(self) -> Program:
        p, b, L = self.p, self.b, self.L
        nodes = p.step.nodes
        for i in self._order():
            n = nodes[i]
            if n.op is Op.ARG:
                self.map[i] = self._arg(i, n)
            elif i in self.read_of:
                self.map[i] = (self._read(i, n, self.read_of[i]), True)
            elif not any(self.map[j][1] for j in n.inputs):
                self.map[i] = (b.add(n.op, [self.map[j][0] for j in n.inputs], n.dtype, n.shape, n.attrs, n.span), False)
            else:
                self.map[i] = (self._lift(n), True)
        deferred = {} if self.final else {a.state: a for a in self.plan.accumulators}
        for r in p.step.results:
            if r.kind == "output":
                b.result(r.name, "output", self._timed(r.node))
            elif r.kind == "next" and r.name in deferred:
                if self.needs_start:  # unchanged: runtime/parallel.py adds the chunk's writes when read
                    b.result(r.name, "next", self.map[deferred[r.name].arg][0])
            elif r.kind == "next":
                b.result(r.name, "next", self._final(r.name, r.node))
        timed = lambda v: replace(v, shape=(L, *v.shape))  # noqa: E731
        outputs = tuple(map(timed, p.outputs))
        for name, (factor, shape) in factor_shapes(p, self.plan, L).items() if deferred else ():
            acc = deferred[name.rsplit("/", 1)[0]]
            k, v = nodes[acc.outer].inputs
            node = {"key": lambda: self._timed(k), "value": lambda: self._timed(v),
                    "log_decay": lambda: self._cumulative(acc)[2]}[factor]()
            b.result(name, "output", node)
            outputs += (Var(name, DType.f32, shape, nodes[acc.outer].span),)
        states = tuple(v for v in p.states if self.needs_start or v.name not in deferred)
        return replace(p, step=b.build(), inputs=tuple(map(timed, p.inputs)), outputs=outputs, states=states,
                       monitors=(), duration_steps=None, data_dims=())

    # ------------------------------------------------------------ values
    def _arg(self, i: int, n: Node) -> tuple[int, bool]:
        b, a = self.b, n.attrs
        if a.role == "input":
            return b.arg(a.name, "input", a.dtype, (self.L, *a.shape), n.span), True
        new = b.arg(a.name, a.role, a.dtype, a.shape, n.span)
        self.start[a.name] = new
        counter = self.counter_of.get(i)
        if counter is None:
            return new, False  # a parameter, or an accumulator's state at the chunk's start
        c = self.p.step.nodes[counter.increment].attrs.value
        steps = np.arange(self.L).reshape((self.L,) + (1,) * len(a.shape)) * c
        return b.add(Op.ADD, [new, b.const(steps.astype(a.dtype.numpy), a.dtype, n.span)], span=n.span), True

    def _timed(self, i: int) -> int:
        """Old node ``i``'s value with the time axis (a time-invariant value broadcast over it)."""
        new, timed = self.map[i]
        if timed:
            return new
        n = self.p.step.nodes[i]
        return self.b.add(Op.BROADCAST, [new], n.dtype, (self.L, *n.shape), span=n.span)

    def _padded(self, i: int, rank: int) -> int:
        """A timed value of per-token rank below ``rank`` with size-1 axes after its time axis."""
        new, timed = self.map[i]
        shape = self.p.step.nodes[i].shape
        if not timed or len(shape) >= rank:
            return new
        return self.b.add(Op.RESHAPE, [new], self.p.step.nodes[i].dtype, (self.L,) + (1,) * (rank - len(shape)) + shape)

    def _lift(self, n: Node) -> int:
        """``n`` applied to every token at once: its inputs and result carry the time axis first."""
        b, L, nodes = self.b, self.L, self.p.step.nodes
        ins = list(n.inputs)
        timed = [self.map[j][1] for j in ins]
        shape = (L, *n.shape)
        rank = len(n.shape)
        if n.op in ELEMENTWISE:
            return b.add(n.op, [self._padded(j, rank) for j in ins], n.dtype, shape, n.attrs, n.span)
        if n.op is Op.EINSUM:
            eq = batched_equation(n.attrs.equation, timed, True)
            lhs, out = eq.split("->")
            return self._einsum([self.map[j][0] for j in ins], lhs, out, out[0], n)
        if n.op is Op.GATHER:
            table, index = ins
            axis = n.attrs.axis % max(len(nodes[table].shape), 1)
            if timed[0] and not timed[1]:
                return b.add(Op.GATHER, [self.map[table][0], self.map[index][0]], n.dtype, shape,
                             (("axis", axis + 1),), n.span)
            if not timed[0] and axis == 0:
                return b.add(Op.GATHER, [self.map[table][0], self.map[index][0]], n.dtype, shape, n.attrs, n.span)
            raise _Recurrent(f"gather at {n.span} has no rule for a time axis here: its table changes from step to "
                             "step, or it gathers by a per-step index along another axis than the first")
        if n.op is Op.LAYERNORM:
            x, *affine = ins
            return b.add(Op.LAYERNORM, [self._timed(x), *(self._padded(j, rank) for j in affine)], n.dtype, shape,
                         n.attrs, n.span)
        if n.op is Op.BROADCAST:
            return b.add(Op.BROADCAST, [self._padded(ins[0], rank)], n.dtype, shape, span=n.span)
        if n.op is Op.RESHAPE:
            return b.add(Op.RESHAPE, [self.map[ins[0]][0]], n.dtype, shape, span=n.span)
        x_rank = len(nodes[ins[0]].shape)
        if x_rank == 0 and n.op in REDUCTIONS | AXIS_OPS:
            raise _Recurrent(f"{n.op.value} at {n.span}: a reduction of a scalar")
        if n.op in REDUCTIONS:
            axes = tuple(a % x_rank + 1 for a in n.attrs.axes)
            return b.add(n.op, [self.map[ins[0]][0]], n.dtype, shape, (("axes", axes), ("keepdims", n.attrs.keepdims)),
                         n.span)
        if n.op in AXIS_OPS:
            return b.add(n.op, [self.map[ins[0]][0]], n.dtype, shape, (("axis", n.attrs.axis % x_rank + 1),), n.span)
        if n.op is Op.TRANSPOSE:
            return b.add(Op.TRANSPOSE, [self.map[ins[0]][0]], n.dtype, shape,
                         (("perm", (0, *(k + 1 for k in n.attrs.perm))),), n.span)
        if n.op is Op.CONCAT:
            return b.add(Op.CONCAT, [self._timed(j) for j in ins], n.dtype, shape,
                         (("axis", n.attrs.axis % x_rank + 1),), n.span)
        if n.op is Op.SLICE:
            a = n.attrs
            return b.add(Op.SLICE, [self.map[ins[0]][0]], n.dtype, shape,
                         SliceAttrs((0, *a.starts), (L, *a.stops), (1, *a.steps)), n.span)
        raise _Recurrent(f"{n.op.value} at {n.span} has no rule for a time axis (a per-step op: it stays recurrent)")

    def _einsum(self, ins: list[int], lhs: str, out: str, t: str, n: Node) -> int:
        """``einsum(lhs->out)`` of ``ins`` whose result has the time axis ``t`` first, computed with
        ``t`` second to last (the rows of a matmul, so a weight is read once per block of tokens,
        not once per token, by a backend's tiled einsum) and transposed back when that moves it."""
        b = self.b
        shape = (self.L, *n.shape)
        if len(out) < 3:
            return b.add(Op.EINSUM, ins, n.dtype, shape, (("equation", f"{lhs}->{out}"),), n.span)
        rows = out[1:-1] + t + out[-1]
        done = b.add(Op.EINSUM, ins, n.dtype, tuple(shape[out.index(c)] for c in rows),
                     (("equation", f"{lhs}->{rows}"),), n.span)
        return b.add(Op.TRANSPOSE, [done], n.dtype, shape, (("perm", tuple(rows.index(c) for c in out)),), n.span)

    # ------------------------------------------------------------ reads and final states
    def _letters(self, acc: Accumulator):
        """Letters for the contractions: the state's axes, then k's and v's terms in those letters."""
        (ka, kb), c = self.p.step.nodes[acc.outer].attrs.terms
        pool = iter(string.ascii_letters)
        sig = "".join(next(pool) for _ in c)
        to_sig = dict(zip(c, sig))
        return sig, "".join(to_sig[x] for x in ka), "".join(to_sig[x] for x in kb), pool

    def _cumulative(self, acc: Accumulator) -> tuple:
        """The decay's letters (in ``_letters``' names), their sizes, and the sums of log a over
        the chunk's steps up to and including t, and before t: [L, *sizes] each (cumulative
        products in log space, as a matmul with a triangular matrix)."""
        if acc.state not in self.decays:
            b, L, nodes = self.b, self.L, self.p.step.nodes
            letters = _decay_letters(self.p, acc, acc.reads)
            (_, _), c = nodes[acc.outer].attrs.terms
            sig = self._letters(acc)[0]
            names = "".join(sig[c.index(x)] for x in letters)
            sizes = tuple(nodes[acc.arg].shape[c.index(x)] for x in letters)
            a = b.add(Op.RESHAPE, [self._timed(acc.decay)], DType.f32, (L, *sizes))
            # a decay of 0 (a reset, or an exp that underflowed) as the least normal float: its log is finite
            logs = b.add(Op.LOG, [b.add(Op.MAXIMUM, [a, b.const(np.finfo(np.float32).tiny, DType.f32)])])
            d = string.ascii_letters[:len(sizes)]
            sums = [b.add(Op.EINSUM, [b.const(np.tril(np.ones((L, L), np.float32), k), DType.f32), logs],
                          attrs=(("equation", f"yz,z{d}->y{d}"),)) for k in (0, -1)]
            self.decays[acc.state] = (names, sizes, *sums)
        return self.decays[acc.state]

    def _decayed_mask(self, acc: Accumulator, post: bool) -> int:
        """[L, L, *sizes]: exp(sum of log a over the steps from s to t) where s reaches t, else 0."""
        b, L = self.b, self.L
        _, sizes, incl, excl = self._cumulative(acc)
        at_t = b.add(Op.RESHAPE, [incl if post else excl], DType.f32, (L, 1, *sizes))
        at_s = b.add(Op.RESHAPE, [incl], DType.f32, (1, L, *sizes))
        mask = b.const(np.tril(np.ones((L, L), np.float32), 0 if post else -1).reshape((L, L) + (1,) * len(sizes)),
                       DType.f32)
        exponent = b.add(Op.MUL, [b.add(Op.SUB, [at_t, at_s]), mask])  # 0 where masked: exp never overflows
        return b.add(Op.MUL, [b.add(Op.EXP, [exponent]), mask])

    def _read(self, i: int, n: Node, acc: Accumulator) -> int:
        b, L, nodes = self.b, self.L, self.p.step.nodes
        holder = acc.arg if acc.arg in n.inputs else acc.write
        at = n.inputs.index(holder)
        terms, out = n.attrs.terms
        s_term, q_term = terms[at], terms[1 - at]
        sig, ka, va, pool = self._letters(acc)
        t, s = next(pool), next(pool)
        rename = dict(zip(s_term, sig))
        for x in q_term + out:
            if x not in rename:
                rename[x] = next(pool)
        q_l, o_l = "".join(rename[x] for x in q_term), "".join(rename[x] for x in out)
        kept = "".join(dict.fromkeys(x for x in q_l + ka if x in o_l + va))
        q = self._timed(n.inputs[1 - at])
        k, v = (self._timed(j) for j in nodes[acc.outer].inputs)
        post = holder == acc.write
        if acc.decay is None:
            scores = b.add(Op.EINSUM, [q, k], attrs=(("equation", f"{t}{q_l},{s}{ka}->{kept}{t}{s}"),), span=n.span)
            # s < t reads the state before step t's write; s <= t reads the written value
            mask = np.tril(np.ones((L, L), np.float32), 0 if post else -1)
            masked = b.add(Op.MUL, [scores, b.const(mask, DType.f32, n.span)], span=n.span)
        else:  # the products of the decays between s and t, per key channel, weigh q_t k_s
            names = self._cumulative(acc)[0]
            masked = b.add(Op.EINSUM, [q, k, self._decayed_mask(acc, post)],
                           attrs=(("equation", f"{t}{q_l},{s}{ka},{t}{s}{names}->{kept}{t}{s}"),), span=n.span)
        within = self._einsum([masked, v], f"{kept}{t}{s},{s}{va}", f"{t}{o_l}", t, n)
        if self.from_zero:
            return within
        if acc.decay is None:
            from_start = self._einsum([q, self.map[acc.arg][0]], f"{t}{q_l},{sig}", f"{t}{o_l}", t, n)
        else:  # S_0 decayed by every step up to t (before t for a read before the write)
            names, _, incl, excl = self._cumulative(acc)
            decayed = b.add(Op.EXP, [incl if post else excl])
            from_start = self._einsum([q, decayed, self.map[acc.arg][0]], f"{t}{q_l},{t}{names},{sig}", f"{t}{o_l}",
                                      t, n)
        return b.add(Op.ADD, [from_start, within], n.dtype, (L, *n.shape), span=n.span)

    def _final(self, name: str, i: int) -> int:
        """The state after the chunk's last token."""
        b, nodes = self.b, self.p.step.nodes
        for c in self.plan.counters:
            if c.state == name:
                n = nodes[c.arg]
                total = (nodes[c.increment].attrs.value * self.L).astype(n.dtype.numpy)
                return b.add(Op.ADD, [self.start[name], b.const(total, n.dtype, n.span)], span=n.span)
        acc = next(a for a in self.plan.accumulators if a.state == name)
        w = nodes[acc.write]
        sig, ka, va, pool = self._letters(acc)
        s = next(pool)
        k, v = (self._timed(j) for j in nodes[acc.outer].inputs)
        start = self.map[acc.arg][0]
        if acc.decay is None:
            written = b.add(Op.EINSUM, [k, v], w.dtype, w.shape, (("equation", f"{s}{ka},{s}{va}->{sig}"),), w.span)
            return b.add(Op.ADD, [start, written], w.dtype, w.shape, span=w.span)
        # S_L = (prod of every step's a) S_0 + sum_s (prod of the a after s) k_s v_s
        names, sizes, incl, _ = self._cumulative(acc)
        last = b.add(Op.SLICE, [incl], attrs=SliceAttrs((self.L - 1,) + (0,) * len(sizes), (self.L, *sizes),
                                                        (1,) * (len(sizes) + 1)))
        after = b.add(Op.EXP, [b.add(Op.SUB, [last, incl])])
        written = b.add(Op.EINSUM, [k, v, after], w.dtype, w.shape,
                        (("equation", f"{s}{ka},{s}{va},{s}{names}->{sig}"),), w.span)
        whole = b.add(Op.EXP, [b.add(Op.RESHAPE, [last], DType.f32, sizes)])
        kept = b.add(Op.EINSUM, [start, whole], w.dtype, w.shape, (("equation", f"{sig},{names}->{sig}"),), w.span)
        return b.add(Op.ADD, [kept, written], w.dtype, w.shape, span=w.span)


__all__ = ["Accumulator", "Counter", "FACTORS", "Plan", "factor_shapes", "outer_letters", "plan_parallel_form",
           "parallel_form"]

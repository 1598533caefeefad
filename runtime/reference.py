"""The reference executor: the NumPy oracle every backend is tested against, run over time.

The meaning of each op (the rule table ``RULES``, compiled ``Plan``s and ``evaluate``) lives in
``compiler/interpret.py``, so that compiler passes can evaluate graphs without the runtime; this
module adds what a run needs around it.  ``initialize`` draws parameters and per-trial states
from a program's init graph, and ``ReferenceExecutor`` runs the time loop of the executor
protocol: states carried from step to step, inputs read per step, outputs and records
collected.  ``RULES``, ``Context``, ``Plan``, ``EvaluationError`` and ``evaluate`` are
re-exported here for callers of the oracle.
"""

from __future__ import annotations

import numpy as np

from nspec.compiler.interpret import NUMPY, RULES, Context, EvaluationError, Plan, evaluate
from nspec.compiler.ir import INIT_ONLY, Op, Program
from nspec.compiler.threefry import MASK, draw_sites
from nspec.runtime.executor import BackendError, RunRequest, RunResult, require_values


def _as_var(value, var) -> np.ndarray:
    return np.array(np.broadcast_to(value, var.shape), dtype=var.dtype.numpy)


def initialize(program: Program, batch: int, seed: int,
               params: dict[str, np.ndarray] | None = None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Initial parameters ``{name: value}`` and states ``{name: [batch, *shape]}`` from ``program.init``.

    Parameters are drawn once from ``default_rng(seed)``; trial b's states from
    ``default_rng([seed, b])``, so trial b of a batch equals a batch-1 run given that stream.
    The states that key the step graph's random draws (``rng_seed``) hold ``seed``'s low 32 bits.
    RANDOM nodes draw in node order; a node shared by a parameter and a state keeps the
    parameter's value.  Given ``params`` (loaded weights), states are computed from those
    (a learned start state follows its loaded parameter).
    """
    init = program.init

    def roots(group):
        out = {}
        for v in group:
            r = init.result(v.name, "value")
            if r is None:
                raise EvaluationError(f"init: no initial value for {v.name!r}")
            out[v.name] = r.node
        return out

    param_roots, state_roots = roots(program.params), roots(program.states)
    param_nodes = init.reachable(param_roots.values())
    state_nodes = init.reachable(state_roots.values()) - param_nodes
    drawn = param_nodes
    if params is not None:
        # Loaded weights replace every parameter, so only the parameter-graph nodes the states read
        # are needed (drawing a large model's initial weights again costs more than its forward).
        # Random ones keep the full draw: their values depend on every draw before them.
        shared = init.reachable({j for i in state_nodes for j in init.nodes[i].inputs if j in param_nodes}
                                | {r for r in state_roots.values() if r in param_nodes})
        if not any(init.nodes[i].op is Op.RANDOM for i in shared):
            drawn = shared
    pvals = Plan(init, frozenset(init.args()), drawn).run(Context({}, None, np.random.default_rng(seed)))
    loaded = params
    if loaded is None:
        params = {v.name: _as_var(pvals[param_roots[v.name]], v) for v in program.params}
    else:
        params = {v.name: _as_var(np.asarray(loaded[v.name]), v) for v in program.params}
        # States read parameters through ARG nodes only: a constant node a state shares with a
        # parameter's initialiser keeps its own value.
        pvals = {i: pvals[i] for i in drawn if init.nodes[i].op is not Op.ARG}

    state_plan = Plan(init, frozenset(init.args()), state_nodes)
    preset = {i: pvals[i] for i in drawn if loaded is None or i in pvals}
    trials = [state_plan.run(Context(dict(params), None, np.random.default_rng([seed, b])), preset)
              for b in range(batch)]
    states = {}
    for v in program.states:
        states[v.name] = np.empty((batch, *v.shape), v.dtype.numpy)  # each trial written once, not copied twice
        for b, t in enumerate(trials):
            states[v.name][b] = np.broadcast_to(t[state_roots[v.name]], v.shape)
    for name in draw_sites(program.step).seeds:
        states[name] = np.full_like(states[name], int(seed) & MASK)
    return params, states


# ---------------------------------------------------------------- the executor
class ReferenceExecutor:
    """Runs a discretised program step by step with the reference interpreter.

    Option ``check_finite=True`` stops at the first node (with its source span) that computes inf
    or nan from finite inputs; ``first_step`` (default 0) is the run's first step, which its
    messages count from (a chunk of a longer run).
    """

    name = "reference"

    def __init__(self, program: Program, **options):
        step = program.step
        derivs = [r.name for r in step.results if r.kind == "deriv"]
        if derivs:
            raise BackendError(f"the reference executor needs a discretised program, but {', '.join(derivs)} "
                               "still have derivatives (run the discretisation pass first)")
        init_only = [f"%{i} ({n.op.value})" for i, n in enumerate(step.nodes) if n.op in INIT_ONLY]
        if init_only:
            raise BackendError(f"the step graph holds initialisation-only nodes: {', '.join(init_only)}")
        self.program = program
        self.check_finite = bool(options.get("check_finite", False))
        self.first_step = int(options.get("first_step", 0))  # where this run starts, for messages
        self.plan = Plan(step)
        self.next_nodes = {s.name: self._result_node(s.name, "next") for s in program.states}
        self.output_nodes = {o.name: self._result_node(o.name, "output") for o in program.outputs}

    def _result_node(self, name: str, kind: str) -> int:
        r = self.program.step.result(name, kind)
        if r is None:
            raise BackendError(f"the step graph has no {kind} result for {name!r}")
        return r.node

    def _recorded_node(self, name: str) -> int | None:
        """The step-graph node a record name reads, or None for a state (recorded before its update)."""
        if any(s.name == name for s in self.program.states):
            return None
        r = self.program.step.result(name, "output") or self.program.step.result(name, "value")
        if r is None:
            raise BackendError(f"cannot record {name!r}: it is neither a state nor a step result")
        return r.node

    def run(self, request: RunRequest) -> RunResult:
        """Run ``request.steps`` steps; see ``runtime/executor.py`` for the array conventions."""
        p = self.program
        require_values(p, request)
        steps = int(request.steps)
        leading = [np.shape(request.state[v.name])[0] for v in p.states]
        leading += [np.shape(request.inputs[v.name])[0] for v in p.inputs]
        batch = leading[0] if leading else 1
        if any(n != batch for n in leading):
            raise BackendError(f"state and inputs disagree on the batch size: {sorted(set(leading))}")
        params = {v.name: np.asarray(request.params[v.name], v.dtype.numpy) for v in p.params}
        state = {v.name: np.array(request.state[v.name], v.dtype.numpy) for v in p.states}
        inputs = {v.name: np.asarray(request.inputs[v.name], v.dtype.numpy) for v in p.inputs}
        short = [n for n, x in inputs.items() if x.shape[1] < steps]
        if short:
            raise BackendError(f"inputs {', '.join(short)} have fewer than {steps} steps")

        outputs = {o.name: np.empty((batch, steps) + o.shape, o.dtype.numpy) for o in p.outputs}
        records = {}
        recorded = []
        for name, every in request.record:
            if int(every) < 1:
                raise BackendError(f"cannot record {name!r} every {every} steps: the interval must be at least 1")
            node = self._recorded_node(name)
            shape = state[name].shape if node is None else (batch,) + p.step.nodes[node].shape
            dtype = state[name].dtype if node is None else NUMPY[p.step.nodes[node].dtype]
            records[name] = np.empty((steps // every,) + shape, dtype)
            recorded.append((name, int(every), node))

        plans: dict = {}
        for t in range(steps):
            env = dict(params)
            env.update(state)
            for name, x in inputs.items():
                env[name] = x[:, t]
            try:
                vals = self.plan.run(Context(env, batch, None, plans, self.check_finite))
            except EvaluationError as exc:
                if not self.check_finite:
                    raise
                at = self.first_step + t
                raise BackendError(f"step {at} (t = {at * p.dt:g} s): {exc}") from exc
            for name, every, node in recorded:
                if t % every == 0 and t // every < len(records[name]):
                    records[name][t // every] = state[name] if node is None else vals[node]
            for name, node in self.output_nodes.items():
                outputs[name][:, t] = vals[node]
            state = {name: vals[node] if self.plan.flags[node] else np.broadcast_to(vals[node], state[name].shape)
                     for name, node in self.next_nodes.items()}
        return RunResult({k: np.array(v) for k, v in state.items()}, outputs, records)


__all__ = ["RULES", "Context", "Plan", "EvaluationError", "evaluate", "initialize", "ReferenceExecutor"]

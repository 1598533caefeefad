"""NIR import and export (docs/nir.md) against snnTorch 1.0.0 and against NIR's equations.

The oracle for the snnTorch tests is snnTorch's own forward pass on the original network.  Its
``export_to_nir`` walks a network with nirtorch, which these machines cannot install (it pulls a CUDA
torch), so the graph is assembled here the way nirtorch chains an ``nn.Sequential`` (input -> 0 ->
1 -> output) from snnTorch's own per-module conversion, ``_extract_snntorch_module`` (dt = 1e-4 s,
tau = dt / (1 - beta), r = tau / dt, w_in = tau_syn / dt).  The neurons use ``reset_mechanism="zero"``
and ``reset_delay=False``: v is set to 0 in the step it spikes, NIR's reset (snnTorch's default
subtract reset is not what a NIR file says, docs/nir.md).
"""

from __future__ import annotations

import contextlib
import sys
import types

import numpy as np
import pytest

nir = pytest.importorskip("nir")
torch = pytest.importorskip("torch")
snn = pytest.importorskip("snntorch")

import nspec  # noqa: E402
import nspec.nir as nspec_nir  # noqa: E402
from nspec.dsl import NspecError  # noqa: E402
from nspec.runtime.nir_import import NirError  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
STEPS = 60
BACKENDS = ("reference", "onnxruntime")


@contextlib.contextmanager
def without_nirtorch():
    """An empty ``nirtorch`` module for the duration of an import: snnTorch's NIR modules import it at the
    top, and the per-module converters these tests use never call it (installing it pulls a CUDA torch)."""
    saved = sys.modules.get("nirtorch")
    sys.modules["nirtorch"] = types.ModuleType("nirtorch")
    try:
        yield
    finally:
        if saved is None:
            del sys.modules["nirtorch"]
        else:
            sys.modules["nirtorch"] = saved


@pytest.fixture(scope="module")
def extract():
    """snnTorch's per-module NIR conversion; its module imports nirtorch, which it does not use for it."""
    with without_nirtorch():
        from snntorch.export_nir import _extract_snntorch_module
    return _extract_snntorch_module


def sequential_graph(modules, extract, n_in, n_out):
    nodes = {"input": nir.Input(input_type=np.array([n_in]))}
    for k, m in enumerate(modules):
        nodes[str(k)] = extract(m)
    nodes["output"] = nir.Output(output_type=np.array([n_out]))
    names = list(nodes)
    return nir.NIRGraph(nodes=nodes, edges=list(zip(names, names[1:])))


def via_file(graph, tmp_path):
    path = tmp_path / "net.nir"
    nir.write(str(path), graph)
    return path


def inputs(n_in, seed=0, scale=1.5):
    return np.random.default_rng(seed).normal(0.3, scale, size=(STEPS, n_in)).astype(np.float32)


def per_neuron(values):
    return torch.tensor(values, dtype=torch.float32)


def check(model, x, spikes, mem, neuron):
    for backend in BACKENDS:
        out = model.run(inputs={"input": x}, backend=backend)
        assert spikes.sum() > 5 and (spikes == 0).sum() > 5, "the test needs both spikes and silence"
        np.testing.assert_array_equal(out["output"], spikes, err_msg=backend)
        # the network's membrane readout is v at the start of a step: snnTorch's mem one step later
        np.testing.assert_allclose(out[f"{neuron}_v"][1:], mem[:-1], atol=1e-5, rtol=0, err_msg=backend)


def test_leaky_matches_snntorch(extract, tmp_path):
    torch.manual_seed(0)
    fc = torch.nn.Linear(4, 5)
    lif = snn.Leaky(beta=per_neuron([0.9, 0.8, 0.95, 0.7, 0.85]), threshold=per_neuron([1.0, 0.8, 1.2, 0.5, 1.0]),
                    reset_mechanism="zero", reset_delay=False)
    x = inputs(4)
    mem, spk, mems = lif.init_leaky(), [], []
    with torch.no_grad():
        for t in range(STEPS):
            s, mem = lif(fc(torch.from_numpy(x[t])), mem)
            spk.append(s.numpy().copy())
            mems.append(mem.numpy().copy())
    path = via_file(sequential_graph([fc, lif], extract, 4, 5), tmp_path)
    check(nspec_nir.read(path, states=True), x, np.array(spk), np.array(mems), "n1")


def test_synaptic_matches_snntorch(extract, tmp_path):
    torch.manual_seed(1)
    fc = torch.nn.Linear(3, 4)
    syn = snn.Synaptic(alpha=per_neuron([0.5, 0.6, 0.7, 0.8]), beta=per_neuron([0.9, 0.85, 0.8, 0.95]),
                       threshold=per_neuron([1.0, 1.5, 1.0, 2.0]), reset_mechanism="zero", reset_delay=False)
    x = inputs(3, seed=1)
    cur, mem = syn.init_synaptic()
    spk, mems, curs = [], [], []
    with torch.no_grad():
        for t in range(STEPS):
            s, cur, mem = syn(fc(torch.from_numpy(x[t])), cur, mem)
            spk.append(s.numpy().copy())
            mems.append(mem.numpy().copy())
            curs.append(cur.numpy().copy())
    model = nspec_nir.read(via_file(sequential_graph([fc, syn], extract, 3, 4), tmp_path), states=True)
    check(model, x, np.array(spk), np.array(mems), "n1")
    # the current is read after the step's input, and a spike does not reset it
    np.testing.assert_allclose(model.run(inputs={"input": x})["n1_i"], np.array(curs), atol=1e-5, rtol=0)


def test_rleaky_matches_snntorch(extract, tmp_path):
    # RLeaky exports as a nested graph LIF <-> Affine: the Affine reads the spikes of the last step
    # (none before the first), so its bias acts from the first step.
    torch.manual_seed(2)
    fc = torch.nn.Linear(3, 4)
    rlif = snn.RLeaky(beta=per_neuron([0.9, 0.8, 0.85, 0.95]), threshold=per_neuron([1.0, 0.7, 1.0, 1.3]),
                      linear_features=4, reset_mechanism="zero", reset_delay=False)
    with torch.no_grad():
        rlif.recurrent.weight.mul_(2.0)
        rlif.recurrent.bias.fill_(0.2)
    x = inputs(3, seed=2)
    spk_t, mem = rlif.init_rleaky()
    spk, mems = [], []
    with torch.no_grad():
        for t in range(STEPS):
            spk_t, mem = rlif(fc(torch.from_numpy(x[t])), spk_t, mem)
            spk.append(spk_t.numpy().copy())
            mems.append(mem.numpy().copy())
    graph = sequential_graph([fc, rlif], extract, 3, 4)
    assert isinstance(graph.nodes["1"], nir.NIRGraph)
    model = nspec_nir.read(via_file(graph, tmp_path))
    assert 5 < np.sum(spk) < np.size(spk) - 5
    for backend in BACKENDS:
        np.testing.assert_array_equal(model.run(inputs={"input": x}, backend=backend)["output"], np.array(spk))
    assert "nir.StepDelay" in nspec_nir.to_spec(graph)


def euler(x, f, state0):
    """Forward Euler at dt = 1e-4 s: the state after each step and what f's output reads."""
    s, out = state0, []
    for t in range(len(x)):
        s, y = f(s, x[t])
        out.append(y)
    return np.array(out)


DT = 1e-4
RNG = np.random.default_rng(5)
TAU = np.array([2e-3, 5e-4, 1e-3], np.float32)
R = np.array([10.0, 3.0, 8.0], np.float32)
LEAK = np.array([0.1, -0.2, 0.0], np.float32)
THR = np.array([1.0, 0.5, 0.8], np.float32)
RESET = np.array([0.0, -0.1, 0.2], np.float32)


def lif_step(s, x):
    v = s + DT / TAU * (LEAK - s + R * x)
    z = (v > THR).astype(np.float32)
    return np.where(z > 0, RESET, v), z


PRIMITIVES = {
    "LIF": (nir.LIF(tau=TAU, r=R, v_leak=LEAK, v_threshold=THR, v_reset=RESET), lif_step),
    "IF": (nir.IF(r=R * 100, v_threshold=THR, v_reset=RESET),
           lambda s, x: (lambda v: (np.where(v > THR, RESET, v), (v > THR).astype(np.float32)))(s + DT * R * 100 * x)),
    "LI": (nir.LI(tau=TAU, r=R, v_leak=LEAK), lambda s, x: (lambda v: (v, v))(s + DT / TAU * (LEAK - s + R * x))),
    "I": (nir.I(r=R * 100), lambda s, x: (lambda v: (v, v))(s + DT * R * 100 * x)),
    "Threshold": (nir.Threshold(threshold=THR), lambda s, x: (s, (x > THR).astype(np.float32))),
    "Scale": (nir.Scale(scale=R), lambda s, x: (s, R * x)),
    "Linear": (nir.Linear(weight=np.eye(3, dtype=np.float32)[::-1] * 2), lambda s, x: (s, 2 * x[::-1])),
    "Affine": (nir.Affine(weight=np.eye(3, dtype=np.float32)[::-1] * 2, bias=LEAK),
               lambda s, x: (s, 2 * x[::-1] + LEAK)),
    "CubaLIF": (nir.CubaLIF(tau_syn=TAU * 2, tau_mem=TAU, r=R, v_leak=LEAK, v_threshold=THR, v_reset=RESET,
                            w_in=np.float32(2.0) * np.ones(3, np.float32)),
                lambda s, x: (lambda i: (lambda v: ((i, np.where(v > THR, RESET, v)), (v > THR).astype(np.float32)))(
                    s[1] + DT / TAU * (LEAK - s[1] + R * i)))(s[0] + DT / (TAU * 2) * (2 * x - s[0]))),
}


@pytest.mark.parametrize("name", list(PRIMITIVES))
def test_each_primitive_follows_nirs_equations(name):
    node, step = PRIMITIVES[name]
    graph = nir.NIRGraph(nodes={"input": nir.Input(input_type=np.array([3])), "node": node,
                                "output": nir.Output(output_type=np.array([3]))},
                         edges=[("input", "node"), ("node", "output")])
    x = RNG.normal(0.5, 1.0, size=(40, 3)).astype(np.float32)
    expected = euler(x, step, (np.zeros(3), np.zeros(3)) if name == "CubaLIF" else np.zeros(3, np.float32))
    got = nspec_nir.read(graph).run(inputs={"input": x})["output"]
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)
    if name in ("LIF", "IF", "CubaLIF", "Threshold"):
        assert 0 < got.sum() < got.size


def test_flatten_and_scalar_parameters():
    # a [2, 3] input flattened to 6, then a LIF whose scalar parameters broadcast over the 6 neurons
    graph = nir.NIRGraph(nodes={"input": nir.Input(input_type=np.array([2, 3])),
                                "flat": nir.Flatten(input_type={"input": np.array([2, 3])}, start_dim=0, end_dim=-1),
                                "lif": nir.LIF(tau=np.array(1e-3), r=np.array(10.0), v_leak=np.array(0.0),
                                               v_threshold=np.array(1.0), v_reset=np.array(0.0)),
                                "output": nir.Output(output_type=np.array([6]))},
                         edges=[("input", "flat"), ("flat", "lif"), ("lif", "output")], type_check=False)
    x = RNG.normal(1.0, 1.0, size=(30, 2, 3)).astype(np.float32)
    tau, r = 1e-3, 10.0
    expected = euler(x.reshape(30, 6), lambda s, u: (lambda v: (np.where(v > 1, 0, v), (v > 1).astype(np.float32)))(
        s + DT / tau * (-s + r * u)), np.zeros(6, np.float32))
    np.testing.assert_array_equal(nspec_nir.read(graph).run(inputs={"input": x})["output"], expected)


def test_dt_and_method_are_the_users():
    node, _ = PRIMITIVES["LI"]
    graph = nir.NIRGraph(nodes={"input": nir.Input(input_type=np.array([3])), "li": node,
                                "output": nir.Output(output_type=np.array([3]))},
                         edges=[("input", "li"), ("li", "output")])
    x = np.ones((20, 3), np.float32)
    exact = nspec_nir.read(graph, dt="0.05 ms", method="exp_euler").run(inputs={"input": x})["output"]
    t = np.arange(1, 21)[:, None] * 5e-5
    np.testing.assert_allclose(exact, LEAK + R + (0 - LEAK - R) * np.exp(-t / TAU), rtol=1e-4, atol=1e-5)
    assert "dt = 5e-05 s" in nspec_nir.to_spec(graph, dt=5e-5)


def test_export_round_trip(extract, tmp_path):
    torch.manual_seed(3)
    fc = torch.nn.Linear(3, 4)
    rlif = snn.RLeaky(beta=per_neuron([0.9, 0.8, 0.85, 0.95]), threshold=per_neuron([1.0, 0.7, 1.0, 1.3]),
                      linear_features=4, reset_mechanism="zero", reset_delay=False)
    syn = snn.Synaptic(alpha=per_neuron([0.5] * 2), beta=per_neuron([0.9] * 2), threshold=per_neuron([0.5] * 2),
                       reset_mechanism="zero", reset_delay=False)
    fc2 = torch.nn.Linear(4, 2)
    model = nspec_nir.read(sequential_graph([fc, rlif, fc2, syn], extract, 3, 2))
    x = inputs(3, seed=3)
    out = model.run(inputs={"input": x})["output"]
    assert out.sum() > 0
    path = tmp_path / "again.nir"
    nspec_nir.write(model, path)
    again = nspec_nir.read(path)
    np.testing.assert_array_equal(again.run(inputs={"input": x})["output"], out)
    assert isinstance(nir.read(str(path)).nodes["n1"], nir.NIRGraph)


def test_export_refuses_what_nir_cannot_say(tmp_path):
    spec = tmp_path / "lstm.nspec"
    spec.write_text('from "std/layers.nspec" import LSTMCell\nimport "std/nir.nspec" as nir\n'
                    "composite Net {\n  in x: f32[2]\n  out y: f32[3]\n  box cell: LSTMCell(input_size = 2, "
                    "hidden_size = 3)\n  wire x -> cell.x\n  wire cell.h -> y\n}\nsimulate Net for 1 s, dt = 1 s\n")
    with pytest.raises(NspecError) as err:
        nspec_nir.to_nir(nspec.load(spec))
    text = str(err.value)
    assert "lstm.nspec:6:3: error: box 'cell' is a LSTMCell, which NIR cannot express" in text
    assert "^" in text


def test_unsupported_primitive_is_named():
    graph = nir.NIRGraph(nodes={"input": nir.Input(input_type=np.array([1, 4, 4])),
                                "conv": nir.Conv2d(input_shape=(4, 4), weight=np.ones((2, 1, 3, 3)), stride=1,
                                                   padding=0, dilation=1, groups=1, bias=np.zeros(2)),
                                "output": nir.Output(output_type=np.array([2, 2, 2]))},
                         edges=[("input", "conv"), ("conv", "output")], type_check=False)
    with pytest.raises(NirError, match=r"NIR node 'conv': nspec cannot import the NIR primitive Conv2d"):
        nspec_nir.read(graph)


def test_malformed_graphs_and_files(tmp_path):
    graph = nir.NIRGraph(nodes={"input": nir.Input(input_type=np.array([2])),
                                "fc": nir.Linear(weight=np.ones((2, 2))),
                                "output": nir.Output(output_type=np.array([2]))},
                         edges=[("input", "fc"), ("fc", "output")])
    graph.edges.append(("fc", "nowhere"))
    with pytest.raises(NirError, match=r"'nowhere' is not a node of the graph"):
        nspec_nir.to_spec(graph)
    loop = nir.NIRGraph(nodes={"input": nir.Input(input_type=np.array([2])), "a": nir.Linear(weight=np.eye(2)),
                               "b": nir.Scale(scale=np.ones(2)), "output": nir.Output(output_type=np.array([2]))},
                        edges=[("input", "a"), ("a", "b"), ("b", "a"), ("b", "output")], type_check=False)
    with pytest.raises(NirError, match=r"NIR node '(a|b)': the loop .* passes through no neuron"):
        nspec_nir.to_spec(loop)
    with pytest.raises(NirError, match=r"missing\.nir: no such NIR file"):
        nspec_nir.read(tmp_path / "missing.nir")
    junk = tmp_path / "junk.nir"
    junk.write_text("not hdf5")
    with pytest.raises(NirError, match=r"junk\.nir: not a readable NIR file"):
        nspec_nir.read(junk)



def test_cli_import_then_run(tmp_path):
    from nspec.cli import main

    node, step = PRIMITIVES["LIF"]
    graph = nir.NIRGraph(nodes={"input": nir.Input(input_type=np.array([3])), "lif": node,
                                "output": nir.Output(output_type=np.array([3]))},
                         edges=[("input", "lif"), ("lif", "output")])
    path = via_file(graph, tmp_path)
    assert main(["import", str(path), "-o", str(tmp_path / "net.nspec")]) == 0
    x = RNG.normal(0.5, 1.0, size=(1, 40, 3)).astype(np.float32)
    np.savez(tmp_path / "in.npz", input=x)
    assert main(["run", str(tmp_path / "net.nspec"), "--weights", str(tmp_path / "net.weights.safetensors"),
                 "--inputs", str(tmp_path / "in.npz"), "--output", str(tmp_path / "out.npz"), "-q"]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "out.npz")["output"][0], euler(x[0], step, np.zeros(3, np.float32)))
    assert main(["import", str(tmp_path / "missing.nir")]) == 1


# ---------------------------------------------------------------- nspec -> NIR -> snnTorch
FEEDFORWARD = """\
import "std/nir.nspec" as nir
composite Net {
  in input: f32[3]
  out output: f32[4]
  box fc1: nir.Affine(n_in = 3, n_out = 6)
  box lif1: nir.LIF(n = 6)
  box fc2: nir.Linear(n_in = 6, n_out = 4)
  box lif2: nir.LIF(n = 4)
  wire input -> fc1.x
  wire fc1.y -> lif1.x
  wire lif1.y -> fc2.x
  wire fc2.y -> lif2.x
  wire lif2.y -> output
}
simulate Net for 6 ms, dt = 0.1 ms
"""


def snntorch_import(graph):
    """snnTorch's ``import_from_nir`` without nirtorch: its own RNN rewrite and node map
    (``_nir_to_snntorch_module(node, init_hidden=True)``), run as nirtorch's ``nir_to_torch`` runs a
    graph without loops: each node, in topological order, on the sum of its predecessors' outputs.

    ``import_from_nir`` itself ends in ``nirtorch.nir_to_torch(graph, node_map)``, nirtorch's graph
    executor, which these machines cannot install (it pulls a CUDA torch), so it cannot run here;
    only the module-level ``import nirtorch`` of ``snntorch.import_nir`` is stubbed, for the two
    functions above that never touch it."""
    with without_nirtorch():
        from snntorch.import_nir import _nir_to_snntorch_module, _replace_rnn_subgraph_with_nirgraph
    graph = _replace_rnn_subgraph_with_nirgraph(graph)
    modules = {n: _nir_to_snntorch_module(node, init_hidden=True) for n, node in graph.nodes.items()}
    order, preds = [], {n: [a for a, b in graph.edges if b == n] for n in graph.nodes}
    while len(order) < len(graph.nodes):
        order += [n for n in graph.nodes if n not in order and all(p in order for p in preds[n])]

    def run(x):  # x: [T, n_in] -> spikes [T, n_out]
        out = []
        with torch.no_grad():
            for t in range(len(x)):
                vals = {}
                for n in order:
                    if isinstance(graph.nodes[n], nir.Input):
                        vals[n] = torch.from_numpy(x[t])
                    else:
                        total = sum(vals[p] for p in preds[n])
                        vals[n] = total if modules[n] is None else modules[n](total)
                out.append(next(vals[n] for n in order if isinstance(graph.nodes[n], nir.Output)).numpy().copy())
        return np.array(out)
    return run


def test_an_nspec_exported_graph_runs_in_snntorch_as_in_nspec(tmp_path):
    """`nspec compile --target nir` of a spec of std/nir.nspec boxes, read by snnTorch's import code:
    the same spikes.  snnTorch imports reset-to-zero neurons at dt = 1e-4 s with v_leak = 0 and one
    threshold per layer, and scales the threshold unless r dt / tau = 1: the weights say so."""
    from safetensors.numpy import save_file

    from nspec.cli import main

    rng = np.random.default_rng(7)
    spec = tmp_path / "net.nspec"
    spec.write_text(FEEDFORWARD)
    weights = {"fc1/weight": rng.normal(0, 0.8, (6, 3)), "fc1/bias": rng.normal(0.1, 0.1, 6),
               "fc2/weight": rng.normal(0.3, 0.8, (4, 6))}
    for box, n, thr in (("lif1", 6, 1.0), ("lif2", 4, 0.7)):
        tau = rng.uniform(5e-4, 3e-3, n)
        weights.update({f"{box}/P/tau": tau, f"{box}/P/r": tau / 1e-4, f"{box}/P/v_leak": np.zeros(n),
                        f"{box}/P/v_threshold": np.full(n, thr), f"{box}/P/v_reset": np.zeros(n)})
    save_file({k: np.asarray(v, np.float32) for k, v in weights.items()}, str(tmp_path / "w.safetensors"))
    assert main(["compile", str(spec), "--target", "nir", "--weights", str(tmp_path / "w.safetensors"),
                 "-o", str(tmp_path / "net.nir")]) == 0
    x = inputs(3, seed=4)
    model = nspec.load(spec, weights=tmp_path / "w.safetensors")
    want = model.run(inputs={"input": x})["output"]
    assert 5 < want.sum() < want.size - 5
    got = snntorch_import(nir.read(str(tmp_path / "net.nir")))(x)
    np.testing.assert_array_equal(got, want)


def test_delay_is_whole_steps_both_ways(tmp_path):
    """NIR's Delay y(t) = x(t - delay) at k whole steps of dt; a loop closes through it alone."""
    graph = nir.NIRGraph(nodes={"input": nir.Input(input_type=np.array([2])), "d": nir.Delay(delay=np.full(2, 3e-4)),
                                "output": nir.Output(output_type=np.array([2]))},
                         edges=[("input", "d"), ("d", "output")])
    x = RNG.normal(size=(8, 2)).astype(np.float32)
    model = nspec_nir.read(graph)
    assert "nir.Delay(n = 2, k = 3)" in nspec_nir.to_spec(graph)
    want = np.concatenate([np.zeros((3, 2), np.float32), x[:-3]])
    np.testing.assert_array_equal(model.run(inputs={"input": x})["output"], want)
    nspec_nir.write(model, tmp_path / "d.nir")
    back = nir.read(str(tmp_path / "d.nir"))
    np.testing.assert_allclose(back.nodes["d"].delay, [3e-4, 3e-4], rtol=1e-6)
    np.testing.assert_array_equal(nspec_nir.read(back).run(inputs={"input": x})["output"], want)
    # at dt = 0.05 ms the same delay is 6 steps
    assert "nir.Delay(n = 2, k = 6)" in nspec_nir.to_spec(graph, dt="0.05 ms")
    graph.nodes["d"] = nir.Delay(delay=np.zeros(2))  # no delay: the identity
    np.testing.assert_array_equal(nspec_nir.read(graph).run(inputs={"input": x})["output"], x)
    loop = nir.NIRGraph(nodes={"input": nir.Input(input_type=np.array([2])), "s": nir.Scale(scale=np.full(2, 0.5)),
                               "d": nir.Delay(delay=np.full(2, 1e-4)), "output": nir.Output(output_type=np.array([2]))},
                        edges=[("input", "s"), ("s", "d"), ("d", "s"), ("s", "output")])
    out = nspec_nir.read(loop).run(inputs={"input": np.ones((4, 2), np.float32)})["output"][:, 0]
    np.testing.assert_allclose(out, [0.5, 0.75, 0.875, 0.9375])   # s[t] = (1 + s[t - 1]) / 2


@pytest.mark.parametrize("delay, message", [
    ([3e-4, 2e-4], r"NIR node 'd': Delay with different delays per element \[0.0002, 0.0003\] s"),
    ([2.5e-4, 2.5e-4], r"NIR node 'd': Delay of 0.00025 s is not a whole number of steps of dt = 0.0001 s"),
])
def test_delay_that_is_no_whole_step_is_refused(delay, message):
    graph = nir.NIRGraph(nodes={"input": nir.Input(input_type=np.array([2])), "d": nir.Delay(delay=np.array(delay)),
                                "output": nir.Output(output_type=np.array([2]))},
                         edges=[("input", "d"), ("d", "output")])
    with pytest.raises(NirError, match=message):
        nspec_nir.read(graph)

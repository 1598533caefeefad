"""ONNX exports keep data-bound dimensions symbolic (issue #13): a file exported at one value of a
``hyper n: int = auto`` dimension runs in plain onnxruntime at others, with the outputs of nspec's
reference run compiled for those values.

``compiler/symbolic_dims.py`` finds which integers of the program are such sizes by compiling the
spec again at other values; these tests export once and compare with reference runs compiled
afresh at each size (and, for CTM, with the NumPy oracle of ``tests/seed_oracles.py``).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import nspec
import seed_oracles as oracle
from nspec.cli import main
from nspec.compiler.driver import compile_file
from nspec.compiler.symbolic_dims import Dim, Pattern, analyse, fit, pattern_of
from nspec.lowering.to_onnx import NOT_ANALYSED, SymbolicDimWarning, run_model

ROOT = Path(__file__).resolve().parent.parent
CTM = ROOT / "specs" / "seeds" / "ctm.nspec"
CONFORMANCE = Path(__file__).parent / "conformance"
TOL = 1e-5

# n tokens of c features; d = 3 is a fixed size equal to c's default (the collision: W is [d, c] = [3, 3],
# and only its second axis follows c).  The outputs read c and n as shapes, a flattened product, a
# broadcast, a value (sum / n), an index (the last token, x[n - 1]) and a state of c values.
FLAT = """\
hyper d: int = 3
hyper n: int = auto(4)
hyper c: int = auto(3)

system S {
  in x: f32[n, c]
  out y: f32[d]
  out flat: f32[n * c]
  out avg: f32[c]
  out grid: f32[n, 2, c]
  out seen: f32[c]
  param W: f32[d, c] = 0.5 key "proj.weight"
  state acc: f32[c] = 0
  next acc = acc + x[n - 1]
  seen = acc
  flat = reshape(x, [n * c])
  avg = sum(x, axis = 0) / n
  grid = broadcast(reshape(x, [n, 1, c]), [n, 2, c])
  y = sum(linear(x, W, zeros([d])), axis = 0)
}

simulate S for 1 s, dt = 1 s
"""

# n sizes a constant array computed when the spec compiles (arange), so it cannot follow the data; c can.
FIXED_N = """\
hyper n: int = auto(3)
hyper c: int = auto(2)

system S {
  in x: f32[n, c]
  out y: f32[n, c]
  y = x * reshape(arange(n), [n, 1])
}

simulate S for 1 s, dt = 1 s
"""

# the body of a `for` over range(n) is unrolled: the program's structure changes with n
UNROLLED = """\
hyper n: int = auto(3)

system S {
  in x: f32[n]
  out y: f32
  let acc[0] = 0.0
  for i in range(n) {
    let acc[i + 1] = acc[i] + x[i]
  }
  y = acc[n]
}

simulate S for 1 s, dt = 1 s
"""


def write(tmp_path, name, text) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def exported(model, path) -> tuple[onnx.ModelProto, list]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SymbolicDimWarning)
        model.export_onnx(path)
    return onnx.load(str(path)), [w for w in caught if issubclass(w.category, SymbolicDimWarning)]


def dims_of(values, name) -> list:
    (value,) = [v for v in values if v.name == name]
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def props(model) -> dict:
    return {p.key: p.value for p in model.metadata_props}


def run_onnx(model: onnx.ModelProto, feeds: dict, steps: int = 1) -> dict:
    """The file in plain onnxruntime (no nspec code involved): outputs by name, ``output/`` dropped."""
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {**feeds, "@steps": np.asarray(steps, np.int64)})
    return {o.name.removeprefix("output/"): v for o, v in zip(sess.get_outputs(), got)}


def max_diff(got: dict, want: dict) -> dict:
    out = {}
    for name, value in want.items():
        assert got[name].shape == value.shape, (name, got[name].shape, value.shape)
        out[name] = float(np.max(np.abs(got[name] - value)))
    return out


# ---------------------------------------------------------------- sizes as polynomials
def test_a_fit_recovers_products_and_rejects_what_is_not_multilinear():
    lows = {"n": 10, "c": 20}
    points = [{"n": 10, "c": 20}, {"n": 10, "c": 21}, {"n": 11, "c": 20}, {"n": 11, "c": 21},
              {"n": 12, "c": 23}, {"n": 14, "c": 26}]
    n, c = Dim.of("n"), Dim.of("c")
    assert fit(points, [p["n"] * p["c"] + 3 for p in points], ["n", "c"], lows) == n * c + 3
    assert fit(points, [2 * p["n"] for p in points], ["n", "c"], lows) == 2 * n
    assert fit(points, [7 for _ in points], ["n", "c"], lows) == 7
    assert fit(points, [p["n"] // 2 for p in points], ["n", "c"], lows) is None     # a floor
    assert fit(points, [p["n"] ** 2 for p in points], ["n", "c"], lows) is None     # degree 2 in n
    assert str(n * c + 2 * n - 1) == "-1+2*n+c*n"
    with pytest.raises(TypeError, match="bound by data"):
        int(n)


def test_constant_arrays_sized_by_the_data_are_recognised_only_as_whole_families():
    sizes = (3, 4, 6)
    assert pattern_of([np.full(n, 2.5, np.float32) for n in sizes]) == Pattern("full", 2.5)
    assert pattern_of([np.arange(n) for n in sizes]) == Pattern("arange")
    masks = [np.arange(n)[:, None] >= np.arange(n)[None, :] for n in sizes]
    assert pattern_of(masks) == Pattern("tril", k=0)
    assert pattern_of([np.triu(np.ones((n, n), np.float32), 1) for n in sizes]) == Pattern("triu", k=1)
    assert pattern_of([np.arange(n) * 2 for n in sizes]) is None                 # not a family built here
    assert pattern_of([np.arange(3), np.arange(4), np.arange(6) + 1]) is None     # one member is not
    assert pattern_of([np.arange(n).reshape(n, 1) for n in sizes]) is None


# ---------------------------------------------------------------- CTM: exported at (6, 7), run at others
@pytest.fixture(scope="module")
def ctm_export(tmp_path_factory):
    """CTM exported once, at in_channels 6 and n_tokens 7, with ctm_tiny's constructor arguments and the
    oracle's weights for width 6 stored in the file."""
    config = json.loads((CONFORMANCE / "ctm_tiny.json").read_text())["config"]
    weights6 = oracle.ctm_state_dict(config, 6, np.random.default_rng(6))
    model = nspec.load(CTM, weights=weights6, **config)
    assert model.program.var("x").shape == (6, 7)
    onnx_model, caught = exported(model, tmp_path_factory.mktemp("ctm") / "ctm.onnx")
    return config, weights6, onnx_model, caught


def test_the_ctm_export_names_what_follows_the_data(ctm_export):
    _, _, model, caught = ctm_export
    assert caught == []
    onnx.checker.check_model(model, full_check=True)
    graph = model.graph
    assert dims_of(graph.input, "x") == ["B", "T", "in_channels", "n_tokens"]
    assert dims_of(graph.input, "kv_weight") == [8, "in_channels"]
    assert dims_of(graph.input, "kv_bias") == [8]        # its initial value reads in_channels: fed too
    assert "q_weight" not in [i.name for i in graph.input]  # [8, 8]: a constant of the file
    recorded = json.loads(props(model)["nspec.data_dims"])
    assert {k: (v["value"], v["symbolic"]) for k, v in recorded.items()} == {"in_channels": (6, True),
                                                                            "n_tokens": (7, True)}
    assert recorded["in_channels"]["source"].startswith("data: the weights entry 'kv_proj.0.weight' of shape [8, 6]")
    assert json.loads(props(model)["nspec.data_dim_params"]) == ["kv_weight", "kv_bias"]


@pytest.mark.parametrize("channels, tokens", [(5, 11), (6, 7), (9, 3)])
def test_the_ctm_export_runs_at_other_sizes_as_nspec_compiled_for_them(channels, tokens, ctm_export):
    config, weights6, model, _ = ctm_export
    rng = np.random.default_rng(100 * channels + tokens)
    # a checkpoint of this width: its kv_proj.0 from the oracle, every other entry the file's own
    own = oracle.ctm_state_dict(config, channels, rng)
    weights = {k: own[k] if k.startswith("kv_proj.0.") else v for k, v in weights6.items()}
    x = rng.normal(size=(2, channels, tokens)).astype(np.float32)

    reference = nspec.load(CTM, weights=weights, **config)
    want = reference.run({"x": x[:, None]}, batch=2)
    assert reference.program.var("x").shape == (channels, tokens)   # compiled for these sizes
    params, state = reference.initial(2, None)
    got = run_onnx(model, {"x": x[:, None], "kv_weight": params["kv_weight"], "kv_bias": params["kv_bias"], **state})
    diffs = max_diff(got, want)
    print(f"CTM ({channels}, {tokens}): max |onnx - reference| {diffs}")
    assert max(diffs.values()) <= TOL
    # and against the independent NumPy oracle of the authors' forward pass
    predictions, certainties = oracle.ctm_forward(weights, config, x)
    assert float(np.max(np.abs(got["predictions"][:, 0] - predictions))) <= 1e-4
    assert float(np.max(np.abs(got["certainties"][:, 0] - certainties))) <= 1e-4


def test_ctm_sizes_equal_to_fixed_ones_stay_apart(tmp_path):
    """Exported at in_channels 8 = d_input and n_tokens 2 = heads: only the data-bound axes follow the data
    (the [n_tokens, heads, head_dim] reshape = [2, 2, 4] keeps its heads), at (5, 11) and (8, 2)."""
    config = json.loads((CONFORMANCE / "ctm_tiny.json").read_text())["config"]
    assert config["d_input"] == 8 and config["heads"] == 2
    weights8 = oracle.ctm_state_dict(config, 8, np.random.default_rng(8))
    model = nspec.load(CTM, weights=weights8, n_tokens=2, **config)
    onnx_model, caught = exported(model, tmp_path / "ctm.onnx")
    assert caught == []
    assert dims_of(onnx_model.graph.input, "kv_weight") == [8, "in_channels"]
    for channels, tokens in [(5, 11), (8, 2)]:
        rng = np.random.default_rng(channels * tokens)
        own = oracle.ctm_state_dict(config, channels, rng)
        weights = {k: own[k] if k.startswith("kv_proj.0.") else v for k, v in weights8.items()}
        x = rng.normal(size=(2, channels, tokens)).astype(np.float32)
        reference = nspec.load(CTM, weights=weights, **config)
        want = reference.run({"x": x[:, None]}, batch=2)
        params, state = reference.initial(2, None)
        got = run_onnx(onnx_model, {"x": x[:, None], "kv_weight": params["kv_weight"], "kv_bias": params["kv_bias"],
                                    **state})
        diffs = max_diff(got, want)
        print(f"CTM exported at (8, 2), run at ({channels}, {tokens}): {diffs}")
        assert max(diffs.values()) <= TOL


# ---------------------------------------------------------------- a small spec: products, values, collisions
@pytest.mark.parametrize("mode", ["whole-run", "step"])
def test_a_small_spec_runs_at_other_sizes(mode, tmp_path):
    spec = write(tmp_path, "flat.nspec", FLAT)
    model = nspec.load(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SymbolicDimWarning)
        model.export_onnx(tmp_path / "flat.onnx", mode=mode)
    onnx_model = onnx.load(str(tmp_path / "flat.onnx"))
    onnx.checker.check_model(onnx_model, full_check=True)
    lead = ["B", "T"] if mode == "whole-run" else ["B"]
    assert dims_of(onnx_model.graph.input, "acc") == ["B", "c"]
    assert dims_of(onnx_model.graph.input, "x") == lead + ["n", "c"]
    assert dims_of(onnx_model.graph.input, "W") == [3, "c"]            # d = 3 = c: only c's axis is named
    out_lead = ["B", "S"] if mode == "whole-run" else ["B"]
    assert dims_of(onnx_model.graph.output, "output/y") == out_lead + [3]
    assert dims_of(onnx_model.graph.output, "output/flat") == out_lead + ["c*n"]
    assert dims_of(onnx_model.graph.output, "output/grid") == out_lead + ["n", 2, "c"]
    sess = ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    for n, c in [(4, 3), (7, 5), (2, 3), (3, 9)]:
        rng = np.random.default_rng(n * 10 + c)
        W = rng.normal(size=(3, c)).astype(np.float32)
        x = rng.normal(size=(2, 1, n, c)).astype(np.float32)
        reference = nspec.load(spec, weights={"proj.weight": W}, inputs={"x": x})
        assert reference.program.var("x").shape == (n, c)
        acc = rng.normal(size=(2, c)).astype(np.float32)   # a state of c values: both runs start from it
        reference.run({"x": x}, batch=2)                     # a state of batch 2 to replace
        reference.set_state({"acc": acc})
        want = reference.run({"x": x}, batch=2, resume=True)
        feeds = {"W": W, "x": x if mode == "whole-run" else x[:, 0], "acc": acc}
        if mode == "whole-run":
            feeds["@steps"] = np.asarray(1, np.int64)
        got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
        got = {k: got[f"output/{k}"] if mode == "whole-run" else got[f"output/{k}"][:, None] for k in want}
        next_acc = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))["next/acc"]
        np.testing.assert_allclose(next_acc, acc + x[:, 0, -1], atol=TOL)
        diffs = max_diff(got, want)
        print(f"flat.nspec {mode} at (n={n}, c={c}): {diffs}")
        assert max(diffs.values()) <= TOL


# ---------------------------------------------------------------- what cannot follow the data, and says so
def test_a_dimension_that_sizes_a_compiled_constant_stays_fixed_and_says_where(tmp_path):
    spec = write(tmp_path, "fixed.nspec", FIXED_N)
    onnx_model, caught = exported(nspec.load(spec), tmp_path / "fixed.onnx")
    (warning,) = caught
    message = str(warning.message)
    assert message.startswith(f"the ONNX export keeps 'n' at 3: {spec}:7:")
    assert "an array computed when the spec compiles" in message
    recorded = json.loads(props(onnx_model)["nspec.data_dims"])
    assert recorded["n"]["symbolic"] is False and recorded["n"]["fixed_by"] == message.split("at 3: ", 1)[1]
    assert recorded["c"] == {"value": 2, "source": "the default", "symbolic": True}
    assert dims_of(onnx_model.graph.input, "x") == ["B", "T", 3, "c"]
    # c follows the data ...
    x = np.random.default_rng(1).normal(size=(2, 1, 3, 7)).astype(np.float32)
    want = nspec.load(spec, inputs={"x": x}).run({"x": x}, batch=2)
    assert max(max_diff(run_onnx(onnx_model, {"x": x}), want).values()) <= TOL
    # ... and n is refused at the input, by name, rather than failing inside the graph
    with pytest.raises(Exception, match=r"(?s)invalid dimensions for input: x .*index: 2 Got: 4 Expected: 3"):
        run_onnx(onnx_model, {"x": np.zeros((2, 1, 4, 2), np.float32)})


def test_an_unrolled_loop_over_a_dimension_stays_fixed_and_says_where(tmp_path):
    spec = write(tmp_path, "unrolled.nspec", UNROLLED)
    onnx_model, caught = exported(nspec.load(spec), tmp_path / "unrolled.onnx")
    (warning,) = caught
    assert str(warning.message).startswith(f"the ONNX export keeps 'n' at 3: {spec}:")
    assert "another number of operations" in str(warning.message)
    assert dims_of(onnx_model.graph.input, "x") == ["B", "T", 3]


def test_nspec_compile_exports_symbolic_dimensions_and_warns_of_fixed_ones(tmp_path, capsys):
    flat, fixed = write(tmp_path, "flat.nspec", FLAT), write(tmp_path, "fixed.nspec", FIXED_N)
    assert main(["compile", str(flat), "--target", "onnx", "-o", str(tmp_path / "flat.onnx")]) == 0
    assert "warning" not in capsys.readouterr().err
    assert dims_of(onnx.load(str(tmp_path / "flat.onnx")).graph.input, "x") == ["B", "T", "n", "c"]
    assert main(["compile", str(fixed), "--target", "onnx", "-o", str(tmp_path / "fixed.onnx")]) == 0
    err = capsys.readouterr().err
    assert f"warning: the ONNX export keeps 'n' at 3: {fixed}:7:" in err and "Traceback" not in err


def test_without_recompiling_the_graph_is_for_the_compiled_sizes_and_says_so(tmp_path):
    program = compile_file(write(tmp_path, "flat.nspec", FLAT), {})
    model = run_model(program, 1)
    assert dims_of(model.graph.input, "x") == ["B", "T", 4, 3]
    recorded = json.loads(props(model)["nspec.data_dims"])
    assert recorded["n"] == {"value": 4, "source": "the default", "symbolic": False, "fixed_by": NOT_ANALYSED}


def test_the_analysis_lines_up_only_what_changes(tmp_path):
    """Which integers of the program are sizes: W's [d, c] at d = c = 3 gives (3, c), and the flattened
    reshape's target is c * n."""
    path = write(tmp_path, "flat.nspec", FLAT)
    symbolic = analyse(compile_file(path, {}), lambda dims: compile_file(path, dims))
    assert symbolic.fixed == {}
    assert symbolic.program.var("W").shape == (3, Dim.of("c"))
    assert symbolic.program.var("flat").shape == (Dim.of("c") * Dim.of("n"),)
    assert symbolic.sources == {"n": ("x", 0), "c": ("x", 1)}
    assert symbolic.at(symbolic.program.var("flat").shape) == (12,)


# n must be even (the reshape splits it in two): the spec does not compile at the odd values the analysis
# tries; c does not mind
HALVED = """\
hyper n: int = auto(4)
hyper c: int = auto(2)

system S {
  in x: f32[n]
  in z: f32[c]
  out y: f32[2]
  out w: f32[c]
  y = reshape(x, [2, int(n / 2)])[:, 0]
  w = 2 * z
}

simulate S for 1 s, dt = 1 s
"""


def test_a_dimension_the_spec_does_not_compile_at_stays_fixed_and_says_why(tmp_path):
    spec = write(tmp_path, "halved.nspec", HALVED)
    onnx_model, caught = exported(nspec.load(spec), tmp_path / "halved.onnx")
    (warning,) = caught
    assert str(warning.message).startswith(f"the ONNX export keeps 'n' at 4: the spec does not compile at other "
                                           f"values of 'n' ({spec}:9:")
    assert "cannot reshape" in str(warning.message)
    assert dims_of(onnx_model.graph.input, "x") == ["B", "T", 4]
    assert dims_of(onnx_model.graph.input, "z") == ["B", "T", "c"]
    z = np.arange(10, dtype=np.float32).reshape(2, 1, 5)
    got = run_onnx(onnx_model, {"x": np.ones((2, 1, 4), np.float32), "z": z})
    np.testing.assert_array_equal(got["w"], 2 * z)


def test_the_onnx_lowering_names_the_nodes_it_cannot_size_at_run_time():
    from nspec.compiler import ir
    from nspec.compiler.ops import DrawAttrs, LoopAttrs, Op
    from nspec.lowering.onnx_rules import symbolic_problem

    n = Dim.of("n")
    draw = ir.Node(Op.UNIFORM, (0, 1), ir.DType.f32, (n,), DrawAttrs(0, 1, (n,)))
    loop = ir.Node(Op.LOOP, (), ir.DType.f32, (), LoopAttrs(ir.Graph((), ()), n))
    table = ir.Node(Op.CONST, (), ir.DType.f32, (n,), (("value", np.zeros(3, np.float32)),))
    value = ir.Node(Op.CONST, (), ir.DType.f32, (), (("value", np.float32(0)),))
    assert "random draw" in symbolic_problem(draw)
    assert "iteration count" in symbolic_problem(loop)
    assert "constant array" in symbolic_problem(table)
    assert symbolic_problem(ir.Node(Op.ADD, (0, 1), ir.DType.f32, (n,))) is None
    assert symbolic_problem(value) is None


def test_the_data_dims_example_runs_at_other_sizes(tmp_path):
    """docs/language.md's example, exported at its defaults (n = 4 tokens, c = 3 features)."""
    example = ROOT / "specs" / "examples" / "data_dims.nspec"
    onnx_model, caught = exported(nspec.load(example), tmp_path / "pool.onnx")
    assert caught == []
    for n, c in [(10, 5), (2, 7)]:
        rng = np.random.default_rng(n + c)
        W, x = rng.normal(size=(2, c)).astype(np.float32), rng.normal(size=(2, 1, n, c)).astype(np.float32)
        want = nspec.load(example, weights={"proj.weight": W}, inputs={"x": x}).run({"x": x}, batch=2)
        diffs = max_diff(run_onnx(onnx_model, {"x": x, "W": W}), want)
        print(f"data_dims.nspec at (n={n}, c={c}): {diffs}")
        assert max(diffs.values()) <= TOL


@pytest.mark.parametrize("seed", ["softmax_attention", "linear_attention_parallel"])
def test_attention_with_a_causal_mask_runs_at_other_sequence_lengths(seed, tmp_path):
    """The mask ``arange(seq_len)[:, None] >= arange(seq_len)[None, :]`` is computed as the spec compiles;
    the export builds it at run time (a lower triangle, recognised at every compile)."""
    spec = ROOT / "specs" / "seeds" / f"{seed}.nspec"
    model = nspec.load(spec)
    onnx_model, caught = exported(model, tmp_path / f"{seed}.onnx")
    assert caught == [] and dims_of(onnx_model.graph.input, "x")[:3] == ["B", "T", "seq_len"]
    assert "Trilu" in {node.op_type for node in onnx_model.graph.node}
    for length in (9, 3, 6):
        x = np.random.default_rng(length).normal(size=(2, 1, length, model.program.var("x").shape[1]))
        x = x.astype(np.float32)
        reference = nspec.load(spec, weights=model.state_dict(), inputs={"x": x})
        assert reference.program.var("x").shape[0] == length
        diffs = max_diff(run_onnx(onnx_model, {"x": x}), reference.run({"x": x}, batch=2))
        print(f"{seed} exported at seq_len 6, run at {length}: {diffs}")
        assert max(diffs.values()) <= TOL


@pytest.mark.parametrize("seed, line, reason", [
    ("rnn", 73, "another number of operations"),           # the sequence loop, unrolled
    ("gru", 75, "another number of operations"),
])
def test_seeds_whose_sequence_length_stays_fixed_say_where(seed, line, reason, tmp_path):
    spec = ROOT / "specs" / "seeds" / f"{seed}.nspec"
    onnx_model, caught = exported(nspec.load(spec), tmp_path / f"{seed}.onnx")
    (warning,) = caught
    assert str(warning.message).startswith(f"the ONNX export keeps 'seq_len' at 6: {spec}:{line}:")
    assert reason in str(warning.message)
    assert json.loads(props(onnx_model)["nspec.data_dims"])["seq_len"]["symbolic"] is False

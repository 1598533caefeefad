"""Dimensions bound by data (``hyper n: int = auto``): bound before elaboration from the shapes of
the weights entries and input arrays whose declared shapes name them (``compiler/data_dims.py``).

Issue #13, part 2, is done when ``nspec run specs/seeds/ctm.nspec`` with the reference
constructor's arguments alone reproduces CTM checkpoints whose input width and token count differ
from the spec's defaults (6 and 7; here 5 and 11), on every backend, and ``Model.to_torch()`` loads
them with ``strict=True``.  The authors' code is not in this repository or in the conformance
folder, so that checkpoint is made at test time by the NumPy oracle of ``tests/seed_oracles.py``,
which reproduces the authors' own ``ctm_tiny`` bundle (``test_seeds.py::test_oracle_reproduces_bundle``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import nspec
import seed_oracles as oracle
from nspec.cli import main
from nspec.compiler.data_dims import DataShapes
from nspec.compiler.driver import check_files, compile_file
from nspec.dsl import ast as A
from nspec.dsl import parse
from nspec.dsl.diagnostics import NspecError

ROOT = Path(__file__).resolve().parent.parent
CTM = ROOT / "specs" / "seeds" / "ctm.nspec"
EXAMPLE = ROOT / "specs" / "examples" / "data_dims.nspec"
CONFORMANCE = Path(__file__).parent / "conformance"
BACKENDS = ("reference", "onnxruntime", "torch", "tvm")

SPEC = """\
hyper d: int = 3
hyper n: int = auto
hyper c: int = auto(4)

system S {
  in x: f32[n, c]
  out y: f32[d]
  param W: f32[d, c] = 0.5 key "proj.weight"
  for i in range(2) {
    param B[i]: f32[c] = 0 key "blocks.{i}.bias"
  }
  y = sum(linear(x + B[0] + B[1], W, zeros([d])), axis = 0)
}

simulate S for 1 s, dt = 1 s
"""
# where SPEC names its data-bound dimensions (line:col of the axis)
X_N, X_C, W_C, DECL_N = "6:13", "6:16", "8:19", "2:1"


@pytest.fixture
def spec(tmp_path) -> Path:
    path = tmp_path / "pool.nspec"
    path.write_text(SPEC)
    return path


def compiled(path, hyper=None, **data):
    return compile_file(path, hyper or {}, data=DataShapes(**data))


def error_of(path, hyper=None, **data):
    with pytest.raises(NspecError) as info:
        compiled(path, hyper, **data)
    (diag,) = info.value.diagnostics
    return diag


def dims(program) -> dict:
    return {d.name: d.value for d in program.data_dims}


# ---------------------------------------------------------------- the construct
def test_auto_parses_with_and_without_a_default():
    module, diags = parse("hyper n: int = auto\nhyper c: int = auto(6)\n", "t.nspec")
    assert not diags
    bare, with_default = module.items
    assert isinstance(bare.default, A.Auto) and bare.default.default is None
    assert isinstance(with_default.default, A.Auto) and with_default.default.default.value == 6


def test_auto_is_a_keyword_only_as_a_hyperparameter_default():
    module, diags = parse("let auto = 2\nhyper h = auto_size\nsystem S { in x: f32[auto]\n let y = auto }\n", "t.nspec")
    assert not diags
    assert module.items[1].default == A.Name(module.items[1].default.span, "auto_size")
    (port, let) = module.items[2].body
    assert port.type.shape[0].id == "auto" and let.value.id == "auto"


# ---------------------------------------------------------------- binding
def test_an_input_binds_every_axis_it_names(spec):
    program = compiled(spec, inputs={"x": (2, 5, 7)}, inputs_from="in.npz")
    assert program.var("x").shape == (5, 7) and program.var("W").shape == (3, 7)
    assert dims(program) == {"n": 5, "c": 7}
    source = {d.name: d.source for d in program.data_dims}["c"]
    assert "input 'x' of shape [2, 5, 7] in in.npz" in source and f"{spec}:{X_C}" in source


def test_a_weights_entry_binds_through_its_key_and_a_key_template(spec):
    assert dims(compiled(spec, {"n": 2}, weights={"proj.weight": (3, 9)})) == {"n": 2, "c": 9}
    assert dims(compiled(spec, {"n": 2}, weights={"blocks.1.bias": (8,)})) == {"n": 2, "c": 8}


def test_without_data_the_default_applies(spec):
    program = compiled(spec, {"n": 2})
    assert dims(program) == {"n": 2, "c": 4}
    assert {d.name: d.source for d in program.data_dims} == {"n": "the hyperparameter value", "c": "the default"}


def test_two_sources_that_disagree_are_an_error_naming_both(spec):
    diag = error_of(spec, inputs={"x": (2, 5, 7)}, weights={"proj.weight": (3, 6)}, inputs_from="in.npz",
                    weights_from="w.safetensors")
    assert f"{diag.span.line}:{diag.span.col}" == X_C
    assert diag.message.startswith("'c' is bound by two sources that disagree: ")
    assert f"7 from the input 'x' of shape [2, 5, 7] in in.npz (through the axis at {spec}:{X_C})" in diag.message
    assert (f"6 from the weights entry 'proj.weight' of shape [3, 6] in w.safetensors (through the axis at "
            f"{spec}:{W_C})") in diag.message


def test_a_value_given_as_a_hyperparameter_is_a_source_too(spec):
    assert dims(compiled(spec, {"c": 7}, inputs={"x": (1, 5, 7)})) == {"n": 5, "c": 7}
    diag = error_of(spec, {"c": 4}, inputs={"x": (1, 5, 7)})
    assert "7 from the input 'x'" in diag.message
    assert "4 from the value c=4 given as a hyperparameter" in diag.message


@pytest.mark.parametrize("given", ["abc", "2.5", 2.0, True, [3]])
def test_a_value_given_to_a_data_bound_dimension_is_an_int(given, spec):
    diag = error_of(spec, {"n": given}, inputs={"x": (1, 5, 7)})
    assert f"{diag.span.line}:{diag.span.col}" == DECL_N
    assert diag.message == f"n={given!r}: 'n' is a size bound by data, so its value is an int"


def test_no_data_for_a_bare_auto_is_an_error_saying_what_would_bind_it(spec):
    diag = error_of(spec)
    assert f"{diag.span.line}:{diag.span.col}" == DECL_N
    assert diag.message.startswith("'n' is bound by data and none was given: it is read from input 'x' "
                                   f"(the axis at {spec}:{X_N}); give the weights or inputs")


def test_an_auto_no_axis_uses_is_an_error(tmp_path):
    path = tmp_path / "unused.nspec"
    path.write_text("hyper m: int = auto(2)\nsystem S {\n  in x: f32[2 * m]\n  out y: f32[2 * m]\n  y = x\n}\n")
    diag = error_of(path)
    assert (diag.span.line, diag.span.col) == (1, 16)
    assert "no input of the run target and no keyed parameter has 'm' as an axis" in diag.message


def test_a_data_bound_dimension_is_an_int(tmp_path):
    path = tmp_path / "float.nspec"
    path.write_text("hyper n: float = auto(2)\nsystem S {\n  in x: f32[n]\n  out y: f32[n]\n  y = x\n}\n")
    diag = error_of(path)
    assert diag.message == "'n' is bound by data, so it is an int, not float"


def test_check_skips_what_needs_data_and_reports_everything_else(spec, tmp_path):
    diags, _ = check_files([spec])
    assert diags == []
    broken = tmp_path / "broken.nspec"
    broken.write_text(SPEC + "system T {\n  out z: f32\n  z = nowhere\n}\n")
    diags, _ = check_files([broken])
    assert [d.message for d in diags] == ["unknown name 'nowhere'"]


# ---------------------------------------------------------------- the command line
def test_nspec_run_binds_the_example_from_its_inputs_and_weights(tmp_path):
    """docs/language.md's example: x of 10 tokens of 5 features, proj.weight of 5 columns."""
    np.savez(tmp_path / "x.npz", x=np.ones((2, 10, 5), np.float32))
    np.savez(tmp_path / "w.npz", **{"proj.weight": np.full((2, 5), 2.0, np.float32)})
    out = tmp_path / "out.npz"
    assert main(["run", str(EXAMPLE), "--inputs", str(tmp_path / "x.npz"), "--weights", str(tmp_path / "w.npz"),
                 "--output", str(out), "-q"]) == 0
    with np.load(out) as got:
        np.testing.assert_array_equal(got["y"], np.full((2, 2), 10.0))       # 5 features * 2
        np.testing.assert_array_equal(got["total"], np.full((2, 5), 10.0))   # 10 tokens


@pytest.mark.parametrize("x_shape, weight_shape, expected", [
    ((2, 10, 5), (2, 4), ["'c' is bound by two sources that disagree", "in.npz", "w.npz",
                          f"data_dims.nspec:14:16", "data_dims.nspec:17:19"]),
    ((2, 10, 5), (5,), ["'proj.weight' has shape [5], the model's W needs [2, 5]"]),
])
def test_nspec_run_reports_data_that_does_not_fit(x_shape, weight_shape, expected, tmp_path, capsys):
    np.savez(tmp_path / "in.npz", x=np.ones(x_shape, np.float32))
    np.savez(tmp_path / "w.npz", **{"proj.weight": np.ones(weight_shape, np.float32)})
    code = main(["run", str(EXAMPLE), "--inputs", str(tmp_path / "in.npz"), "--weights", str(tmp_path / "w.npz"), "-q"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "Traceback" not in err and "internal error" not in err
    for text in expected:
        assert text in err


# ---------------------------------------------------------------- CTM checkpoints of other sizes
@pytest.fixture(scope="module")
def ctm_bundle(tmp_path_factory):
    """A CTM checkpoint of input width 5 and 11 tokens (ctm_tiny has 6 and 7) with ctm_tiny's
    constructor arguments: weights, inputs and the oracle's outputs, as files."""
    from safetensors.numpy import save_file

    folder = tmp_path_factory.mktemp("ctm5x11")
    config = json.loads((CONFORMANCE / "ctm_tiny.json").read_text())["config"]
    rng = np.random.default_rng(511)
    sd = oracle.ctm_state_dict(config, 5, rng)
    x = rng.normal(size=(2, 5, 11)).astype(np.float32)
    predictions, certainties = oracle.ctm_forward(sd, config, x)
    save_file({k: np.ascontiguousarray(v) for k, v in sd.items()}, str(folder / "w.safetensors"))
    np.savez(folder / "in.npz", x=x)
    return config, folder / "w.safetensors", folder / "in.npz", {"predictions": predictions, "certainties": certainties}


def assert_close(got: dict, want: dict) -> None:
    for name, value in want.items():
        assert got[name].shape == value.shape, name
        assert float(np.max(np.abs(got[name] - value))) <= 1e-4, name


@pytest.mark.parametrize("backend", BACKENDS)
def test_nspec_run_reproduces_a_ctm_of_other_sizes_from_the_constructor_arguments_alone(backend, ctm_bundle,
                                                                                        tmp_path):
    config, weights, inputs, want = ctm_bundle
    params = [a for k, v in config.items() for a in ("--param", f"{k}={json.dumps(v)}")]
    assert not any(p.startswith(("in_channels", "n_tokens")) for p in params)
    out = tmp_path / "out.npz"
    assert main(["run", str(CTM), *params, "--weights", str(weights), "--inputs", str(inputs), "--output", str(out),
                 "--backend", backend, "-q"]) == 0
    with np.load(out) as got:
        assert_close({k: got[k] for k in got.files}, want)


def test_to_torch_loads_a_ctm_of_other_sizes_strictly_and_follows_the_token_count(ctm_bundle):
    import torch
    from safetensors.torch import load_file

    config, weights, inputs, want = ctm_bundle
    module = nspec.load(CTM, **config).to_torch()       # compiled for the defaults: 6 channels, 7 tokens
    assert tuple(module.state_dict()["kv_proj.0.weight"].shape) == (8, 6)
    module.load_state_dict(load_file(str(weights)), strict=True)
    kv = dict(module.named_parameters())["kv_proj.0.weight"]
    assert tuple(kv.shape) == (8, 5)
    x = torch.as_tensor(np.load(inputs)["x"])[:, None]   # one data step
    got = module(x=x)
    assert_close({k: got[k][:, 0].detach().numpy() for k in want}, want)
    got["predictions"].sum().backward()
    assert kv.grad is not None and float(kv.grad.abs().sum()) > 0

    shorter = module(x=x[..., :9])                        # 9 tokens: rebuilt, the same Parameter objects
    assert shorter["predictions"].shape == (2, 1, 3, 5)
    assert dict(module.named_parameters())["kv_proj.0.weight"] is kv
    with pytest.raises(NspecError, match="'in_channels' is bound by two sources that disagree: 4 from the input 'x'"):
        module(x=x[:, :, :4])


def test_a_model_recompiles_for_the_sizes_of_its_weights_and_inputs(ctm_bundle):
    config, weights, inputs, want = ctm_bundle
    model = nspec.load(CTM, **config)
    assert model.program.var("x").shape == (6, 7)
    model.load_weights(weights)
    assert model.program.var("x").shape == (5, 7)
    got = model.run({"x": np.load(inputs)["x"]}, batch=2)
    assert model.program.var("x").shape == (5, 11)
    assert_close(got, want)
    from safetensors.torch import load_file

    module = model.to_torch()
    assert tuple(module.state_dict()["kv_proj.0.weight"].shape) == (8, 5)
    module.load_state_dict(load_file(str(weights)), strict=True)


def test_onnx_names_the_axes_data_bound_dimensions_size(ctm_bundle, tmp_path):
    import onnx

    from nspec.lowering.to_onnx import run_model, symbolic_for

    config, weights, inputs, _ = ctm_bundle
    model = nspec.load(CTM, weights=weights, inputs=inputs, **config)
    model.export_onnx(tmp_path / "ctm.onnx")
    exported = onnx.load(str(tmp_path / "ctm.onnx"))

    def shape(graph, name):
        (value,) = [i for i in graph.input if i.name == name]
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    assert shape(exported.graph, "x") == ["B", "T", "in_channels", "n_tokens"]
    props = {p.key: p.value for p in exported.metadata_props}
    recorded = json.loads(props["nspec.data_dims"])
    assert {k: v["value"] for k, v in recorded.items()} == {"in_channels": 5, "n_tokens": 11}
    assert recorded["n_tokens"]["source"].startswith(f"data: the input 'x' of shape [2, 5, 11] in {inputs}")
    assert {k: v["symbolic"] for k, v in recorded.items()} == {"in_channels": True, "n_tokens": True}
    # parameters as graph inputs: theirs are named too (tests/test_onnx_symbolic_dims.py runs such files
    # at other sizes)
    unbound = run_model(model.program, 1, symbolic=symbolic_for(model.program, model._compiled_at))
    assert shape(unbound.graph, "kv_weight") == [8, "in_channels"]
    assert shape(unbound.graph, "q_weight") == [8, 8]
    # lowered without the analysis, the graph is for the compiled sizes, and its inputs say so
    assert shape(run_model(model.program, 1).graph, "kv_weight") == [8, 5]

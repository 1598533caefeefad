"""The ``nspec`` command line: in-process through ``main([...])`` for output, and as a subprocess
for the exit codes a shell sees.  Run results are checked against an independent NumPy
simulation of the same neurons."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from nspec.cli import CliError, duration, main, param, spec_paths
from nspec.cli_common import lowering as _lowering
from nspec.dsl import ast as A
from nspec.dsl import parse

PACER = """\
neuron Pacer {
  param tau = 10 ms;  param El = 20 mV;  param Vt = 10 mV;  param Vr = 0 mV
  state v: mV = Vr
  dv/dt = (El - v) / tau
  spike when v > Vt;  reset { v = Vr }
}
hyper n: int = 10
network Net {
  population P: Pacer[n]
  record spikes of P as raster
  record v of P[0:3] as trace
}
simulate Net for 100 ms, dt = 0.1 ms, seed = 1
"""
BROKEN = "neuron A { param a = 1 param b = 2 }\n"


def pacer_spike_steps(steps: int) -> list[int]:
    """Independent simulation of one Pacer neuron: the steps at which it spikes."""
    v, out, decay = 0.0, [], np.exp(-1e-4 / 0.01)
    for k in range(steps):
        v = 0.02 + (v - 0.02) * decay
        if v > 0.01:
            out.append(k)
            v = 0.0
    return out


@pytest.fixture
def spec(tmp_path):
    def write(text=PACER, name="m.nspec"):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path
    return write


def cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def shell(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "nspec", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


# ---------------------------------------------------------------- argument types
@pytest.mark.parametrize("text, expected", [
    ("n_layer=2", ("n_layer", "2")), ("lr=1e-3", ("lr", "1e-3")), ("flag=true", ("flag", True)),
    ("dims=[1, 2]", ("dims", [1, 2])), ("routing=neuronio", ("routing", "neuronio")),
    ('name="quoted"', ("name", "quoted")), ("empty=", ("empty", "")), ("x=-0.5", ("x", "-0.5")),
    ("tau=20 ms", ("tau", "20 ms")), ("cells.tau=5ms", ("cells.tau", "5ms")),
])
def test_param_values_are_json_literals_else_strings(text, expected):
    # numbers stay text: the compiler reads them as quantities, checked against the hyperparameter's unit
    assert param(text) == expected


HYPER_WITH_UNIT = """
hyper tau = 10 ms
neuron N {
  state v: f32 = 1
  dv/dt = -v / tau
}
network Net {
  population P: N[2]
  record v of P as tr
}
simulate Net for 1 ms, dt = 0.1 ms
"""


@pytest.mark.parametrize("value, message", [
    ("0.02", "--param tau=0.02: 'tau' has a unit (s); write it with one, like its default 10 ms"),
    ("20 mV", "--param tau='20 mV': 'tau' is in s (like its default 10 ms), not V"),
])
def test_a_hyperparameter_with_a_unit_refuses_a_bare_number_or_another_unit(capsys, spec, tmp_path, value, message):
    out = tmp_path / "out.npz"
    code, _, err = cli(capsys, "run", spec(HYPER_WITH_UNIT), "--param", f"tau={value}", "--output", out)
    assert code == 1 and message in err and ":2:1:" in err  # located at the hyperparameter
    assert not out.exists()


def test_a_hyperparameter_with_a_unit_takes_a_quantity(capsys, spec, tmp_path):
    path = spec(HYPER_WITH_UNIT)
    runs = {}
    for value in ("20 ms", "0.02 s"):
        out = tmp_path / f"{value.replace(' ', '')}.npz"
        code, _, err = cli(capsys, "run", path, "--param", f"tau={value}", "--output", out, "--quiet")
        assert code == 0, err
        runs[value] = np.load(out)
    # exact integration of dv/dt = -v / tau: v = exp(-t / tau) at the recorded steps t = 0, dt, ...
    want = np.exp(-1e-4 * np.arange(10) / 0.02)[:, None].repeat(2, 1)
    np.testing.assert_allclose(runs["20 ms"]["tr.v"], want, rtol=1e-6)
    np.testing.assert_array_equal(runs["20 ms"]["tr.v"], runs["0.02 s"]["tr.v"])


@pytest.mark.parametrize("text", ["novalue", "=3", "1x=2", "a b=1", "a..b=1", ".a=1", "a.=1"])
def test_param_needs_a_name(text):
    with pytest.raises(argparse.ArgumentTypeError):
        param(text)


@pytest.mark.parametrize("text, seconds", [("1s", 1.0), ("200ms", 0.2), ("0.5 s", 0.5), ("250 us", 250e-6),
                                           ("1e-3 s", 1e-3)])
def test_duration_accepts_times(text, seconds):
    assert duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["5", "5 mV", "ms", "0 s", "1 parsec", "1e400s", "1e400 ms"])
def test_duration_rejects_non_times(text):
    with pytest.raises(argparse.ArgumentTypeError):
        duration(text)


@pytest.mark.parametrize("args, message", [
    (("--seed", "-1"), "a seed is an integer from 0 to 2**64 - 1, got -1"),
    (("--seed", str(2**64)), "a seed is an integer from 0 to 2**64 - 1"),
    (("--seed", "1.5"), "expected an integer seed, got '1.5'"),
    (("--duration", "1e400s"), "the duration must be a positive, finite time, got '1e400s'"),
])
def test_run_refuses_bad_seeds_and_durations_before_working(capsys, spec, tmp_path, args, message):
    out = tmp_path / "out.npz"
    code, _, err = cli(capsys, "run", spec(), "--output", out, *args)
    assert code == 2 and message in err and "internal error" not in err
    assert not out.exists()


def test_the_largest_seed_runs(capsys, spec, tmp_path):
    out = tmp_path / "out.npz"
    code, _, err = cli(capsys, "run", spec(), "--seed", 2**64 - 1, "--duration", "1ms", "--output", out, "--quiet")
    assert code == 0, err
    assert out.exists()


# ---------------------------------------------------------------- usage
def test_help_and_version(capsys):
    code, out, _ = cli(capsys, "--help")
    assert code == 0 and all(c in out for c in ("check", "compile", "run", "test"))
    code, out, _ = cli(capsys, "--version")
    assert code == 0 and out.startswith("nspec ")


@pytest.mark.parametrize("args", [[], ["frobnicate"], ["run"], ["run", "x.nspec", "--param", "novalue"],
                                  ["run", "x.nspec", "--duration", "5 mV"], ["run", "x.nspec", "--steps", "0"],
                                  ["run", "x.nspec", "--steps", "5", "--duration", "1s"],
                                  ["compile", "x.nspec", "--target", "fpga"]])
def test_usage_errors_exit_2(capsys, args):
    code, _, err = cli(capsys, *args)
    assert code == 2 and "usage:" in err


# ---------------------------------------------------------------- check
def test_check_valid_and_invalid(capsys, spec):
    good, bad = spec(), spec(BROKEN, "bad.nspec")
    code, out, err = cli(capsys, "check", good)
    assert (code, out.strip(), err) == (0, "ok: 1 file", "")
    code, out, err = cli(capsys, "check", good, bad)
    assert code == 1 and out == ""
    assert f"{bad}:1:24: error:" in err and "^" in err and "Traceback" not in err
    assert "1 error in 1 file" in err


def test_check_reports_missing_files(capsys, tmp_path):
    code, _, err = cli(capsys, "check", tmp_path / "nope.nspec")
    assert code == 1 and "no such file" in err


def test_directories_recurse_but_skip_specs_errors(capsys, spec, tmp_path):
    good = spec(name="specs/a/good.nspec")
    spec(BROKEN, "specs/errors/bad.nspec")
    spec(BROKEN, "specs/.hidden/bad.nspec")
    assert spec_paths([str(tmp_path)]) == [good]
    assert cli(capsys, "check", tmp_path)[:2] == (0, "ok: 1 file\n")
    # named explicitly, the error specs are checked
    code, _, err = cli(capsys, "check", tmp_path / "specs" / "errors")
    assert code == 1 and "bad.nspec:1:24" in err
    (tmp_path / "empty").mkdir()
    with pytest.raises(CliError, match="no .nspec files"):
        spec_paths([str(tmp_path / "empty")])


# ---------------------------------------------------------------- compile
def test_emit_ast_prints_the_parsers_dump(capsys, spec):
    path = spec()
    code, out, _ = cli(capsys, "compile", path, "--emit", "ast")
    module, diags = parse(PACER, str(path))
    assert code == 0 and diags == [] and out == A.dump(module) + "\n"


def test_emit_ast_of_a_broken_spec_is_a_located_error(capsys, spec):
    code, out, err = cli(capsys, "compile", spec(BROKEN), "--emit", "ast")
    assert code == 1 and out == "" and ":1:24: error:" in err


def test_emit_ir_names_the_program(capsys, spec):
    code, out, _ = cli(capsys, "compile", spec(), "--emit", "ir", "--param", "n=4")
    assert code == 0 and out.startswith("program ") and "f32[4]" in out


def test_compile_to_onnx_refuses_to_overwrite(capsys, spec, tmp_path):
    import onnx

    path = spec()
    out = tmp_path / "out" / ""
    code, stdout, err = cli(capsys, "compile", path, "--target", "onnx", "-o", f"{out}/")
    assert code == 0, err
    written = tmp_path / "out" / "m.onnx"
    onnx.checker.check_model(onnx.load(str(written)))
    before = written.read_bytes()
    code, _, err = cli(capsys, "compile", path, "--target", "onnx", "-o", written, "--step")
    assert code == 1 and "already exists" in err and written.read_bytes() == before
    assert cli(capsys, "compile", path, "--target", "onnx", "-o", written, "--step", "--force")[0] == 0
    assert written.read_bytes() != before


def test_missing_backend_is_a_user_error():
    with pytest.raises(CliError, match="backend not available: nspec.lowering.no_such_backend"):
        _lowering("no_such_backend", "export")
    with pytest.raises(CliError, match="has no no_such_function"):
        _lowering("to_onnx", "no_such_function")


# ---------------------------------------------------------------- run
def test_run_saves_spikes_that_match_an_independent_simulation(capsys, spec, tmp_path):
    out = tmp_path / "spikes.npz"
    code, stdout, err = cli(capsys, "run", spec(), "--output", out, "--param", "n=4", "--duration", "50ms")
    assert code == 0, err
    data = np.load(out)
    steps = pacer_spike_steps(500)
    assert sorted(data["raster.i"].tolist()) == sorted(list(range(4)) * len(steps))
    np.testing.assert_allclose(np.unique(data["raster.t"]), np.array(steps) * 1e-4, atol=1e-9)
    assert data["trace.v"].shape == (500, 3)
    assert f"raster: {4 * len(steps)} spikes from 4 neurons" in stdout
    assert f"mean rate {len(steps) / 0.05:.4g} Hz" in stdout


def test_run_refuses_to_overwrite_before_running(capsys, spec, tmp_path, monkeypatch):
    out = tmp_path / "spikes.npz"
    out.write_bytes(b"keep me")
    import nspec.runtime.model as model

    def never(*a, **k):
        raise AssertionError("the spec was compiled although the output exists")
    monkeypatch.setattr(model, "load", never)
    code, _, err = cli(capsys, "run", spec(), "--output", out)
    assert code == 1 and "already exists" in err and "--force" in err
    assert out.read_bytes() == b"keep me"
    monkeypatch.undo()
    code, _, err = cli(capsys, "run", spec(), "--output", out, "--force", "--steps", "20", "-q")
    assert code == 0, err
    assert set(np.load(out).files) == {"raster.i", "raster.t", "trace.v", "trace.t"}


def test_run_plots_and_timing(capsys, spec, tmp_path):
    plot, timing = tmp_path / "raster.png", tmp_path / "t.json"
    code, _, err = cli(capsys, "run", spec(), "--steps", "100", "--plot", plot, "--timing-json", timing)
    assert code == 0, err
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = json.loads(timing.read_text())
    assert set(record) == {"backend", "compile_s", "run_s", "steps"}
    assert record["backend"] == "reference" and record["steps"] == 100
    assert record["run_s"] > 0 and record["compile_s"] > 0
    code, _, err = cli(capsys, "run", spec(), "--steps", "10", "--plot", tmp_path / "t.png", "--plot-kind", "traces")
    assert code == 0 and (tmp_path / "t.png").stat().st_size > 0


@pytest.mark.parametrize("flags, fragment", [
    (["--weights", "nope.safetensors"], "--weights: no such file"),
    (["--inputs", "nope.npz"], "--inputs: no such file"),
    (["--plot", "raster.txt"], "--plot writes"),
    (["--param", "n=1", "--param", "n=2"], "given twice"),
    (["--backend", "abacus"], "unknown backend"),
    (["--param", "n=\"many\""], "error"),
])
def test_run_user_errors_exit_1_without_traceback(capsys, spec, flags, fragment):
    code, _, err = cli(capsys, "run", spec(), "--steps", "5", *flags)
    assert code == 1 and fragment in err and "Traceback" not in err and "internal error" not in err


def test_run_inputs_that_do_not_fit_are_user_errors(capsys, spec, tmp_path):
    inputs = tmp_path / "in.npz"
    np.savez(inputs, x=np.zeros(3))
    code, _, err = cli(capsys, "run", spec(), "--steps", "5", "--inputs", inputs)
    assert code == 1 and "unknown input" in err and "Traceback" not in err


# ---------------------------------------------------------------- hyperparameters across files
CELLS = """\
module cells "a leaky cell whose time constant is a hyperparameter of its own file"
hyper tau = 10 ms
hyper gain: float = 1.0
neuron Leaky(drive = 1.5) {
  state v: f32 = 0
  dv/dt = (gain * drive - v) / tau
  spike when v > 1
  reset { v = 0 }
}
"""
NET = """\
import "cells.nspec"
hyper tau = 20 ms
hyper size: int = 1
network Net {
  population P: Leaky[size]
  record spikes of P as sp
}
simulate Net for 100 ms, dt = 0.1 ms
"""


def test_an_unknown_param_is_located_on_the_command_line_and_lists_every_files_hyperparameters(capsys, spec):
    spec(CELLS, "cells.nspec")
    net = spec(NET, "net.nspec")
    for command in ("check", "compile", "run"):
        code, _, err = cli(capsys, command, net, "--param", "size=2", "--param", "sise=3")
        lines = err.splitlines()
        assert code == 1 and "Traceback" not in err
        # the caret is under the name as it was typed, not at line 1 of the file
        assert lines[0].startswith(f"<command line>:1:{len(f'nspec {command} {net} --param size=2 --param ') + 1}: "
                                   f"error: unknown hyperparameter 'sise' for {net}; did you mean 'size'?"), err
        assert lines[1].strip() == f"nspec {command} {net} --param size=2 --param sise=3"
        assert lines[2].index("^~~~") == lines[1].index("sise")
        # grouped per file, each name as an override writes it
        assert f"note: hyperparameters of {net}: tau, size" in err
        assert f"note: hyperparameters of {net.parent / 'cells.nspec'}: cells.tau, gain" in err


def test_a_template_parameter_given_as_a_param_is_explained(capsys, spec):
    spec(CELLS, "cells.nspec")
    code, _, err = cli(capsys, "compile", spec(NET, "net.nspec"), "-p", "drive=2")
    assert code == 1 and "unknown hyperparameter 'drive'" in err
    assert "'drive' is a template parameter of Leaky" in err and "Leaky(drive = ...)" in err


def test_a_param_binds_the_root_files_name_and_module_name_binds_an_imports(capsys, spec, tmp_path):
    spec(CELLS, "cells.nspec")
    net = spec(NET, "net.nspec")
    counts = {}
    for flags in ([], ["--param", "tau=5ms"], ["--param", "cells.tau=5ms"], ["--param=gain=2"]):
        out = tmp_path / f"{len(counts)}.npz"
        code, _, err = cli(capsys, "run", net, *flags, "--output", out, "--quiet")
        assert code == 0, err
        counts[" ".join(flags)] = len(np.load(out)["sp.t"])
    # the root's own tau is not the cell's: setting it changes nothing the cell reads
    assert counts["--param tau=5ms"] == counts[""]
    # v = 1.5 (1 - exp(-t / tau)) crosses 1 after tau ln 3: 9 spikes in 100 ms at tau = 10 ms, 18 at 5 ms
    assert (counts[""], counts["--param cells.tau=5ms"]) == (9, 18)
    assert counts["--param=gain=2"] > counts[""]  # gain is imported whole, so `gain` names it


def test_an_ambiguous_param_names_both_declarations(capsys, spec):
    spec(CELLS, "cells.nspec")
    spec('module extra "another gain"\nhyper gain: float = 3.0\n', "extra.nspec")
    net = spec(NET.replace('import "cells.nspec"', 'import "cells.nspec"\nimport "extra.nspec"'), "net.nspec")
    code, _, err = cli(capsys, "compile", net, "--param", "gain=2")
    assert code == 1
    assert (f"error: hyperparameter 'gain' is ambiguous: it is declared in {net.parent / 'cells.nspec'}:3 and "
            f"{net.parent / 'extra.nspec'}:2; write cells.gain or extra.gain") in err
    code, _, err = cli(capsys, "compile", net, "--param", "extra.gain=2", "--param", "cells.gain=2")
    assert code == 0, err
    code, _, err = cli(capsys, "compile", net, "--param", "cells.tau=2ms", "--param", "cells.tau=3ms")
    assert code == 1 and "--param cells.tau is given twice" in err


def test_param_method_switches_a_neurons_integration_method(capsys, tmp_path):
    example = Path(__file__).resolve().parents[1] / "specs" / "examples" / "neuron_structure.nspec"
    times = {}
    for method in ("euler", "rk4"):
        out = tmp_path / f"{method}.npz"
        code, _, err = cli(capsys, "run", example, "--param", f"method={method}", "--output", out, "--quiet")
        assert code == 0, err
        times[method] = np.load(out)["izh.t"]
    # Izhikevich's fifth spike: 162.3 ms by Euler, 161.1 ms by RK4 (NumPy, tests/test_neuron_structure.py)
    np.testing.assert_allclose([times["euler"][4], times["rk4"][4]], [0.1623, 0.1611], atol=1e-9)
    code, _, err = cli(capsys, "run", example, "--param", "method=exact", "--steps", "5")
    assert code == 1 and "method exact needs linear equations" in err


# ---------------------------------------------------------------- test
def test_test_command_counts_and_locates(capsys, spec):
    per_neuron = len(pacer_spike_steps(1000))
    path = spec(PACER + f'test "passes" {{ expect count(P) == {10 * per_neuron} }}\n'
                        'test "fails" {\n  expect count(P) > 100000\n}\n')
    code, out, _ = cli(capsys, "test", path)
    lines = out.splitlines()
    assert code == 1 and lines[-1] == "1 passed, 1 failed"
    assert any(line.startswith(f"PASS {path}::passes") for line in lines)
    assert f"  {path}:16:3: test \"fails\" failed: count(P) was {10 * per_neuron}" in out
    code, out, _ = cli(capsys, "test", path, "-k", "passes")
    assert code == 0 and out.splitlines()[-1] == "1 passed, 0 failed"


def test_test_command_counts_unparsable_files_as_failures(capsys, spec):
    code, out, err = cli(capsys, "test", spec(BROKEN))
    assert code == 1 and out.splitlines()[-1] == "0 passed, 1 failed" and ":1:24: error:" in err


# ---------------------------------------------------------------- internal errors and exit codes seen by a shell
_CRASH = ("import sys, nspec.compiler.driver as d\n"
          "def boom(*a, **k): raise RuntimeError('boom')\n"
          "d.check_files = boom\n"
          "from nspec.cli import main\n"
          "sys.exit(main(sys.argv[1:]))\n")


def test_internal_error_exits_3_without_traceback(tmp_path):
    (tmp_path / "m.nspec").write_text(PACER)
    proc = subprocess.run([sys.executable, "-c", _CRASH, "check", "m.nspec"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    assert proc.returncode == 3
    assert "internal error: RuntimeError: boom" in proc.stderr and "Traceback" not in proc.stderr
    assert "report" in proc.stderr
    for debug in (["check", "m.nspec", "--debug"], ["--debug", "check", "m.nspec"]):
        proc = subprocess.run([sys.executable, "-c", _CRASH, *debug], capture_output=True, text=True,
                              cwd=tmp_path, timeout=300)
        assert proc.returncode == 3 and "Traceback" in proc.stderr and "RuntimeError: boom" in proc.stderr
    proc = subprocess.run([sys.executable, "-c", _CRASH, "check", "m.nspec"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300, env={**os.environ, "NSPEC_DEBUG": "1"})
    assert proc.returncode == 3 and "Traceback" in proc.stderr


def test_exit_codes_as_a_shell_sees_them(tmp_path):
    (tmp_path / "good.nspec").write_text(PACER)
    (tmp_path / "bad.nspec").write_text(BROKEN)
    assert shell("check", "good.nspec", cwd=tmp_path).returncode == 0
    bad = shell("check", "bad.nspec", cwd=tmp_path)
    assert bad.returncode == 1 and "bad.nspec:1:24: error:" in bad.stderr and "Traceback" not in bad.stderr
    assert shell("check", cwd=tmp_path).returncode == 2


def test_readme_command_table_lists_every_subcommand():
    import re

    from nspec.cli import build_parser

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("## The command line"):readme.index("\n## ", readme.index("## The command line") + 1)]
    listed = set(re.findall(r"^\| `nspec ([\w-]+)", table, re.M))
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    commands = {a.dest for a in sub._choices_actions}  # without the aliases (import of import-nir)
    assert listed == commands, f"README's command table lists {sorted(listed)}, the CLI has {sorted(commands)}"


# ---------------------------------------------------------------- NIR from the command line
NIR_SPEC = """\
import "std/nir.nspec" as nir
composite Net {
  in x: f32[2]
  out y: f32[2]
  box fc: nir.Linear(n_in = 2, n_out = 2)
  box lif: nir.LIF(n = 2)
  box late: nir.Delay(n = 2, k = 2)
  wire x -> fc.x
  wire fc.y -> lif.x
  wire lif.y -> late.x
  wire late.y -> y
}
simulate Net for 1 ms, dt = 0.1 ms
"""


def test_compile_target_nir_then_import_nir_runs_the_same(tmp_path, capsys):
    """nspec -> graph.nir (`compile --target nir`) -> nspec (`import-nir`, and its alias `import`): the
    same outputs, the Delay of 2 steps as 0.2 ms."""
    nir = pytest.importorskip("nir")
    from safetensors.numpy import save_file

    import nspec

    spec = tmp_path / "net.nspec"
    spec.write_text(NIR_SPEC)
    rng = np.random.default_rng(0)
    save_file({"fc/weight": rng.normal(1.0, 1.0, (2, 2)).astype(np.float32), "lif/P/tau": np.full(2, 1e-3, np.float32),
               "lif/P/r": np.full(2, 10.0, np.float32), "lif/P/v_leak": np.zeros(2, np.float32),
               "lif/P/v_threshold": np.full(2, 0.5, np.float32), "lif/P/v_reset": np.zeros(2, np.float32)},
              str(tmp_path / "w.safetensors"))
    assert main(["compile", str(spec), "--target", "nir", "--weights", str(tmp_path / "w.safetensors"),
                 "-o", str(tmp_path / "graph.nir")]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {tmp_path / 'graph.nir'}"
    graph = nir.read(str(tmp_path / "graph.nir"))
    assert sorted(type(n).__name__ for n in graph.nodes.values()) == ["Delay", "Input", "LIF", "Linear", "Output"]
    np.testing.assert_allclose(graph.nodes["late"].delay, [2e-4, 2e-4], rtol=1e-6)
    x = rng.normal(0.5, 1.0, (30, 2)).astype(np.float32)
    want = nspec.load(spec, weights=tmp_path / "w.safetensors").run(inputs={"x": x})["y"]
    assert want.sum() > 0
    for command in ("import-nir", "import"):
        out = tmp_path / f"{command}.nspec"
        assert main([command, str(tmp_path / "graph.nir"), "-o", str(out)]) == 0
        again = nspec.load(out, weights=out.with_suffix(".weights.safetensors"))
        np.testing.assert_array_equal(again.run(inputs={"x": x})["y"], want)


def test_compile_target_nir_locates_the_first_construct_nir_cannot_express(tmp_path, capsys):
    pytest.importorskip("nir")
    spec = tmp_path / "net.nspec"
    spec.write_text(NIR_SPEC.replace("box late: nir.Delay(n = 2, k = 2)", "box late: Twice")
                    + "system Twice {\n  in x: f32[2]\n  out y: f32[2]\n  y = 2 * x\n}\n")
    assert main(["compile", str(spec), "--target", "nir", "-o", str(tmp_path / "graph.nir")]) == 1
    err = capsys.readouterr().err
    assert "net.nspec:7:3: error: box 'late' is a Twice, which NIR cannot express" in err
    assert "^" in err and "Traceback" not in err
    assert not (tmp_path / "graph.nir").exists()
    assert main(["compile", str(spec), "--target", "onnx", "--weights", "w.safetensors"]) == 1
    assert "--weights is read by --target torch and --target nir only" in capsys.readouterr().err


# ---------------------------------------------------------------- compile --emit diagram
SPECS = Path(__file__).resolve().parent.parent / "specs"


def dot_structure(text: str) -> tuple[set[str], list[tuple[str, str, str]]]:
    """The DOT text ``--emit diagram`` writes, parsed by pydot's DOT grammar (Graphviz's own, as
    `dot` reads it: an unquoted ``style=rounded,filled`` made `dot` refuse every network cluster),
    then read line by line: balanced braces, every edge between declared nodes.  Returns (node ids,
    edges as (source, target, label))."""
    import pydot

    assert pydot.graph_from_dot_data(text), "not valid DOT (pydot printed where)"
    depth, nodes, edges = 0, set(), []
    ident = r'"(?:[^"\\]|\\.)*"'
    for line in text.splitlines():
        line = line.strip()
        depth += line.count("{") - line.count("}") if not line.startswith('"') else 0
        assert depth >= 0, line
        if m := re.fullmatch(rf'({ident})(?::({ident}))? -> ({ident})(?::({ident}))? \[label=({ident})\];', line):
            edges.append((m[1].strip('"') + (":" + m[2].strip('"') if m[2] else ""),
                          m[3].strip('"') + (":" + m[4].strip('"') if m[4] else ""), m[5].strip('"')))
        elif m := re.fullmatch(rf'({ident}) \[(shape=\w+), label=({ident})\];', line):
            nodes.add(m[1].strip('"'))
        else:  # a graph, a cluster, an attribute or a closing brace
            assert re.fullmatch(rf'(digraph|subgraph) {ident} \{{|\}}|[\w,]+( \[.*\])?(=[^;]*)?;( \w+=[^;]*;)*', line), line
    assert depth == 0
    assert {e.split(":")[0] for s, t, _ in edges for e in (s, t)} <= nodes
    return nodes, edges


def test_diagram_of_nested_composites(capsys):
    code, out, err = cli(capsys, "compile", SPECS / "examples/nesting.nspec", "--emit", "diagram")
    assert code == 0, err
    nodes, edges = dot_structure(out)
    assert out.startswith('digraph "Quad" {')
    assert 'subgraph "cluster_Quad/first" {' in out and 'label="first: Pair";' in out
    assert '"Quad/second/inc" [shape=record, label="{{<in_x> x}|inc:\\ Add1|{<out_y> y}}"];' in out
    assert nodes == {"Quad.x", "Quad.y"} | {f"Quad/{p}.{d}" for p in ("first", "second") for d in "xy"} \
        | {f"Quad/{p}/{b}" for p in ("first", "second") for b in ("inc", "hold")}
    assert ("Quad/first.y", "Quad/second.x", "first.y -> second.x") in edges
    assert ("Quad/first/inc:out_y", "Quad/first/hold:in_x", "inc.y -> hold.x") in edges
    assert len(edges) == 9  # 3 wires in Quad, 3 in each Pair


def test_diagram_of_a_network_inside_a_composite(capsys):
    code, out, err = cli(capsys, "compile", SPECS / "examples/hybrid.nspec", "--emit", "diagram")
    assert code == 0, err
    nodes, edges = dot_structure(out)
    assert 'subgraph "cluster_Hybrid/net" {' in out and '"Hybrid/net/P" [shape=ellipse, label="P: LIF[8]"];' in out
    assert {"Hybrid/net.drive", "Hybrid/net.rate", "Hybrid/lstm", "Hybrid/head"} <= nodes
    assert ("Hybrid/current:out_I", "Hybrid/net.drive", "current.I -> net.drive") in edges
    assert ("Hybrid/back:out_I", "Hybrid/net.drive", "back.I -> net.drive") in edges  # merged by sum
    assert ("Hybrid/net/P", "Hybrid/net.rate", "rate = rate(P, 10 ms)") in edges
    assert ("Hybrid/lstm:out_h", "Hybrid/back:in_x", "lstm.h -> back.x") in edges  # one wire, two targets
    assert len(edges) == 13


def test_diagram_of_a_network_draws_projections(capsys, spec):
    code, out, err = cli(capsys, "compile", SPECS / "brian2/coba.nspec", "--emit", "diagram", "--param", "N=100")
    assert code == 0, err
    nodes, edges = dot_structure(out)
    assert nodes == {"COBA/P"} and 'label="P: COBALIF[100]"' in out
    assert [label for _, _, label in edges] == ["exc: P[0:NE] -> P", "inh: P[NE:N] -> P"]


def test_diagram_files_and_graphviz(capsys, tmp_path, monkeypatch):
    nesting = SPECS / "examples/nesting.nspec"
    monkeypatch.setattr("shutil.which", lambda name: None)
    code, out, err = cli(capsys, "compile", nesting, "--emit", "diagram", "-o", tmp_path / "q.svg")
    assert code == 0, err
    assert "wrote" in out and (tmp_path / "q.dot").read_text().startswith('digraph "Quad"')
    assert not (tmp_path / "q.svg").exists()
    assert "'dot' program is not on PATH" in err and f"dot -Tsvg {tmp_path / 'q.dot'} -o {tmp_path / 'q.svg'}" in err
    code, _, err = cli(capsys, "compile", nesting, "--emit", "diagram", "-o", tmp_path / "q.svg")
    assert code == 1 and "already exists" in err
    # with a `dot` on PATH (a stand-in that copies its input), the picture is drawn from the .dot
    fake = tmp_path / "bin" / "dot"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\ncp "$2" "$4"\n')
    fake.chmod(0o755)
    monkeypatch.undo()
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    code, out, err = cli(capsys, "compile", nesting, "--emit", "diagram", "-o", tmp_path / "d.png")
    assert code == 0, err
    assert (tmp_path / "d.png").read_text() == (tmp_path / "d.dot").read_text() and f"wrote {tmp_path / 'd.png'}" in out


@pytest.mark.parametrize("flags, fragment", [
    (["-o", "d.txt"], "--emit diagram writes .dot"),
    (["--target", "onnx"], "drop --target"),
])
def test_diagram_refuses_bad_requests(capsys, flags, fragment):
    code, _, err = cli(capsys, "compile", SPECS / "examples/nesting.nspec", "--emit", "diagram", *flags)
    assert code == 1 and fragment in err


def test_diagram_of_a_broken_spec_is_a_located_error(capsys, spec):
    code, out, err = cli(capsys, "compile", spec(BROKEN), "--emit", "diagram")
    assert code == 1 and out == "" and "m.nspec:1:" in err and "^" in err

"""Every code block of the documentation is executed or checked (``docs/*.md`` and ``README.md``).

``docs/language.md``'s ```` ```nspec ```` blocks are checked by ``test_specs_parse.py`` (each is an
example file the other suites run); this file covers every other block of every page, and of
``language.md`` the blocks that are not spec text.  A block is one of:

* ```` ```nspec ````: parsed, compiled, and its ``test`` blocks run (``nspec test``);
* ```` ```python ````: executed in a fresh folder, after the setup its page's prose states
  (``PRELUDES``: the file the block reads, the array ``x`` it assumes);
* a shell block (every line starts with ``nspec``, ``python``, ``pytest`` or ``pip``): each ``nspec`` command
  runs through the CLI in a fresh folder that links ``specs/``, ``tests/`` and ``bench/``, with the
  weights, inputs and data files it names made from the spec when no such file exists (the
  placeholders ``W.safetensors``, ``x.npz``, ``d.npz``, ``net.nir``); ``pip`` lines must name extras
  that ``pyproject.toml`` declares; the test command must be ``.ci/run``'s, and a test file a page
  names must exist; ``python bench/...`` runs the script at a reduced size (``SHRINK``), or, for the
  training and figure scripts (minutes each, writing ``docs/figures``), parses its arguments
  (``--help`` after them);
* any other block is output or a diagram, and must have an entry in ``TEXT`` that checks it
  against the code (a new unchecked block fails ``test_every_block_has_a_check``).
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

import nspec
from nspec.cli import main as cli

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
FENCE = re.compile(r"^```(\w*)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
COMMANDS = ("nspec", "python", "pip", "pytest")
SHRINK = {"bench/fuzz_specs.py": ["--mutants", "3", "--timeout", "20"]}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def blocks() -> list[tuple[str, int, str, str]]:
    """(page, line, language, text) of every fenced block; ``language.md``'s spec text excluded."""
    out = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for m in FENCE.finditer(text):
            lang, body = m.group(1), m.group(2)
            if page.name == "language.md" and (lang == "nspec" or not _is_shell(body)):
                continue  # spec text and diagnostics there: test_specs_parse.py, test_errors.py
            out.append((page.relative_to(ROOT).as_posix(), text.count("\n", 0, m.start()) + 1, lang, body))
    return out


def _is_shell(body: str) -> bool:
    lines = _logical_lines(body)
    return bool(lines) and all(words[0] in COMMANDS for words in lines)


def _logical_lines(body: str) -> list[list[str]]:
    """The words of each line, backslash continuations joined and ``#`` comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", body)
    return [words for words in (shlex.split(line, comments=True) for line in joined.splitlines()) if words]


def kind(lang: str, body: str) -> str:
    if lang in ("nspec", "python"):
        return lang
    if _is_shell(body):
        return "shell"
    return "text"


BLOCKS = blocks()
IDS = [f"{page}:{line}" for page, line, _, _ in BLOCKS]


# ---------------------------------------------------------------- placeholders made from the spec
def _values(option: str, argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == option]


def _model_of(argv: list[str]):
    spec = next((a for a in argv[1:] if a.endswith(".nspec")), None)
    params = {}
    for p in _values("--param", argv):
        name, _, value = p.partition("=")
        params[name] = value
    return nspec.load(spec, **{k: _literal(v) for k, v in params.items()}) if spec else None


def _literal(text: str):
    for cast in (int, float):
        with contextlib.suppress(ValueError):
            return cast(text)
    return {"true": True, "false": False}.get(text, text)


def _inputs_for(model, batch: int = 2, steps: int = 4) -> dict[str, np.ndarray]:
    """Random inputs ``[batch, steps, *shape]`` for each of ``model``'s inputs."""
    rng = np.random.default_rng(0)
    out = {}
    for v in model.program.inputs:
        shape = (batch, steps) + tuple(int(d) for d in v.shape)
        out[v.name] = (rng.integers(0, 2, shape) if v.dtype.numpy.kind in "iub"
                       else rng.standard_normal(shape)).astype(v.dtype.numpy)
    return out


def _make_missing(argv: list[str]) -> None:
    """Write the weights, inputs and data files ``argv`` names that do not exist yet."""
    from safetensors.numpy import save_file

    model = None
    for w in _values("--weights", argv):
        if not Path(w).exists():
            model = model or _model_of(argv)
            save_file({k: np.ascontiguousarray(v) for k, v in model.state_dict().items()}, w)
    for x in _values("--inputs", argv):
        if not Path(x).exists():
            model = model or _model_of(argv)
            steps = _values("--steps", argv)
            np.savez(x, **_inputs_for(model, steps=int(steps[0]) if steps else 4))
    for d in _values("--data", argv):
        if not Path(d).exists():
            model = model or _model_of(argv)
            data = _inputs_for(model, batch=32, steps=1)
            data = {k: v[:, 0] for k, v in data.items()}
            rng = np.random.default_rng(1)
            for loss in _values("--loss", argv):
                kind, output, target = (loss.split(":") + ["", ""])[:3]
                shape = tuple(int(size) for size in model.program.var(output).shape)
                if kind == "cross_entropy":  # class labels over the output's last axis
                    data[target] = rng.integers(0, shape[-1], (32,) + shape[:-1]).astype(np.int64)
                else:                        # a target of the output's shape
                    data[target] = rng.standard_normal((32,) + shape).astype(np.float32)
            np.savez(d, **data)


def _nir_file(path: str) -> None:
    import nir

    n = 3
    graph = nir.NIRGraph.from_list(
        nir.Affine(weight=np.eye(n, dtype=np.float32) * 2.0, bias=np.zeros(n, np.float32)),
        nir.LIF(tau=np.full(n, 0.02), r=np.ones(n), v_leak=np.zeros(n), v_threshold=np.ones(n)),
    )
    nir.write(path, graph)


def _sandbox(tmp_path: Path) -> Path:
    for name in ("specs", "tests", "bench"):
        (tmp_path / name).symlink_to(ROOT / name)
    return tmp_path


# ---------------------------------------------------------------- checks per kind
def run_nspec(block: str, tmp_path: Path) -> None:
    module, diags = nspec.dsl.parse(block, "<doc>")
    assert not diags, diags
    path = tmp_path / "doc.nspec"
    path.write_text(block, encoding="utf-8")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = cli(["test", str(path)])
    assert rc == 0, out.getvalue()


SMALL_NET = """neuron LIF {
  param tau = 10 ms;  param I = 1.5 mV
  state v: mV = 0 mV
  dv/dt = (I - v) / tau
  spike when v > 1 mV;  reset { v = 0 mV }
}
network Net {
  population P: LIF[10]
  record spikes of P
}
simulate Net for 10 ms, dt = 0.1 ms
"""

PRELUDES = {
    # page, a phrase of the block: the setup its page's prose states
    ("docs/nir.md", "nspec.nir.read"): "_nir_file('net.nir'); x = np.ones((20, 3), np.float32)",
    ("README.md", "torch.export.load"): (
        "open('net.nspec', 'w').write(open('specs/examples/hybrid.nspec').read()); "
        "assert cli(['compile', 'net.nspec', '--target', 'torch', '-o', 'out/']) == 0; "
        "T = 3; import json as _j; _m = _j.load(open('out/net.json')); "
        "x = {e['name']: torch.zeros([1, T] + list(e['shape'][1:])) for e in _m['step_inputs'] if e['role'] == 'input'}"),
    ("docs/reliability.md", "max_memory"): "open('net.nspec', 'w').write(SMALL_NET)",
}


def run_python(page: str, block: str, tmp_path: Path) -> None:
    import torch

    env = {"np": np, "torch": torch, "cli": cli, "_nir_file": _nir_file, "SMALL_NET": SMALL_NET,
           "__name__": "__doc__"}
    for (where, phrase), code in PRELUDES.items():
        if where == page and phrase in block:
            exec(code, env)
    exec(compile(block, f"{page} block", "exec"), env)


def run_shell(block: str, tmp_path: Path) -> None:
    ci = shlex.split((ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()[-1])
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for line in _logical_lines(block):
        commands = [[]]
        for word in line:
            if word == "&&":
                commands.append([])
            else:
                commands[-1].append(word)
        for argv in commands:
            command = shlex.join(argv)
            if argv[0] == "pip":
                assert argv[:3] == ["pip", "install", "-e"], command
                for extra in re.findall(r"\[(.*?)\]", argv[3]):
                    assert set(extra.split(",")) <= set(extras), f"{command}: no such extra in pyproject.toml"
            elif argv[:3] == ["python", "-m", "pytest"] or argv[0] == "pytest":
                files = [a for a in argv if a.startswith("tests/")]
                if files:  # a page pointing at its tests: they exist (the suite runs them)
                    assert all((ROOT / f.split("::")[0]).is_file() for f in files), command
                else:
                    assert line == ci, f"the documented test command {shlex.join(line)!r} is not .ci/run's {shlex.join(ci)!r}"
            elif argv[0] == "python" and argv[1] in SHRINK:
                rc = _run_script(argv[1], argv[2:] + SHRINK[argv[1]])
                assert rc == 0, command
            elif argv[0] == "python":
                # a training or figure script (minutes, and it writes docs/figures): it exists and
                # its parser takes the documented arguments
                script = ROOT / argv[1]
                assert script.is_file() and script.parent.name == "bench", command
                done = subprocess.run([sys.executable, str(script), *argv[2:], "--help"], capture_output=True,
                                      text=True, timeout=300)
                assert done.returncode == 0 and "usage:" in done.stdout, f"{command}:\n{done.stderr[-2000:]}"
            else:
                assert argv[0] == "nspec", command
                if "nir" in argv[1] and not Path(argv[2]).exists():
                    _nir_file(argv[2])
                _make_missing(argv)
                out = io.StringIO()
                with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                    rc = cli(argv[1:])
                assert rc == 0, f"`{command}` exited {rc}:\n{out.getvalue()[-3000:]}"


def _run_script(script: str, args: list[str]) -> int:
    import importlib.util

    spec = importlib.util.spec_from_file_location("doc_script", ROOT / script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with contextlib.redirect_stdout(io.StringIO()):
        return int(mod.main(args) or 0)


# ---------------------------------------------------------------- output and diagrams
def _architecture_paths(block: str, tmp_path: Path) -> None:
    """The pipeline diagram names real modules."""
    names = re.findall(r"\b((?:dsl|compiler|lowering|runtime)/[\w.]+)", block)
    assert len(names) >= 5, names
    for name in names:
        candidates = [ROOT / name, ROOT / (name + ".py"), ROOT / name.replace(".", "/")]
        assert any(p.exists() for p in candidates), f"docs/architecture.md's diagram names {name}, which does not exist"


def _memory_refusal(block: str, tmp_path: Path) -> None:
    """The refusal quoted is the compiler's, word for word up to the machine's limit."""
    (tmp_path / "net.nspec").write_text(_refusal_spec(), encoding="utf-8")
    err = io.StringIO()
    with contextlib.redirect_stdout(err), contextlib.redirect_stderr(err):
        rc = cli(["check", str(tmp_path / "net.nspec"), "--max-memory", "11.8GiB"])
    assert rc == 1, err.getvalue()
    got = " ".join(err.getvalue().replace(str(tmp_path) + "/", "").split())
    want = " ".join(block.split())
    assert want in got, f"documented:\n{want}\nprinted:\n{got}"


def _refusal_spec() -> str:
    """A spec whose population P of 1e9 neurons sits at line 9, column 21 (as the page shows)."""
    return ("neuron LIF {\n  param tau = 10 ms\n  state v: mV = 0 mV\n  dv/dt = -v / tau\n"
            "  spike when v > 1 mV;  reset { v = 0 mV }\n}\n\nnetwork Net {\n"
            "  population P: LIF[1000000000]\n}\nsimulate Net for 1 ms, dt = 0.1 ms\n")


def _torchrun_lines(block: str, tmp_path: Path) -> None:
    """Each line parses as torchrun's launcher options and then as an ``nspec`` command (the launch
    itself needs several machines; ``tests/test_distributed_training.py`` runs torchrun on one)."""
    from torch.distributed.run import get_args_parser

    from nspec.cli import build_parser

    for argv in _logical_lines(block):
        assert argv[0] == "torchrun", argv
        launch = get_args_parser().parse_args(argv[1:])
        assert launch.module and launch.training_script == "nspec", argv
        build_parser().parse_args(launch.training_script_args)


TEXT = {
    # page, the block's first words: its check
    ("docs/architecture.md", ".nspec text --parse-->"): _architecture_paths,
    ("docs/reliability.md", "net.nspec:9:21: error: population 'P'"): _memory_refusal,
    ("docs/cli.md", "torchrun --nnodes"): _torchrun_lines,
}


def _text_check(page: str, block: str):
    return next((check for (where, start), check in TEXT.items()
                 if where == page and block.lstrip().startswith(start)), None)


# ---------------------------------------------------------------- the tests
def test_the_pages_have_blocks():
    # guards the parametrisation: a wrong root or fence pattern would otherwise collect nothing
    pages = {page for page, *_ in BLOCKS}
    assert {"README.md", "docs/index.md", "docs/api.md", "docs/nir.md", "docs/seeds.md"} <= pages
    assert len(BLOCKS) >= 15


def test_every_block_has_a_check():
    unchecked = [f"{page}:{line}" for page, line, lang, body in BLOCKS
                 if kind(lang, body) == "text" and _text_check(page, body) is None]
    assert not unchecked, ("blocks that are neither nspec, python nor shell commands and have no entry "
                           f"in TEXT: {unchecked}")


@pytest.mark.parametrize("page,line,lang,body", BLOCKS, ids=IDS)
def test_doc_block(page, line, lang, body, tmp_path, monkeypatch):
    monkeypatch.chdir(_sandbox(tmp_path))
    monkeypatch.setenv("NSPEC_NO_PROGRESS", "1")
    k = kind(lang, body)
    if k == "nspec":
        run_nspec(body, tmp_path)
    elif k == "python":
        run_python(page, body, tmp_path)
    elif k == "shell":
        run_shell(body, tmp_path)
    else:
        check = _text_check(page, body)
        assert check is not None, f"{page}:{line}: no check for this block (add one to TEXT)"
        check(body, tmp_path)

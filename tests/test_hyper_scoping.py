"""Which declaration an override binds when files import files (compiler/overrides.py).

Each test builds a small tree of files whose hyperparameters each scale one output by a
different factor, so the output says which declaration an override reached (the oracle is
arithmetic: out = x * factor).  The command line's side (located errors, the listing of every
file's hyperparameters) is in tests/test_cli.py.
"""

from __future__ import annotations

import pytest

import nspec
from nspec.dsl import NspecError
from nspec.compiler.overrides import command_line, keywords


def tree(tmp_path, files: dict[str, str]):
    (tmp_path / "nspec.toml").write_text("")
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path / "root.nspec"


def output(root, **hyper) -> float:
    model = nspec.load(root, **hyper)
    return float(model.run(inputs={"x": [[1.0]]}, steps=1)["y"][0, 0])


LIB = 'module lib "a gain"\nhyper k: float = 2.0\nsystem Lib {\n  in x: f32[1]\n  out y: f32[1]\n  y = k * x\n}\n'
ROOT_OWN_K = """
hyper k: float = 10.0
system Sum {
  in x: f32[1]
  out y: f32[1]
  y = k * x
}
composite Root {
  in x: f32[1]
  out y: f32[1]
  box a: Lib
  box b: Sum
  wire x -> a.x, b.x
  wire a.y -> y
  wire b.y -> y
}
simulate Root for 1 s, dt = 1 s
"""


def test_name_binds_the_roots_own_and_module_name_the_imports(tmp_path):
    root = tree(tmp_path, {"lib.nspec": LIB, "root.nspec": 'import "lib.nspec"\n' + ROOT_OWN_K})
    assert output(root) == 12.0                    # 2 (lib's k) + 10 (root's k)
    assert output(root, k=1.0) == 3.0              # the root's k only
    assert output(root, **{"lib.k": 5.0}) == 15.0  # lib's k only
    assert output(root, **{"lib.k": 5.0, "k": 1.0}) == 6.0


def test_an_alias_a_renamed_import_and_a_file_name_without_header(tmp_path):
    headless = LIB.replace('module lib "a gain"\n', "")
    files = {"sub/gains.nspec": headless, "root.nspec": 'import "sub/gains.nspec" as g\n' + ROOT_OWN_K.replace(
        "box a: Lib", "box a: g.Lib")}
    root = tree(tmp_path, files)
    assert output(root, **{"g.k": 5.0}) == 15.0      # the alias the root imports the file as
    assert output(root, **{"gains.k": 5.0}) == 15.0  # no header: the file's name
    renamed = tree(tmp_path, {"root.nspec": 'from "sub/gains.nspec" import Lib, k as gain\n' + ROOT_OWN_K})
    assert output(renamed, gain=5.0) == 15.0         # the root reads gains.nspec's k as `gain`


def test_a_nested_import_is_named_by_its_module(tmp_path):
    middle = 'module middle "passes Lib on"\nfrom "lib.nspec" import Lib\nhyper m: float = 1.0\n'
    root = tree(tmp_path, {"lib.nspec": LIB, "middle.nspec": middle,
                           "root.nspec": 'from "middle.nspec" import Lib\n' + ROOT_OWN_K})
    assert output(root, **{"lib.k": 3.0}) == 13.0
    with pytest.raises(NspecError, match="unknown hyperparameter 'm' .*did you mean 'middle.m'"):
        nspec.load(root, m=2.0)  # the root does not import m: it is middle's


def test_ambiguity_names_every_declaration(tmp_path):
    other = 'module other "another k"\nhyper k: float = 4.0\n'
    root = tree(tmp_path, {"lib.nspec": LIB, "other.nspec": other,
                           "root.nspec": 'import "lib.nspec"\nimport "other.nspec"\n'
                                         + ROOT_OWN_K.replace("hyper k: float = 10.0\n", "").replace("k * x", "3 * x")})
    with pytest.raises(NspecError, match=r"'k' is ambiguous: it is declared in .*lib.nspec:2 and .*other.nspec:2; "
                                         r"write lib.k or other.k"):
        nspec.load(root, k=1.0)
    assert output(root, **{"lib.k": 1.0}) == 4.0  # 1 + 3
    twin = tree(tmp_path, {"a/lib.nspec": LIB, "b/lib.nspec": LIB.replace("2.0", "3.0"),
                           "root.nspec": 'import "a/lib.nspec" as first\nimport "b/lib.nspec" as second\n'
                                         + ROOT_OWN_K.replace("box a: Lib", "box a: first.Lib")})
    with pytest.raises(NspecError, match="'lib.k' is ambiguous.*the files have the same module name"):
        nspec.load(twin, **{"lib.k": 1.0})
    assert output(twin, **{"first.k": 1.0}) == 11.0
    aliased = tree(tmp_path, {"root.nspec": 'import "lib.nspec" as first\n'
                                            + ROOT_OWN_K.replace("box a: Lib", "box a: first.Lib")})
    with pytest.raises(NspecError, match="'lib.k' and 'first.k' name the same hyperparameter"):
        nspec.load(aliased, **{"first.k": 1.0, "lib.k": 2.0})


def test_a_template_parameter_is_not_an_override(tmp_path):
    text = ROOT_OWN_K.replace("system Sum {", "system Sum(scale = 1.0) {").replace("y = k * x", "y = scale * k * x")
    root = tree(tmp_path, {"lib.nspec": LIB, "root.nspec": 'import "lib.nspec"\n' + text})
    with pytest.raises(NspecError) as info:
        nspec.load(root, scale=3.0)
    (d,) = info.value.diagnostics
    assert any("'scale' is a template parameter of Sum" in n for n in d.notes)


def test_a_test_block_sets_a_qualified_name_and_reports_an_unknown_one_at_its_set(tmp_path):
    tests = ('test "lib.k" {\n  set lib.k = 5.0\n  input x = 1\n  run Root for 1 s\n  expect max(abs(y - 15)) < 1e-6\n}\n'
             'test "typo" {\n  set lib.kk = 5.0\n  input x = 1\n  run Root for 1 s\n  expect max(abs(y - 15)) < 1e-6\n}\n')
    root = tree(tmp_path, {"lib.nspec": LIB, "root.nspec": 'import "lib.nspec"\n' + ROOT_OWN_K + tests})
    from nspec.runtime.spectest import run_file
    from nspec.compiler.driver import check_files

    outcomes, _ = run_file(root)
    assert [o.passed for o in outcomes] == [True, False]
    diags, _ = check_files([root])
    (d,) = diags
    assert (d.span.line, d.message) == (26, f"test \"typo\": unknown hyperparameter 'lib.kk' for {root}; did you mean "
                                            "'lib.k'?")


@pytest.mark.parametrize("words, text", [
    (["run", "a.nspec", "--param", "tau=5ms"], "nspec run a.nspec --param tau=5ms"),
    (["run", "a.nspec", "--param=tau=5ms"], "nspec run a.nspec --param=tau=5ms"),
    (["run", "a.nspec", "-ptau=5ms"], "nspec run a.nspec -ptau=5ms"),
    (["run", "a.nspec", "--par", "tau=5 ms"], "nspec run a.nspec --par 'tau=5 ms'"),
])
def test_the_command_line_locates_each_name(words, text):
    given = command_line(words)
    span = given.span("tau")
    assert given.text == text
    assert (span.path, span.line, span.col, span.end_col) == ("<command line>", 1, text.index("tau") + 1,
                                                              text.index("tau") + 4)


def test_a_python_call_locates_each_keyword():
    given = keywords("nspec.load", "a.nspec", {"tau": "5 ms", "lib.k": 2})
    assert given.text == "nspec.load('a.nspec', tau='5 ms', **{'lib.k': 2})"
    for key in ("tau", "lib.k"):
        span = given.span(key)
        assert given.text[span.col - 1:span.end_col - 1] == key

"""Named syntax mistakes, given by example: ``ERROR_EXAMPLES`` and the lookup table built from it.

``parse_errors.diagnose`` looks a failing parser state up in ``example_table()``.
"""

from __future__ import annotations

from functools import lru_cache

from lark import Token
from lark.exceptions import UnexpectedToken

from .grammar import accepted_terminals, after_operand, first_error, state_position, statement_context

# Named mistakes: label -> snippets that fail the same way.  A snippet names the statement keyword,
# the LALR state where the parser stops and the token it stops on; an error with the same keyword
# and state gets the label, whatever the nesting depth around it (Lark's match_examples would also
# compare stack depths, and re-parse every snippet on every error).  Lookup order: same keyword,
# state and token; same keyword and state; the same for a statement without keyword; inside
# brackets, same state and token under any keyword.  The first label listed wins a tie.  Labels
# may say {found} (the offending token) and {prev} (the token before it).  Mistakes that depend
# on brackets, keywords or the text around the error have rules in ``diagnose`` instead.
ERROR_EXAMPLES: dict[str, list[str]] = {
    "missing '=' before {found}: a value is given as 'param w = 1'": [
        "neuron A { param a 1 }",
        "system S { state s 0 }",
        "system S { let x 1 }",
        "let x 1",
        "hyper n 3",
        "test \"t\" { set n 2 }",
        "test \"t\" { input I 2 }",
        "simulate N for 1 s, dt 1 ms",
    ],
    "a differential equation needs a right-hand side: 'dv/dt = ...'": [
        "neuron A { dv/dt }",
        "neuron A { dv/dt v }",
        "neuron A { dv/dt = }",
    ],
    "'spike' needs a condition after 'when': 'spike when v > v_th'": [
        "neuron A { spike v > 1 }",
        "neuron A { spike }",
        "neuron A { spike when }",
    ],
    "a wire connects a source to targets: 'wire a.y -> b.x'": [
        "composite C { wire a.y }",
        "composite C { wire a.y b.x }",
        "composite C { wire x b.x }",
        "composite C { wire -> b.x }",
        "composite C { wire a.y -> }",
        "composite C { wire a.y -> b.x, }",
    ],
    "a port needs a type: 'in x: f32[n]'": [
        "system S { in x }",
        "system S { out y }",
        "system S { in x: }",
        "system S { in x f32 }",
    ],
    "top-level items are declarations (module, import, hyper, let, neuron, synapse, system, "
    "composite, network, workspace, simulate, test), found {found}": [
        "v = 1",
        "param a = 1",
        "state v = 1",
        "dv/dt = 1",
        "box a: B",
        "1",
        "neuron A { }\nv = 1",
        "neuron A { }\nparam a = 1",
        "neuron A { }\n1",
    ],
    "a test needs a name in double quotes: 'test \"fires sparsely\" { ... }'": [
        "test foo { }",
        "test { }",
    ],
    "'simulate' needs a target and a duration: 'simulate Net for 1 s'": [
        "simulate for 1 s",
        "simulate Net",
        "simulate Net 1 s",
        "simulate",
    ],
    "a population needs a neuron type and a size: 'population P: LIF[100]'": [
        "network N { population P: LIF }",
        "network N { population P LIF[4] }",
        "network N { population P: [4] }",
        "network N { population P: LIF(a = 1) }",
    ],
    "a projection needs '->' between its source and target: 'projection e: A -> B'": [
        "network N { projection p: A B }",
        "network N { projection p: A }",
        "network N { projection p: A[0:2] B }",
        "network N { projection p A -> B }",
    ],
    "unknown connection rule {found}: use all_to_all, one_to_one, p = <probability>, "
    "fixed_in_degree <k>, fixed_out_degree <k>, indices(<pre>, <post>) or where <condition>": [
        "network N { projection q: A -> B { connect maybe } }",
        "network N { projection q: A -> B { connect } }",
        "network N { projection q: A -> B { connect 0.1 } }",
    ],
    "a connection probability is written 'connect p = 0.1'": [
        "network N { projection q: A -> B { connect p 0.1 } }",
    ],
    "a box needs ':' and a system: 'box a: Dense(D = 8)'": [
        "composite C { box a Dense }",
        "composite C { box a: }",
        "composite C { box a }",
        "composite C { box a: 3 }",
    ],
    "'expose' needs 'as' and the outer name: 'expose b.h as hidden'": [
        "composite C { expose a.y }",
        "composite C { expose a.y hidden }",
    ],
    "'reset' takes a block of statements: 'reset { v = Vr }'": [
        "neuron A { reset v = 1 }",
        "neuron A { reset }",
    ],
    "'until' needs a bound on the number of ticks: 'until done max 50'": [
        "system S { until x > 1 }",
    ],
    "a slice has at most three parts: 'start:stop:step'": [
        "system S { let x = a[1:2:3:4] }",
    ],
    "a reparameterisation needs 'via' and a function: 'positive via relu', 'bounded(0, 1) via sigmoid'": [
        "system S { param w = 1 positive }",
        "system S { param w = 1 bounded(0, 1) }",
        "system S { param w = 1 positive relu }",
    ],
    "'expect_error' needs the expected message in double quotes: 'expect_error \"cannot add\"'": [
        "test \"t\" { expect_error }",
        "test \"t\" { expect_error foo }",
    ],
    "a message is a string in double quotes: 'assert D > 0, \"D must be positive\"'": [
        "system S { assert x, hello }",
        "test \"t\" { expect x, hello }",
    ],
    "'one_of' takes a list of choices: 'one_of [\"a\", \"b\"]'": [
        "hyper n: int = 1 one_of 1, 2",
        "hyper n: int = 1 one_of",
    ],
    "'import' needs the names to bring in: 'from \"lib/neurons.nspec\" import LIF'": [
        "from \"x.nspec\" import",
        "from \"x.nspec\" import ,",
        "from \"x.nspec\" import A,",
        "from \"x.nspec\" A",
    ],
    "an import path is a string in double quotes: 'import \"lib/neurons.nspec\"'": [
        "import x",
        "from x import y",
        "import",
    ],
    "a declaration's body is a block in braces: 'neuron LIF { ... }'": [
        "system S(D) x",
        "system S(D) = 1",
        "system S(D, N = 2) x",
        "system S() x",
    ],
    "a test's body is a block: 'test \"fires\" { run for 10 ms }'": [
        "test \"t\" run",
        "test \"t\"",
    ],
    "a test block holds run, input, set, let, expect and expect_error statements, not {found}": [
        "test \"t\" { x }",
        "test \"t\" { max(x) }",
        "test \"t\" { 1 }",
        "test \"t\" { in }",
        "test \"t\" { x = 1 }",
    ],
    "'method' needs an integration method: exact, euler, exp_euler or rk4": [
        "neuron N { dv/dt = 1 method }",
        "neuron N { method }",
        "neuron N { dv/dt = 1 method 1 }",
    ],
    "'unless' needs a condition: 'unless refractory'": [
        "neuron N { dv/dt = 1 unless }",
    ],
    "'surrogate' needs a function: 'surrogate fast_sigmoid(25)'": [
        "neuron N { spike when v > 1 surrogate }",
        "neuron N { spike when v > 1 surrogate 25 }",
    ],
    "'record' needs the variables to record: 'record v, ge of P'": [
        "network N { record of P }",
        "network N { record }",
    ],
    "'write' needs 'by' and a rule: 'write by softmax'": [
        "workspace W { write softmax }",
        "workspace W { write }",
    ],
    "a hyperparameter needs a default value: 'hyper n_layer: int = 6'": [
        "hyper n: int",
        "hyper n",
    ],
    "expected a name after '.'": [
        "system S { let x = a. }",
        "system S { let x = a..b }",
        "system S { let x = a.1 }",
        "composite C { wire a. -> b.x }",
    ],
    "a type is expected after ':': f32[n], i64, bool, spike, or a unit such as mV": [
        "system S { let x: = 1 }",
        "system S { param w: = 1 }",
        "system S { state s: = 1 }",
        "hyper n: = 1",
        "system S(D:) { }",
    ],
    "a unit power needs an integer exponent: 'm^2', 's^-1'": [
        "system S { in x: mV^ }",
        "system S { in x: mV^a }",
        "system S { in x: mV^- }",
    ],
    "a unit is expected after {prev}: 'mV/ms', 'nS*mV'": [
        "system S { in x: mV/ }",
        "system S { in x: mV* }",
        "system S { in x: f32 mV/ }",
    ],
    "'merge' needs a rule: sum, max, or, or exclusive": [
        "system S { in x: f32[2] merge }",
        "system S { in x: f32[2] merge 1 }",
    ],
    "'of' needs a population: 'record v of P[0:10]'": [
        "network N { record v of }",
        "network N { record v of 1 }",
    ],
    "an assignment needs '=' and a value after {prev}: 'y = h @ W', 'next S = S + 1', 'ge += w'": [
        "system S { next S }",
        "system S { y }",
        "system S { y 1 }",
        "neuron N { on_pre { ge } }",
        "network N { projection p: A -> B { ge } }",
    ],
    "'if' needs a condition and a block: 'if routing == \"none\" { ... } else { ... }'": [
        "system S { if c\n}",
    ],
    "'else' needs a block or another 'if': 'else { ... }', 'else if c { ... }'": [
        "system S { if c { } else x }",
        "system S { if c { } else }",
    ],
    "'for' needs a loop variable, 'in', a list and a block: 'for i in range(n) { ... }'": [
        "system S { for in range(3) { } }",
        "system S { for i range(3) { } }",
        "system S { for i in range(3)\n}",
        "system S { for }",
        "system S { for 1 in range(3) { } }",
        "system S { for i in { } }",
    ],
    "a family member's index is one expression in brackets: 'let h[i + 1] = ...', 'param W[i]: f32[D]'": [
        "system S { let h[] = 1 }",
        "system S { param W[] : f32 }",
    ],
    "'ticks' needs a count: 'ticks 5'": [
        "system S { ticks }",
    ],
    "a template parameter is a name with an optional type and default: 'system S(D, N = 4)'": [
        "system S(D, ) { }",
        "system S(, D) { }",
        "system S(1) { }",
        "system S(k + 1) { }",
        "system S(k - = 1) { }",
        "system S(k += 1) { }",
    ],
}


@lru_cache(maxsize=1)
def example_table() -> dict[tuple, str]:
    """(statement keyword, parser state, token type or None) -> label, from ``ERROR_EXAMPLES``."""
    table: dict[tuple, str] = {}
    for label, snippets in ERROR_EXAMPLES.items():
        for snippet in snippets:
            exc = first_error(snippet)
            if isinstance(exc, UnexpectedToken) and exc.token.type == "$END":
                exc = first_error(snippet + "\n")  # as in a file, which ends with a newline
            if isinstance(exc, UnexpectedToken):
                if after_operand(accepted_terminals(exc)):
                    continue  # the state after an operand is shared by every expression: not a named mistake
                key = (statement_context(exc), state_position(exc))
                table.setdefault((*key, exc.token.type), label)
                table.setdefault((*key, None), label)
                if any(isinstance(v, Token) and v.type in ("LPAR", "LSQB") for v in exc.state.value_stack):
                    # inside brackets the mistake is in an expression, whatever the statement around it
                    table.setdefault(("*", state_position(exc), exc.token.type), label)
    return table


__all__ = ["ERROR_EXAMPLES", "example_table"]

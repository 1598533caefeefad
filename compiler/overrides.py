"""Hyperparameter overrides: which declaration each one binds, and where it was written.

An override (``nspec run --param NAME=VALUE``, ``nspec.load(path, NAME=VALUE)``, a test's
``set NAME = VALUE``) binds one ``hyper`` declaration of the spec, by one rule (docs/language.md,
"Hyperparameters across files"):

* ``NAME`` is read the way the root file (the spec being compiled) reads a name: its own
  hyperparameter, or one it imports (``from "f" import NAME``, or ``import "f"``, which imports
  all of f's names).  Two files imported whole that both declare ``NAME``, into a root that
  declares none, make it ambiguous;
* ``M.NAME`` is hyperparameter ``NAME`` of the file the root imports ``as M``, else of the file of
  the spec whose module name is ``M`` (its ``module`` header, else its file name without
  ``.nspec``), at any depth of imports.  Two such files make it ambiguous;
* ``dt`` and ``seed`` are the run's settings, not hyperparameters.

An override sets that one declaration, wherever it is read; another declaration of the same name
keeps its value, and a template parameter is never bound by one (its value is given where its
declaration is used).  An override that binds nothing, or is ambiguous, is an error located where
it was written (``Given``: the command line, the ``nspec.load`` call, the test's ``set``) that names
the declarations involved, or lists the hyperparameters of every file of the spec with a
did-you-mean.
"""

from __future__ import annotations

import difflib
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from nspec.dsl import ast as A
from nspec.dsl.diagnostics import SourceMap, Span

from .modules import Loader, Scope

RUN_SETTINGS = ("dt", "seed")


# ---------------------------------------------------------------- where overrides were written
@dataclass(frozen=True, slots=True)
class Given:
    """One line of text that holds the overrides (a command line, a Python call), shown in
    diagnostics under the pseudo-file ``path``, and the span of each override's name in it."""

    path: str
    text: str
    spans: tuple[tuple[str, Span], ...]

    def span(self, key: str) -> Span:
        """Where ``key`` was written (the whole line when it cannot be found)."""
        return dict(self.spans).get(key, Span(self.path, 1, 1, 1, len(self.text) + 1))

    def register(self, sources: SourceMap) -> None:
        sources.add(self.path, self.text)


def _given(path: str, pieces: Iterable[tuple[str, str | None, int]]) -> Given:
    """A ``Given`` from the pieces of its text: (text, the key it writes or None, the key's offset in it)."""
    text, spans = "", []
    for piece, key, offset in pieces:
        if key is not None:
            start = len(text) + offset + 1
            spans.append((key, Span(path, 1, start, 1, start + len(key))))
        text += piece
    return Given(path, text, tuple(spans))


def keywords(function: str, spec: str | Path, hyper: Mapping[str, Any]) -> Given:
    """The Python call that passed ``hyper``: ``nspec.load('net.nspec', tau='5 ms')``."""
    pieces: list[tuple[str, str | None, int]] = [(f"{function}({str(spec)!r}", None, 0)]
    for key, value in hyper.items():
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:36] + " ..."  # a long list, say
        if key.isidentifier():
            pieces.append((f", {key}={shown}", key, 2))
        else:  # a qualified name cannot be a keyword: **{'cells.tau': ...}
            pieces.append((f", **{{{key!r}: {shown}}}", key, 6))  # after ', **{' and the quote
    pieces.append((")", None, 0))
    return _given(f"<{function}>", pieces)


def command_line(words: Sequence[str]) -> Given:
    """The command line ``nspec WORDS...``, with the name of each ``--param NAME=VALUE`` located
    (also ``--param=NAME=VALUE``, ``-p NAME=VALUE``, ``-pNAME=VALUE`` and abbreviations like ``--par``),
    and of each ``--grid NAME=V1,V2`` of ``nspec sweep`` (``-g``) alike."""

    def is_option(word: str) -> bool:
        return word in ("-p", "-g") or (len(word) >= 4 and ("--param".startswith(word) or "--grid".startswith(word)))

    pieces: list[tuple[str, str | None, int]] = [("nspec", None, 0)]
    after_option = False
    for word in words:
        at = None  # where NAME=VALUE starts in the word
        if after_option:
            at = 0
        elif word.startswith("--") and "=" in word and is_option(word.partition("=")[0]):
            at = word.index("=") + 1
        elif word.startswith(("-p", "-g")) and not word.startswith("--") and len(word) > 2:
            at = 2
        after_option = is_option(word)
        item = word[at:] if at is not None else ""
        key = item.partition("=")[0].strip() if "=" in item else None
        quoted = shlex.quote(word)  # a quote shlex adds goes before the word; the name precedes any inside it
        offset = 1 + (quoted != word) + (at or 0) + len(item) - len(item.lstrip())
        pieces.append((" " + quoted, key, offset))
    return _given("<command line>", pieces)


# ---------------------------------------------------------------- the rule
@dataclass(frozen=True, slots=True)
class Binding:
    """An override bound to its declaration: ``decl`` of the file ``home``, written as ``key``."""

    key: str
    value: Any
    decl: A.Hyper
    home: Scope


class Overrides:
    """The hyperparameters of one spec (its root file and every file it loads) and the rule above."""

    def __init__(self, loader: Loader, root: Scope):
        self.root = root
        self.scopes = [s for s in loader.scopes.values() if s is not None]
        self.whole = self._imported_whole(loader)

    def _imported_whole(self, loader: Loader) -> list[Scope]:
        """The files the root imports whole (``import "f"``, no alias), in order."""
        out = []
        for item in self.root.module.items:
            if isinstance(item, A.Import) and item.names is None and item.alias is None:
                target, _ = loader.resolve_import(self.root.path, item.path)
                scope = loader.scopes.get(os.path.normpath(str(target))) if target is not None else None
                if scope is not None:
                    out.append(scope)
        return out

    @staticmethod
    def own(scope: Scope) -> list[A.Hyper]:
        """The hyperparameters ``scope``'s file declares itself, in order."""
        return [d for d, home in scope.decls.values() if isinstance(d, A.Hyper) and home is scope]

    @staticmethod
    def module_name(scope: Scope) -> str:
        return scope.module.header.name if scope.module.header is not None else Path(scope.path).stem

    def find(self, key: str) -> list[tuple[A.Hyper, Scope]]:
        """The declarations ``key`` names: one binds it, none is unknown, more are ambiguous."""
        prefix, _, name = key.rpartition(".")
        if not prefix:
            found = self.root.decls.get(name)
            if found is None or not isinstance(found[0], A.Hyper):
                return []
            if found[1] is self.root or self._imported_by_name(name):
                return [found]
            return [(d, s) for s in self.whole for d in self.own(s) if d.name == name] or [found]
        if prefix in self.root.aliases:
            found = self.root.aliases[prefix].find(name)
            return [found] if found is not None and isinstance(found[0], A.Hyper) else []
        return [(d, s) for s in self.scopes if self.module_name(s) == prefix for d in self.own(s) if d.name == name]

    def _imported_by_name(self, name: str) -> bool:
        return any(isinstance(i, A.Import) and i.names is not None and any((n.alias or n.name) == name for n in i.names)
                   for i in self.root.module.items)

    def spelling(self, decl: A.Hyper, home: Scope) -> str:
        """How an override names ``decl``: bare where the root sees it so, else qualified by its module."""
        if self.find(decl.name) == [(decl, home)]:
            return decl.name
        return f"{self.module_name(home)}.{decl.name}"

    # ------------------------------------------------------------ messages
    def ambiguous(self, key: str, found: list[tuple[A.Hyper, Scope]]) -> str:
        where = " and ".join(f"{home.path}:{d.span.line}" for d, home in found)
        spellings = sorted({f"{self.module_name(home)}.{d.name}" for d, home in found})
        hint = f"; write {' or '.join(spellings)}" if len(spellings) == len(found) else \
            "; the files have the same module name, so import one of them 'as' a name of its own"
        return f"hyperparameter '{key}' is ambiguous: it is declared in {where}{hint}"

    def unknown(self, key: str) -> tuple[str, tuple[str, ...]]:
        """The message for a key that names no hyperparameter, and notes listing every file's."""
        files = [self.root] + [s for s in self.scopes if s is not self.root]
        groups = [(s, [self.spelling(d, s) for d in self.own(s)]) for s in files]
        known = [n for _, names in groups for n in names]  # each written as the notes write it, then qualified
        known += [f"{self.module_name(s)}.{d.name}" for s in files for d in self.own(s)]
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6) or \
            [n for n in known if n.lower() == key.lower() or n.rpartition(".")[2] == key.rpartition(".")[2]][:1]
        message = f"unknown hyperparameter '{key}' for {self.root.path}"
        if close:
            message += f"; did you mean '{close[0]}'?"
        notes = [f"hyperparameters of {s.path}: {', '.join(names)}" for s, names in groups if names]
        silent = [s.path for s, names in groups if not names]
        if silent:
            notes.append(f"{', '.join(silent)} declare{'s' * (len(silent) == 1)} no hyperparameter")
        notes.extend(self._template_parameters(key.rpartition(".")[2]))
        return message, tuple(notes)

    def _template_parameters(self, name: str) -> list[str]:
        return [f"'{name}' is a template parameter of {d.name} ({home.path}:{p.span.line}), given where {d.name} is "
                f"used ({d.name}({name} = ...)), not by an override"
                for s in self.scopes for d, home in s.decls.values()
                if home is s and isinstance(d, A.SystemDecl) for p in d.params if p.name == name]

    # ------------------------------------------------------------ binding
    def bind(self, overrides: Mapping[str, Any], locate: Callable[[str], Span],
             error: Callable[..., None]) -> dict[int, Binding]:
        """``id(declaration) -> Binding`` for every override but the run settings; ``error(span,
        message, *notes)`` reports the ones that bind nothing or more than one declaration."""
        out: dict[int, Binding] = {}
        for key, value in overrides.items():
            if key in RUN_SETTINGS:
                continue
            found = self.find(key)
            if len(found) == 1:
                decl, home = found[0]
                if id(decl) in out:
                    error(locate(key), f"'{key}' and '{out[id(decl)].key}' name the same hyperparameter "
                                       f"({home.path}:{decl.span.line}); give it once")
                    continue
                out[id(decl)] = Binding(key, value, decl, home)
            elif found:
                error(locate(key), self.ambiguous(key, found))
            else:
                message, notes = self.unknown(key)
                error(locate(key), message, *notes)
        return out

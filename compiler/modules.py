"""Loading a spec and its imports, and resolving top-level names.

``load(path)`` parses the file and, transitively, every file it imports (paths relative to the
importing file; ``std/...`` means the shipped library ``specs/lib/``, found by ``std_lib`` in a source
tree and in an installed wheel alike; a path found in neither place is looked up in the folders of
``NSPEC_PATH``).  Imports are confined: an import must name a
``.nspec`` file inside the project of the spec being compiled (the nearest folder above it
holding ``nspec.toml``, ``pyproject.toml`` or ``.git``, else the spec's own folder), inside
``std/`` or inside a ``NSPEC_PATH`` folder, after resolving ``..`` and symbolic links; anything
else is refused before the file is opened, so a diagnostic never quotes a file that is not a
spec.  Missing files, import cycles and unknown imported names are located diagnostics at the
``import`` line.  Each module gets a
``Scope``: its own declarations plus the names it imports.  ``parse_file`` (read and parse one
file) lives here, below the driver, because loading an import needs it too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from importlib import resources
import os
from pathlib import Path

from nspec.dsl import ast as A
from nspec.dsl.diagnostics import Collector, Diagnostic, SourceMap, Span, error
from nspec.dsl.parser import parse

SOURCE_STD_LIB = Path(__file__).resolve().parent.parent / "specs" / "lib"  # compiler/ sits beside specs/
PROJECT_MARKERS = ("nspec.toml", "pyproject.toml", ".git")
SEARCH_PATH_VARIABLE = "NSPEC_PATH"


def project_root(spec: Path) -> Path:
    """The folder whose tree a spec's imports may read: the nearest one above ``spec`` with a
    project marker, else the spec's own folder."""
    folder = spec.resolve().parent
    for candidate in (folder, *folder.parents):
        if any((candidate / m).exists() for m in PROJECT_MARKERS):
            return candidate
    return folder


@cache
def std_lib() -> Path:
    """The folder ``std/`` names: in an installed wheel, the package data ``nspec/std/`` (pyproject.toml
    maps ``specs/lib`` there); in a source tree or an editable install, ``specs/lib`` itself."""
    installed = resources.files("nspec").joinpath("std")
    if isinstance(installed, Path) and installed.is_dir():
        return installed.resolve()
    return SOURCE_STD_LIB


def search_path() -> list[Path]:
    """The folders of ``NSPEC_PATH`` (separated like ``PATH``), in order."""
    return [Path(p).resolve() for p in os.environ.get(SEARCH_PATH_VARIABLE, "").split(os.pathsep) if p]

Decl = A.SystemDecl | A.Hyper | A.Const


@dataclass
class Scope:
    """The top-level names visible in one module."""

    module: A.Module
    decls: dict[str, tuple[Decl, "Scope"]] = field(default_factory=dict)  # name -> (declaration, its home scope)
    aliases: dict[str, "Scope"] = field(default_factory=dict)             # `import "x" as x`

    @property
    def path(self) -> str:
        return self.module.path

    def find(self, name: str) -> tuple[Decl, "Scope"] | None:
        if name in self.decls:
            return self.decls[name]
        if "." in name:
            alias, rest = name.split(".", 1)
            if alias in self.aliases:
                return self.aliases[alias].find(rest)
        return None

    def systems(self) -> list[A.SystemDecl]:
        return [d for d, home in self.decls.values() if isinstance(d, A.SystemDecl) and home is self]


def read_source(path: str | Path, sources: SourceMap) -> tuple[str | None, list[Diagnostic]]:
    """The UTF-8 text of a spec file (added to ``sources``), or None and the located reason why not."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        return None, [error(Span(str(path), 1, 1), f"no such file: {path}")]
    except IsADirectoryError:
        return None, [error(Span(str(path), 1, 1), f"{path} is a directory, not a spec file")]
    except OSError as exc:
        return None, [error(Span(str(path), 1, 1), f"cannot read {path}: {exc.strerror}")]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        return None, [error(Span(str(path), line, col), "the file is not valid UTF-8 text")]
    sources.add(str(path), text)
    return text, []


def parse_file(path: str | Path, sources: SourceMap) -> tuple[A.Module | None, list[Diagnostic]]:
    """A spec file's AST and its parse diagnostics (the first phase of the driver, and of every import)."""
    text, diags = read_source(path, sources)
    if text is None:
        return None, diags
    return parse(text, str(path))


def _decl_name(item) -> str | None:
    return getattr(item, "name", None) if isinstance(item, (A.SystemDecl, A.Hyper, A.Const)) else None


class Loader:
    """Parses files once each and builds their scopes; collects diagnostics as it goes."""

    def __init__(self, sources: SourceMap, diags: Collector):
        self.sources = sources
        self.diags = diags
        self.scopes: dict[str, Scope | None] = {}
        self._active: list[str] = []
        self._spans: list[Span | None] = []  # the import that loaded each active file
        self.roots: tuple[Path, ...] = ()  # where imports may read; set by the first load

    def resolve_import(self, importer: str, target: str) -> tuple[Path | None, str | None]:
        """The file an ``import`` names, or None and why it cannot be imported."""
        if target.startswith("std/"):
            candidates = [std_lib() / target[4:]]
        elif Path(target).is_absolute():
            return None, (f"an import names a path relative to the importing spec, a std/ file or a file in "
                          f"{SEARCH_PATH_VARIABLE}, not an absolute path")
        else:
            candidates = [Path(importer).parent / target] + [folder / target for folder in search_path()]
        if not target.endswith(".nspec"):
            return None, "only .nspec files can be imported"
        try:
            resolved = [(c, c.resolve()) for c in candidates]
        except (OSError, RuntimeError) as exc:  # a name too long, a symlink loop
            return None, f"the path cannot be resolved ({getattr(exc, 'strerror', None) or exc})"
        for candidate, path in resolved:
            if not any(path.is_relative_to(root) for root in self.roots):
                continue  # outside every allowed tree: never opened
            try:
                exists, regular = path.exists(), path.is_file()
            except OSError as exc:  # a name too long for the file system, say
                return None, f"the path cannot be opened ({exc.strerror})"
            if exists and not regular:
                return None, f"{candidate.as_posix()} is not a regular file"
            if regular:
                return candidate, None  # as written (relative paths stay relative in diagnostics)
        inside = [c for c, path in resolved if any(path.is_relative_to(r) for r in self.roots)]
        if not inside:
            roots = ", ".join(r.as_posix() for r in self.roots)
            return None, (f"it resolves outside the folders imports may read ({roots}); add a folder to "
                          f"{SEARCH_PATH_VARIABLE} to import from it")
        return None, f"no such file ({inside[0].as_posix()})"

    def load(self, path: str, span: Span | None = None) -> Scope | None:
        if not self.roots:  # the spec being compiled: its project, std/ and the search path
            self.roots = (project_root(Path(path)), std_lib(), *search_path())
        key = os.path.normpath(str(path))
        if key in self._active:
            k = self._active.index(key)
            cycle = self._active[k:] + [key]
            # report it at the import that leads out of the first file of the cycle
            where = self._spans[k + 1] if k + 1 < len(self._spans) else span
            self.diags.error(where or Span(key, 1, 1), "import cycle: " + " -> ".join(cycle))
            return None
        if key in self.scopes:
            return self.scopes[key]
        module, parse_diags = parse_file(key, self.sources)
        if module is None:
            if span is not None and parse_diags and parse_diags[0].message.startswith("no such file"):
                self.diags.error(span, f"cannot import {Path(key).as_posix()}: no such file")
            else:
                self.diags.extend(parse_diags)
            self.scopes[key] = None
            return None
        self._active.append(key)
        self._spans.append(span)
        try:
            scope = self._build_scope(module)
        finally:
            self._active.pop()
            self._spans.pop()
        self.scopes[key] = scope
        return scope

    def _build_scope(self, module: A.Module) -> Scope:
        scope = Scope(module)
        seen: dict[str, Span] = {}
        for item in module.items:
            name = _decl_name(item)
            if name is None:
                continue
            if name in seen:
                first = seen[name]
                self.diags.error(item.span, f"'{name}' is declared twice (first at line {first.line})")
                continue
            seen[name] = item.span
            scope.decls[name] = (item, scope)
        for item in module.items:
            if not isinstance(item, A.Import):
                continue
            target, why = self.resolve_import(module.path, item.path)
            if target is None:
                self.diags.error(item.span, f"cannot import \"{item.path}\": {why}")
                continue
            other = self.load(str(target), item.span)
            if other is None:
                continue
            if item.names is None and item.alias is not None:
                scope.aliases[item.alias] = other
            elif item.names is None:
                for name, (decl, home) in other.decls.items():
                    if home is other and name not in scope.decls:
                        scope.decls[name] = (decl, home)
            else:
                for imp in item.names:
                    found = other.decls.get(imp.name)
                    if found is None:
                        self.diags.error(imp.span, f"\"{item.path}\" has no declaration named '{imp.name}'")
                        continue
                    local = imp.alias or imp.name
                    if local in seen:
                        self.diags.error(imp.span, f"importing '{local}' clashes with the declaration at line "
                                                   f"{seen[local].line}")
                        continue
                    scope.decls[local] = found
        return scope

"""MkDocs hooks (mkdocs.yml ``hooks:``): pages written from the code and the specs at build time.

``cli.md`` carries ``<!-- nspec:cli -->``, replaced by the reference of ``nspec.cli.build_parser()``:
one section per subcommand with its usage line and a table of its arguments, so the page cannot drift
from the parser.  ``gallery.md`` carries ``<!-- nspec:gallery -->``, replaced by one section per spec
of ``specs/brian2/`` and ``specs/seeds/``: its header comment, the command that runs it, and the
figures drawn from it, with the command that draws each (``docs/figures/manifest.json``, written
by ``bench/gallery.py``).  ``on_config`` points mkdocstrings at a
tree of links that lays the ``nspec`` package out as it installs (``api.md``).
"""

from __future__ import annotations

import argparse
import atexit
import json
import re
import shutil
import tempfile
import tomllib
from pathlib import Path

from mkdocs.plugins import event_priority

ROOT = Path(__file__).resolve().parent.parent
CLI_MARK = "<!-- nspec:cli -->"
GALLERY_MARK = "<!-- nspec:gallery -->"
GALLERY_FOLDERS = ("brian2", "seeds")


# ---------------------------------------------------------------- the command line
def _cell(text: str) -> str:
    """Text in a Markdown table cell: pipes escaped, on one line."""
    return " ".join(text.split()).replace("|", "\\|")


def _option_names(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest}`"
    value = "" if action.nargs == 0 else " " + (action.metavar or (
        "{" + ",".join(map(str, action.choices)) + "}" if action.choices else action.dest.upper()))
    return ", ".join(f"`{name}{value}`" for name in action.option_strings)


def _details(action: argparse.Action) -> str:
    parts = [action.help or ""]
    if action.choices and action.metavar:
        parts.append("one of " + ", ".join(f"`{c}`" for c in action.choices))
    if action.required and action.option_strings:
        parts.append("required")
    if action.nargs in ("*", "+", "?") and not action.option_strings:
        parts.append({"*": "zero or more", "+": "one or more", "?": "optional"}[action.nargs])
    return _cell("; ".join(part for part in parts if part))


def _arguments_table(parser: argparse.ArgumentParser) -> list[str]:
    rows = ["| argument | meaning |", "|---|---|"]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        rows.append(f"| {_option_names(action)} | {_details(action) or '&nbsp;'} |")
    return rows


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Each subcommand's parser once, under its first name (aliases map to the same parser)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen: dict[int, str] = {}
            for name, sub in action.choices.items():
                seen.setdefault(id(sub), name)
            return {name: action.choices[name] for name in seen.values()}
    return {}


def _aliases(parser: argparse.ArgumentParser, name: str) -> list[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            target = action.choices[name]
            return [other for other, sub in action.choices.items() if sub is target and other != name]
    return []


def cli_reference() -> str:
    """The Markdown reference of ``nspec.cli.build_parser()``."""
    from nspec.cli import build_parser

    parser = build_parser()
    lines = ["## `nspec`", "", parser.description or "", "", "```", parser.format_usage().strip(), "```", ""]
    lines += _arguments_table(parser)
    for name, sub in _subcommands(parser).items():
        aliases = _aliases(parser, name)
        lines += ["", f"## `nspec {name}`", ""]
        if aliases:
            lines += ["Alias: " + ", ".join(f"`nspec {alias}`" for alias in aliases) + ".", ""]
        lines += [sub.description or "", "", "```", sub.format_usage().strip(), "```", ""]
        lines += _arguments_table(sub)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the gallery
def header_comment(source: str) -> str:
    """The comment lines at the top of a spec, without their ``#``."""
    lines = []
    for line in source.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[1:].removeprefix(" "))
    return "\n".join(lines).strip("\n")


def is_spiking(source: str) -> bool:
    """A spec that declares a spike condition (a spiking network or neuron)."""
    return re.search(r"^\s*spike\s+when\b", source, re.MULTILINE) is not None


def _declaration(source: str, name: str) -> str:
    """The text of the top-level declaration ``name``, up to its closing brace in column 0."""
    match = re.search(rf"^(?:system|network|composite)\s+{name}\b.*?^}}", source, re.MULTILINE | re.DOTALL)
    return match.group(0) if match else ""


def commands(relative: str, stem: str, source: str, figure: bool) -> list[str]:
    """The commands that run a spec: its ``simulate`` target (or its last declaration, by ``--entry``),
    given named input arrays and weights where that declaration has input ports, and its ``test`` blocks."""
    lines = []
    simulated = re.search(r"^simulate\s+(\w+)", source, re.MULTILINE)
    declared = re.findall(r"^(?:system|network|composite)\s+(\w+)", source, re.MULTILINE)
    entry = simulated.group(1) if simulated else (declared[-1] if declared else None)
    if entry is not None:
        run = f"nspec run {relative}" + ("" if simulated else f" --entry {entry}")
        if re.search(r"^\s+in\s+\w+\s*:", _declaration(source, entry), re.MULTILINE):
            run += " --inputs inputs.npz --weights weights.safetensors"
        lines.append(run + f" --output {stem}.npz" + (f" --plot {stem}.png" if figure else ""))
    if re.search(r"^test\s+\"", source, re.MULTILINE):
        lines.append(f"nspec test {relative}")
    return lines


def figures_of(manifest: dict) -> dict[str, list[tuple[str, str]]]:
    """Per spec (``folder/name.nspec``): the (figure, command) pairs of ``docs/figures/manifest.json``
    (written by ``bench/gallery.py``) drawn from it."""
    out: dict[str, list[tuple[str, str]]] = {}
    for figure, entry in sorted(manifest.items()):
        for spec in entry["specs"]:
            out.setdefault(spec, []).append((figure, entry["command"]))
    return out


def gallery() -> str:
    """One section per spec of ``specs/brian2`` and ``specs/seeds``, with its figures and the
    command that draws each."""
    manifest_path = ROOT / "docs" / "figures" / "manifest.json"
    drawn = figures_of(json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.exists() else {})
    lines = []
    for folder in GALLERY_FOLDERS:
        lines += ["", f"## `specs/{folder}/`", ""]
        for spec in sorted((ROOT / "specs" / folder).glob("*.nspec")):
            source = spec.read_text(encoding="utf-8")
            relative = spec.relative_to(ROOT).as_posix()
            figures = drawn.get(f"{folder}/{spec.name}", [])
            lines += [f"### {spec.stem}", "", f"`{relative}`", ""]
            lines += ["```text", header_comment(source), "```", ""]
            lines += ["```", *commands(relative, spec.stem, source, False), "```", ""]
            for figure, command in figures:
                lines += [f"![{spec.stem}: {figure}](figures/{figure})", "", f"Drawn by `{command}`.", ""]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the API pages
def package_tree() -> Path:
    """A temporary folder holding ``nspec/`` as it installs: pyproject.toml's ``package-dir`` maps
    ``nspec.runtime`` to ``runtime/`` and so on, which griffe's static reading of the repository's
    ``nspec/`` folder cannot follow.  Links, not copies, so the docs read the working tree."""
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    mapping = mapping["tool"]["setuptools"]["package-dir"]
    tree = Path(tempfile.mkdtemp(prefix="nspec-docs-"))
    atexit.register(shutil.rmtree, tree, ignore_errors=True)
    package = tree / "nspec"
    package.mkdir()
    for path in (ROOT / mapping["nspec"]).iterdir():
        (package / path.name).symlink_to(path)
    for name, folder in mapping.items():
        parts = name.split(".")
        if len(parts) == 2 and not (package / parts[1]).exists():
            (package / parts[1]).symlink_to(ROOT / folder)
    return tree


@event_priority(100)  # before mkdocstrings' own on_config reads its handlers' options
def on_config(config):
    handlers = config["plugins"]["mkdocstrings"].config.setdefault("handlers", {})
    handlers.setdefault("python", {})["paths"] = [str(package_tree())]
    return config


# ---------------------------------------------------------------- the hook
def on_page_markdown(markdown: str, page, config, files) -> str:
    if CLI_MARK in markdown:
        markdown = markdown.replace(CLI_MARK, cli_reference())
    if GALLERY_MARK in markdown:
        markdown = markdown.replace(GALLERY_MARK, gallery())
    return markdown

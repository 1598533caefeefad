"""The documentation site (mkdocs.yml) builds under --strict, and holds what it promises: the command-line
reference written from the parser, the API rendered from the docstrings, the gallery with its figures."""

from __future__ import annotations

import argparse
import html
import os
import subprocess
import sys
from pathlib import Path

import pytest

import nspec
from nspec.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent

# The test extra installs the docs extra's packages: a missing one fails here, it is not skipped.
import material  # noqa: E402,F401  (mkdocs-material)
import mkdocs  # noqa: E402,F401
import mkdocstrings_handlers.python  # noqa: E402,F401  (mkdocstrings-python)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def page(site: Path, name: str) -> str:
    path = site / "index.html" if name == "index" else site / name / "index.html"
    assert path.is_file(), f"the site has no page {name}"
    return html.unescape(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", ["index", "language", "architecture", "reliability", "seeds", "nir", "cli", "api",
                                  "gallery"])
def test_every_page_is_built(site, name):
    assert "<h1" in page(site, name)


def test_home_page_has_the_readme_commands(site):
    text = page(site, "index")
    assert "nspec run specs/cuba.nspec --output cuba_spikes.npz --force" in text
    assert "python -m pytest -q -n auto --dist worksteal" in text


def test_cli_page_names_every_subcommand_and_option(site):
    text = page(site, "cli")
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in commands.choices.items():
        assert f"nspec {name}" in text, name
        for action in sub._actions:
            for option in action.option_strings:
                assert option in text, (name, option)
            if action.help and action.help != argparse.SUPPRESS:
                assert " ".join(action.help.split()) in " ".join(text.split()), (name, action.dest)


def test_api_page_renders_the_docstrings(site):
    text = page(site, "api")
    first = nspec.load.__doc__.split("``")[0].strip()     # "Compile the spec at"
    assert first and first in text
    for name in ["run", "to_torch", "to_nir", "export_onnx", "load_weights", "state_dict"]:
        assert f'id="nspec.runtime.model.Model.{name}"' in text, name
    assert 'id="nspec.nir.read"' in text


def test_gallery_has_every_spec_and_the_coba_figure(site):
    text = page(site, "gallery")
    for spec in sorted((ROOT / "specs" / "brian2").glob("*.nspec")) + sorted((ROOT / "specs" / "seeds").glob("*.nspec")):
        assert f"specs/{spec.parent.name}/{spec.name}" in text, spec.name
    assert "nspec run specs/brian2/coba.nspec" in text
    assert 'src="../figures/coba_raster.png"' in text
    assert (site / "figures" / "coba_raster.png").stat().st_size > 1000


def _gallery_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gallery", ROOT / "bench" / "gallery.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_figure_is_drawn_from_its_spec_as_it_is_now():
    gallery = _gallery_script()
    stale = gallery.stale(gallery.load_manifest())
    assert not stale, (f"these figures were drawn from another text of their spec (or are missing): {stale}; "
                       "redraw them with `python bench/gallery.py`")
    listed = {f for f, _, _ in gallery.FIGURES}
    assert set(gallery.load_manifest()) == listed
    on_disk = {p.name for p in (ROOT / "docs" / "figures").glob("*.png")}
    assert on_disk <= listed, f"figures no command draws (add them to bench/gallery.py's FIGURES): {on_disk - listed}"


def test_every_gallery_spec_has_a_figure():
    gallery = _gallery_script()
    drawn = {spec for _, specs, _ in gallery.FIGURES for spec in specs}
    for folder in ("brian2", "seeds"):
        for spec in sorted((ROOT / "specs" / folder).glob("*.nspec")):
            name = f"{folder}/{spec.name}"
            assert name in drawn or name in gallery.NO_FIGURE, f"{name} has no figure in bench/gallery.py"


def test_the_gallery_shows_each_figure_with_its_command(site):
    text = page(site, "gallery")
    for figure, specs, command in _gallery_script().FIGURES:
        if not any(spec.startswith(("brian2/", "seeds/")) for spec in specs):
            continue  # a figure of a library file (workspace_routing.png): docs/seeds.md shows it
        assert f'src="../figures/{figure}"' in text, figure
        assert command.replace('"', "&quot;") in text or command in text, command

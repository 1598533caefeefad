"""NIR import and export (docs/nir.md).

``read(path_or_graph)`` turns a NIR graph (a ``.nir`` file or a ``nir.NIRGraph``) into a ``Model``;
``to_spec(graph)`` is the ``.nspec`` text it compiles; ``write(model, path)`` and ``to_nir(model)``
export a composite of ``std/nir.nspec`` boxes.  NIR's times are continuous: the default, forward
Euler at dt = 0.1 ms, is how snnTorch discretised the networks it exported.  Needs the ``nir``
package: ``pip install nspec[nir]``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from nspec.runtime.model import Model, load
from nspec.runtime.nir_export import to_nir
from nspec.runtime.nir_import import Imported, NirError, require_nir, translate

__all__ = ["read", "to_spec", "write", "to_nir", "translate", "Imported", "NirError"]


def to_spec(graph, dt="0.1 ms", method: str = "euler", states: bool = False) -> str:
    """The ``.nspec`` source of ``graph`` (its parameters are the weights ``translate`` gives)."""
    return translate(graph, dt, method, states).source


def read(path_or_graph, dt="0.1 ms", method: str = "euler", states: bool = False) -> Model:
    """A model of the NIR graph, its parameters loaded, integrated by ``method`` at ``dt``.

    The generated spec is written to a fresh temporary folder (``model.path``), so the model can be
    exported again and its diagnostics point at real lines.  ``states``: the top level's neuron
    states are outputs too (``nspec.runtime.nir_import.translate``)."""
    imported = translate(path_or_graph, dt, method, states)
    spec = Path(tempfile.mkdtemp(prefix="nspec_nir_")) / "graph.nspec"
    spec.write_text(imported.source)
    model = load(spec)
    model.load_weights(imported.weights)
    return model


def write(model: Model, path: str | Path) -> None:
    """Writes ``model`` (a composite of ``std/nir.nspec`` boxes) as a NIR file."""
    nir = require_nir()
    nir.write(str(path), to_nir(model))

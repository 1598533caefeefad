"""nspec: a declarative graph compiler for brain-inspired neural models.

The public entry point is ``nspec.load(path, **hyperparameters)``; see ``nspec.runtime``.
``nspec.sweep(path, grid, output, ...)`` runs a spec over a grid of hyperparameters and seeds on Ray
(``runtime/sweep.py``; Ray is imported only when a sweep runs).
"""

from nspec.runtime.model import load
from nspec.runtime.sweep import sweep
from nspec.version import __version__

__all__ = ["load", "sweep", "__version__"]

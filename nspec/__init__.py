"""nspec: a declarative graph compiler for brain-inspired neural models.

The public entry point is ``nspec.load(path, **hyperparameters)``; see ``nspec.runtime``.
"""

from nspec.runtime.model import load
from nspec.version import __version__

__all__ = ["load", "__version__"]

"""nspec: a declarative graph compiler for brain-inspired neural models.

The public entry point is ``nspec.load(path, **hyperparameters)``; see ``nspec.runtime``.
"""

__version__ = "0.1.0"


def load(path, **hyperparameters):
    """Compile the spec at ``path`` with the given hyperparameters into a runnable ``Model``."""
    from nspec.runtime.model import load as _load

    return _load(path, **hyperparameters)


__all__ = ["load", "__version__"]

"""Starting Ray for nspec's distributed runs (``sweep.py``, ``partition.py``)."""

from __future__ import annotations

import os


def start_ray(**options) -> None:
    """``ray.init(**options)`` from a neutral folder: Ray puts the driver's working directory first on its
    workers' ``sys.path``, and in a source checkout that folder's ``nspec/`` holds only part of the package
    (the subpackages are mapped in by ``package-dir``), which would shadow the installed one."""
    import tempfile

    import ray

    here = os.getcwd()
    os.chdir(tempfile.gettempdir())
    try:
        ray.init(**options)
    finally:
        os.chdir(here)


__all__ = ["start_ray"]

"""The distribution's version, in a leaf module so that any module (the ONNX exporter stamps it into
its models) can read it without importing the ``nspec`` package and, through it, the runtime."""

__version__ = "0.1.0"

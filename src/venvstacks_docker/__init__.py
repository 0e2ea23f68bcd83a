"""Layered, reproducible Python environment stacks (a venvstacks-compatible builder)."""

__version__ = "0.1.0"
__all__ = ["__version__"]

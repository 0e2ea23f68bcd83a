"""Layered, reproducible Python environment stacks (a venvstacks-compatible builder).

The Python API (:mod:`venvstacks_docker.api`) is importable from here: ``Stack`` (load,
plan, lock, build, publish), ``verify_output``, ``deploy_output`` and ``load_spec``.
It is loaded on first use, so ``import venvstacks_docker`` stays cheap for the
command line.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = ("Stack", "load_spec", "verify_output", "deploy_output", "StackSpec", "Outcome", "VerifyReport",
        "DeployResult")
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        from venvstacks_docker import api

        return getattr(api, name)
    raise AttributeError(f"module 'venvstacks_docker' has no attribute {name!r}")


def __dir__() -> list[str]:
    return list(__all__)

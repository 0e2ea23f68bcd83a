"""The pbs-installer shim installed into every venvstacks venv (see ``PBS_SHIM``)."""

from __future__ import annotations

from .config import RUNTIME_VERSION

# pbs-installer's version table has no CPython 3.11.2 (python-build-standalone never shipped
# one), and venvstacks (0.7.0 and 0.8.0 alike) asks it for a download link *before* looking for
# a staged runtime.
# This shim adds a 3.11.2 entry whose URL cannot be fetched, so venvstacks finds the staged
# tree (and would fail loudly, not silently download something else, if staging was missed).
# It is loaded lazily (only when pbs_installer._versions is imported) via a .pth file.
PBS_SHIM = '''\
"""venvstacks-docker benchmark shim: teach pbs-installer about CPython %(version)s.

The benchmark stages an unpacked runtime at <build-dir>/cpython@%(version)s/, so the URL
below is never fetched; it exists only so that venvstacks' lookup of a download link for
%(version)s succeeds.  Installed by benchmarks/run_benchmarks.py; affects only this venv.
"""
import importlib.abc
import importlib.machinery
import sys

_TARGET = "pbs_installer._versions"
_VERSION = (3, 11, 2)
_URL = "https://staged-runtime-required.invalid/cpython-%(version)s-install_only.tar.gz"


def _patch(module):
    from pbs_installer._utils import PythonVersion

    key = PythonVersion("cpython", *_VERSION)
    table = module.PYTHON_VERSIONS
    if key in table:
        return
    urls = {}
    for (plat, arch, stripped) in (("linux", "x86_64", True), ("linux", "x86_64", False)):
        urls[(plat, arch, stripped)] = (_URL, None)
    table[key] = urls


class _Loader(importlib.abc.Loader):
    def __init__(self, inner):
        self._inner = inner

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module):
        self._inner.exec_module(module)
        _patch(module)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != _TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader)
        return spec


sys.meta_path.insert(0, _Finder())
''' % {"version": RUNTIME_VERSION}  # noqa: UP031 - the template is Python source, full of braces

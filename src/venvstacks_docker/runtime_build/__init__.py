"""Build a relocatable CPython "install_only" archive from pinned source, without GitHub.

The result has the same shape as a python-build-standalone ``install_only`` archive: one
top-level ``python/`` folder holding ``bin/python3``, ``lib/python3.X/`` and so on.  The
interpreter finds its standard library relative to its own executable, libpython is
linked statically into ``bin/python3.X`` and every third-party shared library an
extension module needs (OpenSSL, SQLite, readline, ncurses, ...) is carried in
``python/lib/`` and found through ``$ORIGIN``-relative RUNPATHs, so the archive only
needs glibc on the machine it is unpacked on.

Builds are deterministic: fixed build path, ``SOURCE_DATE_EPOCH``, ``-ffile-prefix-map``,
no bytecode in the archive and a normalised tar/gzip stream.  Results are stored in the
content-addressed cache ``<cache>/runtimes/<sha256>/<archive>`` next to a JSON sidecar.

The steps, one module each: :mod:`.recipe` (pins, recipe constants, the inputs a build
hashes), :mod:`.compile` (source download, configure/make), :mod:`.relocate` (carried
libraries, relocatable scripts, checks), :mod:`.package` (the archive and the cache),
:mod:`.build` (:func:`build_runtime`); the command is ``venvstacks-docker runtime
build``.  Every name is
re-exported here, where callers import them from.
"""

from __future__ import annotations

from venvstacks_docker.metadata import sha256_file
from venvstacks_docker.runtime_build.build import build_runtime
from venvstacks_docker.runtime_build.compile import compile_source, fetch_source
from venvstacks_docker.runtime_build.package import (
    copy_out,
    find_cached_build,
    read_sidecar,
    store_archive,
    write_archive,
)
from venvstacks_docker.runtime_build.recipe import (
    BASE_SYMBOL_VERSION,
    BUILD_DEPENDENCIES,
    BUILD_PLATFORMS,
    BUILD_TAG,
    COMPAT_HEADER,
    COMPAT_SYMBOLS,
    CONFIGURE_CAPS,
    DISABLED_MODULES,
    GLIBC_SONAME,
    GLIBC_TARGET,
    INSTALL_PREFIX,
    MAPPED_BUILD_DIR,
    PINS,
    RECIPE_REVISION,
    RECORDED_PACKAGES,
    RELOCATABLE_SHEBANG,
    STDLIB_TEST_DIRS,
    TEST_EXTENSION,
    SourcePin,
    archive_filename,
    build_inputs,
    build_root,
    compat_header,
    configure_args,
    ensure_build_dependencies,
    host_triple,
    inputs_digest,
    userland,
)
from venvstacks_docker.runtime_build.relocate import (
    carry_libraries,
    floor_of,
    floor_setters,
    glibc_floor,
    glibc_needs,
    leftover_build_paths,
    lower_symbol_versions,
    normalise_tree,
    remove_bytecode,
    smoke_test,
)

__all__ = [
    "BASE_SYMBOL_VERSION", "BUILD_DEPENDENCIES", "BUILD_PLATFORMS", "BUILD_TAG", "COMPAT_HEADER", "COMPAT_SYMBOLS",
    "CONFIGURE_CAPS", "DISABLED_MODULES", "GLIBC_SONAME", "GLIBC_TARGET", "INSTALL_PREFIX",
    "MAPPED_BUILD_DIR", "PINS", "RECIPE_REVISION", "RECORDED_PACKAGES", "RELOCATABLE_SHEBANG",
    "STDLIB_TEST_DIRS", "TEST_EXTENSION", "SourcePin", "archive_filename", "build_inputs",
    "build_root", "build_runtime", "carry_libraries", "compat_header", "compile_source",
    "configure_args", "copy_out", "ensure_build_dependencies", "fetch_source", "find_cached_build",
    "floor_of", "floor_setters", "glibc_floor", "glibc_needs", "host_triple", "inputs_digest",
    "leftover_build_paths", "lower_symbol_versions", "normalise_tree", "read_sidecar", "remove_bytecode", "sha256_file",
    "smoke_test", "store_archive", "userland", "write_archive",
]

"""Command line interface: ``venvstacks-docker`` (also ``python -m venvstacks_docker``).

The subcommands and options venvstacks users know keep their names and meaning.  Human
output goes to stderr through :mod:`venvstacks_docker.ui`, results (tables, ``--json``)
to stdout.  Errors are turned into one message and an exit code in one place,
:func:`~venvstacks_docker.cli._app.run`.

- ``_common``: shared options, state and output helpers
- ``stages``: show, lock, build, publish, local-export (plan, then execute)
- ``outputs``: verify, deploy
- ``runtime``: runtime build
- ``render``: trees, tables and JSON of plans and outcomes
"""

from venvstacks_docker.cli._app import app, main, run

__all__ = ["app", "main", "run"]

"""Re-serialise a parsed command line, for the same command run inside a builder container.

The container must not see the caller's argv as typed: relative paths, ``~`` and the
current folder mean nothing there (only the folders the command needs are mounted, at
their host paths).  So the host rebuilds the argument list from the values the CLI
parsed, with every path made absolute by the caller.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

# Duck-typed click objects: typer ships click itself (``typer._click``) in recent
# versions and depends on the ``click`` package in older ones.


def _option_words(param: Any, value: Any) -> list[str]:
    name = param.opts[0]
    if param.is_flag and param.secondary_opts:  # --x/--no-x
        if value == param.default:
            return []
        return [name] if value else [param.secondary_opts[0]]
    if param.is_flag:
        return [name] if value and value != param.default else []
    if param.count:
        return [name] * int(value or 0)
    if param.multiple:
        return [word for item in (value or ()) for word in (name, os.fspath(item))]
    if value is None or value == param.default:
        return []
    return [name, os.fspath(value) if isinstance(value, os.PathLike) else str(value)]


def reserialise(ctx: Any, *, overrides: Mapping[str, Any], root_args: Sequence[str] = (),
                extra: Sequence[str] = ()) -> list[str]:
    """``[*root_args, command, options..., *extra, "--", positionals...]`` for ``ctx``'s command.

    :param ctx: the click context typer gives a command (``typer.Context``).

    :param overrides: parameter name -> value to use instead of the parsed one (absolute
        paths, typically).
    :param root_args: options of the program itself (``-v``, ``-q``), placed first.
    :param extra: more options for the command (e.g. ``--native``).
    """
    words: list[str] = [*root_args, str(ctx.info_name)]
    positionals: list[str] = []
    for param in ctx.command.params:
        if param.name is None:
            continue
        value = overrides.get(param.name, ctx.params.get(param.name))
        kind = getattr(param, "param_type_name", "")
        if kind == "argument":
            values = value if isinstance(value, (list, tuple)) else [value]
            positionals += [os.fspath(v) for v in values if v is not None]
        elif kind == "option":
            words += _option_words(param, value)
    return [*words, *extra, "--", *positionals]


__all__ = ["reserialise"]

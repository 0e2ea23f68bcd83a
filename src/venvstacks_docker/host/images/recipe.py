"""The rendered builder Dockerfile, read as steps the host can carry out itself.

The Jinja2 template stays the one description of the builder image.  To assemble the
image deterministically (:mod:`.assemble`), the host reads the *rendered* Dockerfile and
turns each instruction into a step it performs the way the engine's classic builder
would, or refuses it: a template that uses anything outside this small subset is built
from the Dockerfile by the engine instead, so a changed template never silently yields
another image.

The subset: one ``FROM``; ``ADD <archive> <dir>/`` (a local tar archive, unpacked);
``COPY <dir>/ <dir>/``; ``RUN`` in exec form running ``mkdir -p [-m MODE]``, or the
tool's interpreter with ``-I -B`` and either ``-m compileall`` or ``-c CODE``; ``ENV``
with plain ``key=value`` pairs; ``WORKDIR``; and ``ENTRYPOINT``/``CMD`` in exec form.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final

#: Archive suffixes ``ADD`` unpacks (the engine detects the format by its magic bytes;
#: anything else would be copied as a file, which the host does not emulate).
_ARCHIVE_SUFFIXES: Final = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".tbz2")
_MKDIR: Final = ("/bin/mkdir", "/usr/bin/mkdir")
#: Options of ``compileall`` the host passes on unchanged (each with its value, if any).
_COMPILEALL_OPTIONS: Final = {"-q": 0, "-f": 0, "-j": 1, "--invalidation-mode": 1}
_ROOT_USERS: Final = ("", "root", "0", "root:root", "0:0")


class CannotAssemble(Exception):
    """This image cannot be assembled on this host; the caller builds it from the
    Dockerfile instead.  The message says why, for the log line."""


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction, continuation lines joined."""

    keyword: str
    value: str

    @property
    def text(self) -> str:
        """The instruction as one line."""
        return f"{self.keyword} {self.value}"


@dataclass(frozen=True)
class Unpack:
    """``ADD <archive> <dest>/``: unpack a local tar archive of the build context."""

    src: str
    dest: str


@dataclass(frozen=True)
class CopyDir:
    """``COPY <dir>/ <dest>/``: copy a build-context folder's contents."""

    src: str
    dest: str


@dataclass(frozen=True)
class MakeDirs:
    """``RUN ["/bin/mkdir", "-p", "-m", MODE, ...]``."""

    paths: tuple[str, ...]
    mode: int


@dataclass(frozen=True)
class Compile:
    """``RUN [python, -I, -B, -m, compileall, options..., dirs...]``."""

    flags: tuple[str, ...]
    options: tuple[str, ...]
    dirs: tuple[str, ...]
    env: tuple[str, ...]


@dataclass(frozen=True)
class Check:
    """``RUN [python, -I, -B, -c, CODE]``: must succeed and writes nothing."""

    flags: tuple[str, ...]
    code: str
    env: tuple[str, ...]


@dataclass(frozen=True)
class Workdir:
    """``WORKDIR``: the folder is created (``0755``, root) when missing."""

    path: str


Step = Unpack | CopyDir | MakeDirs | Compile | Check | Workdir


@dataclass
class Recipe:
    """What the Dockerfile does: file-system steps, the resulting config, and one
    history line per instruction after ``FROM``."""

    base: str
    steps: list[Step] = field(default_factory=list)
    #: The image config (``Env``, ``Entrypoint``, ``Cmd``, ``WorkingDir``, ...), starting
    #: from the base image's.
    config: dict[str, Any] = field(default_factory=dict)
    #: ``(instruction text, whether it changes files)`` per instruction after ``FROM``.
    history: list[tuple[str, bool]] = field(default_factory=list)


def parse_dockerfile(data: bytes) -> list[Instruction]:
    r"""Split a Dockerfile into instructions: comments and blank lines dropped, lines
    ending in ``\`` joined with the next (comment lines inside such a run are dropped)."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    for raw in data.decode("utf-8").split("\n"):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        full = " ".join([*pending, line]).strip()
        pending = []
        keyword, _, value = full.partition(" ")
        instructions.append(Instruction(keyword.upper(), " ".join(value.split())))
    if pending:
        full = " ".join(pending)
        keyword, _, value = full.partition(" ")
        instructions.append(Instruction(keyword.upper(), " ".join(value.split())))
    return instructions


def read_recipe(dockerfile: bytes, *, python: str, base_config: dict[str, Any]) -> Recipe:
    """The steps and config of ``dockerfile`` on a base whose config is ``base_config``.

    :param python: the interpreter path inside the image whose ``RUN`` steps the host
        may carry out with the runtime it stages.
    :raises CannotAssemble: for anything outside the subset this module knows.
    """
    config = dict(base_config.get("config") or {})
    user = str(config.get("User") or "")
    if user not in _ROOT_USERS:
        raise CannotAssemble(f"the base image runs as user {user!r}, not root")
    if config.get("OnBuild"):
        raise CannotAssemble("the base image has ONBUILD triggers")
    instructions = parse_dockerfile(dockerfile)
    if not instructions or instructions[0].keyword != "FROM" or len(instructions[0].value.split()) != 1:
        raise CannotAssemble("the Dockerfile does not start with a plain `FROM <image>`")
    recipe = Recipe(base=instructions[0].value, config=config)
    state = _State(config=config, python=python)
    for instruction in instructions[1:]:
        changes_files = state.apply(instruction, recipe.steps)
        recipe.history.append((instruction.text, changes_files))
    if not any(changes for _text, changes in recipe.history):
        raise CannotAssemble("the Dockerfile changes no files")
    return recipe


@dataclass
class _State:
    config: dict[str, Any]
    python: str
    cmd_set: bool = False

    def apply(self, ins: Instruction, steps: list[Step]) -> bool:
        """Add ``ins``'s step (if any) to ``steps``; return whether it changes files."""
        handler = {
            "ADD": self._add, "COPY": self._copy, "RUN": self._run, "ENV": self._env,
            "WORKDIR": self._workdir, "ENTRYPOINT": self._entrypoint, "CMD": self._cmd,
        }.get(ins.keyword)  # fmt: skip
        if handler is None:
            raise CannotAssemble(f"`{ins.keyword}` is not an instruction the host can carry out")
        step = handler(ins)
        if step is not None:
            steps.append(step)
        return step is not None and not isinstance(step, Workdir | Check)

    def _paths(self, ins: Instruction) -> tuple[str, str]:
        parts = ins.value.split()
        if len(parts) != 2 or ins.value.startswith("[") or any(p.startswith("--") for p in parts):
            raise CannotAssemble(f"`{ins.text}`: only `{ins.keyword} <source> <folder>/` without options")
        src, dest = parts
        if not dest.startswith("/") or not dest.endswith("/") or "$" in ins.value:
            raise CannotAssemble(f"`{ins.text}`: the destination must be an absolute folder ending in /")
        if src.startswith("/") or ".." in src.split("/") or "://" in src:
            raise CannotAssemble(f"`{ins.text}`: the source must be inside the build context")
        return src, dest

    def _add(self, ins: Instruction) -> Step:
        src, dest = self._paths(ins)
        if not src.endswith(_ARCHIVE_SUFFIXES):
            raise CannotAssemble(f"`{ins.text}`: only local tar archives are unpacked on the host")
        return Unpack(src, dest)

    def _copy(self, ins: Instruction) -> Step:
        src, dest = self._paths(ins)
        if not src.endswith("/"):
            raise CannotAssemble(f"`{ins.text}`: only folders (`<dir>/`) are copied on the host")
        return CopyDir(src.rstrip("/"), dest)

    def _run(self, ins: Instruction) -> Step:
        argv = _exec_form(ins)
        if argv[0] in _MKDIR:
            return _mkdir(ins, argv[1:])
        if argv[0] != self.python:
            raise CannotAssemble(f"`{ins.text}`: the host only runs mkdir and {self.python}")
        flags = tuple(_leading_flags(argv[1:]))
        rest = argv[1 + len(flags):]
        if not {"-I", "-B"} <= set(flags) or not set(flags) <= {"-I", "-B", "-E", "-s", "-S"}:
            raise CannotAssemble(f"`{ins.text}`: the interpreter must run with -I and -B "
                                 "(and no options but -E, -s, -S)")
        env = tuple(self.config.get("Env") or ())
        if rest[:2] == ["-m", "compileall"]:
            options, dirs = _compileall_arguments(ins, rest[2:])
            return Compile(flags, options, dirs, env)
        if len(rest) == 2 and rest[0] == "-c":
            return Check(flags, rest[1], env)
        raise CannotAssemble(f"`{ins.text}`: only `-m compileall` and `-c CODE` run on the host")

    def _env(self, ins: Instruction) -> None:
        env = list(self.config.get("Env") or [])
        for pair in ins.value.split():
            key, eq, _value = pair.partition("=")
            if not eq or not key or any(c in pair for c in "\"'\\$"):
                raise CannotAssemble(f"`{ins.text}`: only plain key=value pairs (no quotes, escapes or $)")
            for i, item in enumerate(env):
                if item.partition("=")[0] == key:
                    env[i] = pair
                    break
            else:
                env.append(pair)
        self.config["Env"] = env

    def _workdir(self, ins: Instruction) -> Step:
        path = ins.value
        if not path.startswith("/") or " " in path or "$" in path:
            raise CannotAssemble(f"`{ins.text}`: only an absolute folder")
        self.config["WorkingDir"] = path
        return Workdir(path)

    def _entrypoint(self, ins: Instruction) -> None:
        self.config["Entrypoint"] = _exec_form(ins)
        if not self.cmd_set:  # as the engine does: a new ENTRYPOINT drops the base's CMD
            self.config["Cmd"] = None

    def _cmd(self, ins: Instruction) -> None:
        self.config["Cmd"] = _exec_form(ins)
        self.cmd_set = True


def _exec_form(ins: Instruction) -> list[str]:
    try:
        argv = json.loads(ins.value)
    except ValueError:
        argv = None
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise CannotAssemble(f"`{ins.text}`: only the exec form ([\"...\"]) is supported")
    return argv


def _leading_flags(args: list[str]) -> list[str]:
    flags = []
    for arg in args:
        if arg in ("-m", "-c") or not arg.startswith("-"):
            break
        flags.append(arg)
    return flags


def _mkdir(ins: Instruction, args: list[str]) -> Step:
    mode = 0o755
    if args[:1] != ["-p"]:
        raise CannotAssemble(f"`{ins.text}`: only `mkdir -p [-m MODE] <folders>`")
    rest = args[1:]
    if rest[:1] == ["-m"] and len(rest) > 1:
        try:
            mode = int(rest[1], 8)
        except ValueError:
            raise CannotAssemble(f"`{ins.text}`: only an octal mode") from None
        rest = rest[2:]
    if not rest or not all(p.startswith("/") and not p.startswith("-") for p in rest) or mode > 0o7777:
        raise CannotAssemble(f"`{ins.text}`: only `mkdir -p [-m MODE] <absolute folders>`")
    return MakeDirs(tuple(p.rstrip("/") or "/" for p in rest), mode)


def _compileall_arguments(ins: Instruction, args: list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    options: list[str] = []
    i = 0
    while i < len(args) and args[i].startswith("-"):
        takes = _COMPILEALL_OPTIONS.get(args[i])
        if takes is None or i + takes >= len(args):
            raise CannotAssemble(f"`{ins.text}`: compileall option {args[i]} is not passed on by the host")
        options += args[i:i + takes + 1]
        i += takes + 1
    dirs = tuple(args[i:])
    if not dirs or not all(d.startswith("/") for d in dirs):
        raise CannotAssemble(f"`{ins.text}`: compileall needs absolute folders")
    return tuple(options), dirs

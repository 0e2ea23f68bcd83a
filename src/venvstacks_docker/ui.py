"""The one output channel: steps, notes, phases and byte progress, on stderr.

Library code speaks through the ``venvstacks_docker`` loggers (``log.info`` is a step,
``log.warning`` a note, ``log.debug`` a detail) and, for long work, through a
:class:`Progress` callback; it never prints.  The CLI installs one :class:`Reporter`,
which decides what is shown:

==========  =====================================================================
``-q``      errors and the final result only
default     a line per step (``* building framework-x``); on a terminal, a spinner
            for the current phase and a bar per archive with its bytes
``-v``      also details: every command run, image build output, paths
``-vv``     also other libraries' debug logs
==========  =====================================================================

Nothing is wrapped when stderr is not a terminal.  In a builder container the same
events are written as JSON lines (:class:`EventReporter`); the host decodes them
(:func:`replay`) and renders them with its own reporter, so a command prints the same
lines natively and in a container.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO, Any, Final

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, SpinnerColumn, TextColumn
from rich.progress import Progress as RichProgress

#: Prefix of an event line written by :class:`EventReporter` (inside a container).
EVENT_PREFIX: Final = "@venvstacks-docker-event "
#: Bytes progress: ``update(done_bytes)``.
Progress = Callable[[int], None]

_LOGGER = "venvstacks_docker"


def human_size(size: int) -> str:
    """``2.2 KiB``, ``20.5 MiB``: sizes for people (bytes stay exact in JSON)."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover - the loop always returns


class Reporter:
    """Renders events for a person: rich on a terminal, plain lines otherwise."""

    def __init__(self, *, verbosity: int = 0, console: Console | None = None) -> None:
        self.verbosity = verbosity
        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True)
        self._bars: RichProgress | None = None
        self._tasks: dict[str, Any] = {}
        self._lock = threading.Lock()

    # -- what library code reports --------------------------------------------------

    def step(self, message: str) -> None:
        """Report the start of a step of the run."""
        if self.verbosity >= 0:
            self._line(f"* {escape(message)}")

    def note(self, message: str) -> None:
        """Report something the user should notice (a warning)."""
        if self.verbosity >= 0:
            self._line(f"[yellow]note:[/] {escape(message)}")

    def detail(self, message: str) -> None:
        """Report a detail, shown only when verbose."""
        if self.verbosity >= 1:
            self._line(f"[dim]{escape(message)}[/]")

    def progress(self, key: str, label: str, total: int) -> Progress:
        """A bar for ``label`` (``total`` bytes) on a terminal; the caller reports bytes done."""
        if self.verbosity < 0 or not self.console.is_terminal:
            return _ignore
        with self._lock:
            if self._bars is None:
                self._bars = RichProgress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                          DownloadColumn(), console=self.console, transient=True)
                self._bars.start()
            task = self._bars.add_task(escape(label), total=total or None)
            self._tasks[key] = task
        bars = self._bars

        def update(done: int) -> None:
            bars.update(task, completed=done)

        return update

    def finish_progress(self, key: str) -> None:
        """End the progress bar ``key``."""
        with self._lock:
            task = self._tasks.pop(key, None)
            if self._bars is not None and task is not None:
                self._bars.remove_task(task)
            if self._bars is not None and not self._tasks:
                self._bars.stop()
                self._bars = None

    @contextlib.contextmanager
    def phase(self, title: str) -> Iterator[None]:
        """A named phase: a spinner while it runs (on a terminal), ``✓ title (1.2s)`` after."""
        start = time.monotonic()
        if self.verbosity >= 0 and self.console.is_terminal and self._bars is None:
            with self.console.status(escape(title)):
                yield
        else:
            if self.verbosity >= 0:
                self._line(f"* {escape(title)}")
            yield
        if self.verbosity >= 0:
            self._line(f"[green]✓[/] {escape(title)} ({time.monotonic() - start:.1f}s)")

    # -- plumbing -------------------------------------------------------------------

    def _line(self, markup: str) -> None:
        if self._bars is not None:
            self._bars.console.print(markup)
        else:
            self.console.print(markup)

    def handle_record(self, record: logging.LogRecord) -> None:
        """Report a :mod:`logging` record: warnings as notes, the tool's info as steps,
        the rest as details."""
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            self.note(message)
        elif record.levelno >= logging.INFO:
            self.step(message) if record.name.startswith(_LOGGER) else self.detail(message)
        else:
            self.detail(message)


def _ignore(done: int) -> None:
    return None


class EventReporter(Reporter):
    """Writes every event as a JSON line, for the host to render (inside a container)."""

    def __init__(self, stream: IO[str] | None = None, *, verbosity: int = 0) -> None:
        super().__init__(verbosity=verbosity)
        self.stream = stream or sys.stderr
        self._last: dict[str, float] = {}

    def _emit(self, **event: Any) -> None:
        with self._lock:
            self.stream.write(EVENT_PREFIX + json.dumps(event, sort_keys=True) + "\n")
            self.stream.flush()

    def step(self, message: str) -> None:
        """Send a step event."""
        self._emit(event="step", message=message)

    def note(self, message: str) -> None:
        """Send a note event."""
        self._emit(event="note", message=message)

    def detail(self, message: str) -> None:
        """Send a detail event (when verbose)."""
        if self.verbosity >= 1:
            self._emit(event="detail", message=message)

    def progress(self, key: str, label: str, total: int) -> Progress:
        """Send a progress-start event; the returned callback sends a few updates a second."""
        self._emit(event="progress-start", key=key, label=label, total=total)

        def update(done: int) -> None:
            now = time.monotonic()
            if now - self._last.get(key, 0.0) >= 0.25 or done >= total:  # a few events a second
                self._last[key] = now
                self._emit(event="progress", key=key, done=done)

        return update

    def finish_progress(self, key: str) -> None:
        """Send a progress-end event."""
        self._emit(event="progress-end", key=key)

    @contextlib.contextmanager
    def phase(self, title: str) -> Iterator[None]:
        """Send phase-start and phase-end events around the block, with its duration."""
        start = time.monotonic()
        self._emit(event="phase-start", title=title)
        yield
        self._emit(event="phase-end", title=title, seconds=round(time.monotonic() - start, 1))

    def outcome(self, data: dict[str, Any]) -> None:
        """The run's result, for the host to render."""
        self._emit(event="outcome", data=data)

    def error(self, *, code: int, message: str, hint: str | None) -> None:
        """The run's error, for the host to report as its own (same exit code)."""
        self._emit(event="error", code=code, message=message, hint=hint)


class Replayer:
    """Renders the events of a container's :class:`EventReporter` with a host reporter."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self._updates: dict[str, Progress] = {}
        self._phases: list[contextlib.ExitStack] = []
        self.outcome: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None

    def feed(self, line: str) -> bool:
        """Render ``line`` if it is an event; False for ordinary output."""
        if not line.startswith(EVENT_PREFIX):
            return False
        try:
            event = json.loads(line[len(EVENT_PREFIX):])
        except json.JSONDecodeError:
            return False
        kind, r = event.get("event"), self.reporter
        if kind in ("step", "note", "detail"):
            getattr(r, kind)(str(event.get("message", "")))
        elif kind == "progress-start":
            self._updates[event["key"]] = r.progress(event["key"], event["label"], int(event["total"]))
        elif kind == "progress" and event.get("key") in self._updates:
            self._updates[event["key"]](int(event["done"]))
        elif kind == "progress-end":
            self._updates.pop(event.get("key", ""), None)
            r.finish_progress(event.get("key", ""))
        elif kind == "phase-start":
            stack = contextlib.ExitStack()
            stack.enter_context(r.phase(str(event.get("title", ""))))
            self._phases.append(stack)
        elif kind == "phase-end" and self._phases:
            self._phases.pop().close()
        elif kind == "outcome":
            self.outcome = event.get("data")
        elif kind == "error":
            self.error = event
        return True

    def close(self) -> None:
        """End whatever a container that died mid-phase left open."""
        for key in list(self._updates):
            self.reporter.finish_progress(key)
        self._updates.clear()
        while self._phases:
            self._phases.pop().close()


class _Handler(logging.Handler):
    def __init__(self, reporter: Reporter) -> None:
        super().__init__(logging.DEBUG)
        self.reporter = reporter

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.reporter.handle_record(record)
        except Exception:  # noqa: BLE001 - logging must never break the run
            self.handleError(record)


_current: list[Reporter] = [Reporter(verbosity=-1)]


def current() -> Reporter:
    """The reporter the CLI installed (a silent one for library use)."""
    return _current[0]


def install(reporter: Reporter) -> None:
    """Route the tool's log records into ``reporter`` and make it :func:`current`."""
    _current[0] = reporter
    root = logging.getLogger(_LOGGER)
    for handler in list(root.handlers):
        if isinstance(handler, _Handler):
            root.removeHandler(handler)
    root.addHandler(_Handler(reporter))
    root.propagate = False
    root.setLevel(logging.DEBUG if reporter.verbosity >= 1 else logging.INFO)
    if reporter.verbosity >= 2:  # other libraries' debug logs too
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="%(name)s: %(message)s")


__all__ = ["EVENT_PREFIX", "EventReporter", "Progress", "Replayer", "Reporter", "current", "human_size", "install"]

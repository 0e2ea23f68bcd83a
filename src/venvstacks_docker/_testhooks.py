"""Pause points that let the fault-injection tests interrupt a run at a chosen moment.

Inactive unless ``VENVSTACKS_DOCKER_TEST_PAUSE=<point>:<file>`` is set: when the run
reaches ``<point>`` it writes ``<file>`` (holding its pid) and sleeps until a test has
done its deed (a signal, a full disk) and removed the file.  Each point pauses once.
The tests in ``tests/test_reliability.py`` use it; nothing else should.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Final

PAUSE_ENV: Final = "VENVSTACKS_DOCKER_TEST_PAUSE"
_done: set[str] = set()


def pause(point: str) -> None:
    """Pause at ``point`` if a test asked for it (see the module docstring)."""
    wanted = os.environ.get(PAUSE_ENV)
    if not wanted or point in _done:
        return
    name, _, file = wanted.partition(":")
    if name != point or not file:
        return
    _done.add(point)
    flag = Path(file)
    flag.write_text(str(os.getpid()), encoding="utf-8")
    while flag.exists():
        time.sleep(0.05)

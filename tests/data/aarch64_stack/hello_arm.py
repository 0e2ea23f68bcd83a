"""Says which machine it runs on, and uses markupsafe's compiled speedups."""

import json
import platform
import sys

import markupsafe
from markupsafe import _speedups

print(json.dumps({
    "machine": platform.machine(),
    "python": sys.version.split()[0],
    "escaped": str(markupsafe.escape("<arm64 & friends>")),
    "speedups": _speedups.__file__.rsplit("/", 1)[-1],
}))

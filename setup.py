"""Build hook: with LOGSERVER_MYPYC=1 the hot-path modules are compiled with mypyc.

Without it (the default: `pip install .`, `make run`) logserver is pure Python. A compiled
module shadows its .py at import; the .py stays the source and the fallback. When mypyc or a C
compiler is missing the build says so and stays pure Python.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from setuptools import setup

# Left interpreted: the package's __init__.py (mypyc derives a compiled package's __path__ from
# the shared library's directory, which is wrong once that library lives inside the package),
# config.py (argparse types), cli.py, server.py and auth.py's file watching
# gain nothing on the request path; the engine's offline tools run once.
INTERPRETED = ("maintenance.py", "backup.py", "__init__.py")
COMPILED = [
    *sorted(str(p) for p in Path("logserver/filestore").glob("*.py") if p.name not in INTERPRETED),
    "logserver/engine.py",
    "logserver/http/api.py",
    "logserver/http/dispatch.py",
    "logserver/http/extensions.py",
    "logserver/http/follow.py",
    "logserver/http/metrics.py",
    "logserver/http/responses.py",
    "logserver/http/routes.py",
    "logserver/http/validation.py",
]


def compiled_extensions() -> list[object]:
    """The mypyc extensions to build, or none (with a message saying why)."""
    if os.environ.get("LOGSERVER_MYPYC") != "1":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        print(
            "logserver: LOGSERVER_MYPYC=1 but mypyc is not installed; building pure Python", file=sys.stderr
        )
        return []
    if not any(shutil.which(cc) for cc in (os.environ.get("CC", "cc"), "gcc", "clang")):
        print("logserver: LOGSERVER_MYPYC=1 but no C compiler found; building pure Python", file=sys.stderr)
        return []
    # The group's shared library is named inside the package (logserver/compiled__mypyc*.so), so
    # the compiled modules import from any working directory, not only from the project root.
    return list(mypycify(COMPILED, opt_level="3", group_name="logserver.compiled"))


setup(ext_modules=compiled_extensions())

"""A mypyc-compiled copy of the working tree, for `make bench` to run beside the pure-Python one.

The copy lives under the bench's work directory, so the tree the developer runs stays pure
Python. None when it cannot be built (no mypyc or no C compiler: setup.py says which).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from harness import ROOT, log


def compiled_tree(work: Path) -> Path | None:
    """Copy the package and build its compiled modules in place; the copy's root, or None."""
    tree = work / "compiled"
    shutil.copytree(
        ROOT / "logserver", tree / "logserver", ignore=shutil.ignore_patterns("*.so", "__pycache__")
    )
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, tree / name)
    log("compiled build: mypyc (a minute or two)")
    env = dict(os.environ, LOGSERVER_MYPYC="1")
    built = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--inplace"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
    )
    if built.returncode != 0 or not list((tree / "logserver").rglob("*.so")):
        log(f"compiled build unavailable: {(built.stderr or built.stdout).strip().splitlines()[-1:]}")
        return None
    return tree


def in_tree(tree: Path, command: list[str]) -> list[str]:
    """`command` run from `tree`, so `python -m logserver` imports the compiled copy."""
    return ["sh", "-c", 'cd "$0" && exec "$@"', str(tree), *command]

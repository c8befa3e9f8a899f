"""``scripts/verify_migrations.sh``'s command line: where to walk, and the report."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO

from sqlalchemy.engine import URL

from backend import MIGRATIONS_DIR
from backend.config import (
    ConfigError,
    database_url_setting,
    log_format_from,
    mask_url,
    parse_database_url,
)
from backend.logs import configure_logging
from backend.migrate import LifecycleError
from migration_tools import command_line, scratch
from migration_tools.embedded import embedded_database_url
from migration_tools.verify import PROG, SCRATCH_PREFIX, Report, RevisionResult, verify


@contextlib.contextmanager
def scratch_database(server: URL) -> Iterator[URL]:
    """An empty database on ``server``'s cluster, dropped however the block ends (also on
    SIGTERM, which becomes SystemExit here so the ``finally`` runs)."""
    previous = signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        with scratch.scratch_database(server, SCRATCH_PREFIX, PROG) as url:
            yield url
    finally:
        signal.signal(signal.SIGTERM, previous)


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/verify_migrations.sh",
        description="Upgrade, downgrade and upgrade again every revision of both phases "
                    "(the main line, then each post-deploy revision after the revisions it "
                    "needs), base to the heads, on an empty scratch database, with the data "
                    "files' rows; check that each downgrade restores the schema exactly, that "
                    "the second upgrade gives the same schema, that each phase has one head, "
                    "and that the schema at the heads matches the models. Exit 0: all good; "
                    "1: problems found (each names its revision); 2: could not verify.")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--url", help="an EMPTY database to verify on (refused if it has "
                       "tables); it is left at head. Default: DATABASE_URL")
    where.add_argument("--server-url", help="a server (any database URL on it, the role needs "
                       "CREATEDB): a scratch database is created there and dropped at the end. "
                       "Without --url, --server-url and DATABASE_URL: the embedded "
                       "development PostgreSQL")
    parser.add_argument("--migrations", type=Path, default=MIGRATIONS_DIR,
                        help="the migrations directory (default: %(default)s)")
    parser.add_argument("--no-models", action="store_true",
                        help="skip the comparison with the models at head (for a history "
                             "that is not this app's)")
    parser.add_argument("--no-data", action="store_true",
                        help="walk without the rows of the data files (tests/migrations/data/"
                             "<revision>.py beside the migrations folder)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="one line per revision, with the time of each step")
    return parser.parse_args(argv)


def _target(args: argparse.Namespace) -> tuple[str, str]:
    """("url" | "server", raw URL) from the options and the environment; ("embedded", "")
    when nothing names a database."""
    if args.url:
        return "url", args.url
    if args.server_url:
        return "server", args.server_url
    if database_url_setting():
        return "url", os.environ["DATABASE_URL"]
    return "embedded", ""


def _quiet(verbose: bool) -> None:
    """Our lines say what happens; Alembic's and the app's log lines only with -v."""


    configure_logging(log_format_from())
    for name in ("backend", "alembic", "flask_migrate"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)


def run(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Verify as the options say; print the report; the exit status."""
    def progress(message: str) -> None:
        command_line.progress(PROG, message, err)

    def on_revision(result: RevisionResult) -> None:
        if args.verbose:
            print(result.line(), file=out, flush=True)

    # A relative --migrations is the caller's: the script runs from the repository root.
    directory = command_line.caller_path(args.migrations).resolve()

    def verify_on(url: URL) -> Report:
        progress(f"verifying {directory} on {mask_url(url)}")
        return verify(url, directory, models=not args.no_models, data=not args.no_data,
                      on_revision=on_revision)

    kind, raw = _target(args)
    try:
        if kind == "url":
            report = verify_on(parse_database_url(raw, "--url" if args.url else "DATABASE_URL"))
        else:
            with contextlib.ExitStack() as stack:
                if kind == "embedded":

                    progress("no --url, --server-url or DATABASE_URL: using the embedded "
                             "development PostgreSQL")
                    raw = stack.enter_context(embedded_database_url())
                server = parse_database_url(raw, "--server-url")
                scratch = stack.enter_context(scratch_database(server))
                progress(f"created scratch database {scratch.database}; dropped at the end")
                report = verify_on(scratch)
    except (LifecycleError, ConfigError) as exc:
        progress(str(exc))
        return 2
    for problem in report.all_problems():
        print(problem, file=out)
    if report.phases_line():
        print(report.phases_line(), file=out)
    if args.verbose:
        models = ("not compared with the models" if report.models_seconds is None
                  else f"models compared in {report.models_seconds:.2f} s")
        print(f"walk {report.walk_seconds:.2f} s; {models}", file=out)
    print(report.summary() + ("" if report.ok else
                              f": {len(report.all_problems())} problem(s)"), file=out)
    return 0 if report.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    _quiet(args.verbose)
    return run(args)

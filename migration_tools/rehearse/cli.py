"""``scripts/rehearse.sh``'s command line: options in, report out, exit status."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions

from backend.config import ConfigError, is_pg_duration, log_format_from, parse_database_url
from backend.logs import configure_logging
from backend.migrate import LifecycleError
from backend.postgres import describe_error
from migration_tools.command_line import caller_path
from migration_tools.rehearse import progress
from migration_tools.rehearse.findings import Options, Rehearsal
from migration_tools.rehearse.guard import Interrupted, SignalGuard
from migration_tools.rehearse.report import as_json, render_markdown
from migration_tools.rehearse.runner import quiet, rehearse

PREFIX = re.compile(r"^[a-z_][a-z0-9_]{0,30}$")


# --- command line -------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> tuple[Options, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog="scripts/rehearse.sh",
        description="Rehearse the pending migrations on a scratch copy of a database, in "
                    "the deploy's order: the pre-deploy revisions, the background migrations "
                    "run to their end, the post-deploy revisions; apply each, roll each back, "
                    "apply again; report times, table rewrites, locks, row counts and each "
                    "background migration's rows. Exit 0 when all is well, 1 when the "
                    "rehearsal "
                    "found a problem, 2 when it could not run, 130/143 when stopped by "
                    "SIGINT/SIGTERM (the scratch database is dropped in every case).",
        epilog="A password in a URL is visible to other users in `ps`: leave it out and "
               "set PGPASSWORD or use ~/.pgpass instead. Relative paths are taken from "
               "where the script was started.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-url", metavar="URL",
                        help="copy this live database (pg_dump -Fc); it is only read")
    source.add_argument("--from-dump", metavar="FILE", type=Path,
                        help="restore this dump (from scripts/backup.sh or "
                             "BACKUP_BEFORE_MIGRATE); needs --target-url")
    parser.add_argument("--target-url", metavar="URL",
                        help="any database on the server where the scratch database is made "
                             "(the role needs CREATEDB); default: the --from-url server")
    parser.add_argument("--report", metavar="FILE", type=Path,
                        help="also write the markdown report to FILE")
    parser.add_argument("--json", metavar="FILE",
                        help="write the results as JSON to FILE ('-': to stdout, instead of "
                             "the markdown)")
    parser.add_argument("--prefix", default="rehearsal",
                        help="start of the scratch database's name (default: rehearsal)")
    parser.add_argument("--lock-timeout", default="1min", metavar="DURATION",
                        help="lock_timeout for the migration session (default: 1min)")
    parser.add_argument("--statement-timeout", default="6h", metavar="DURATION",
                        help="statement_timeout for the migration session (default: 6h)")
    parser.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1), metavar="N",
                        help="parallel pg_restore jobs (default: up to 4)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="also show the migration log lines (one per revision)")
    args = parser.parse_args(argv)
    return _options(parser, args), args


def _options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Options:
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if not PREFIX.match(args.prefix):
        parser.error("--prefix must be lower-case letters, digits and _, at most 31")
    for name in ("lock_timeout", "statement_timeout"):
        if not is_pg_duration(getattr(args, name)):
            parser.error(f"--{name.replace('_', '-')} must be a PostgreSQL duration "
                         "such as 30s, 1min or 6h")
    try:
        from_url = parse_database_url(args.from_url, "--from-url") if args.from_url else None
        target = parse_database_url(args.target_url, "--target-url") if args.target_url \
            else from_url
    except ConfigError as exc:
        parser.error(str(exc))
    from_dump = caller_path(args.from_dump) if args.from_dump else None
    if target is None:
        parser.error("--from-dump needs --target-url: a server to restore the dump into")
    if from_dump is not None and not from_dump.is_file():
        parser.error(f"no such dump file: {from_dump}")
    for flag, value in (("--report", args.report), ("--json", args.json)):
        if value and str(value) != "-" and not caller_path(Path(value)).parent.is_dir():
            parser.error(f"{flag}: no such directory: {caller_path(Path(value)).parent}")
    return Options(from_url=from_url, from_dump=from_dump, target_url=target,
                   prefix=args.prefix, lock_timeout=args.lock_timeout,
                   statement_timeout=args.statement_timeout, verbose=args.verbose,
                   jobs=args.jobs)


def write_outputs(result: Rehearsal, args: argparse.Namespace, stdout: Any) -> None:
    """Markdown to stdout (for a person or a CI log) unless ``--json -`` claims stdout for
    a machine; the files asked for get their copy either way."""
    markdown = render_markdown(result)
    document = json.dumps(as_json(result), indent=2) + "\n"
    if args.report:
        caller_path(args.report).write_text(markdown, encoding="utf-8")
    if args.json and args.json != "-":
        caller_path(Path(args.json)).write_text(document, encoding="utf-8")
    stdout.write(document if args.json == "-" else markdown)
    stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """``scripts/rehearse.sh``: 0 passed, 1 found a problem, 2 could not run, 128+N signal."""

    options, args = parse_args(argv)
    configure_logging(log_format_from())
    quiet(options.verbose)
    stdout = sys.stdout
    with SignalGuard() as guard:
        outcome = _run_guarded(options, guard)
    if isinstance(outcome, int):
        return outcome
    try:
        write_outputs(outcome, args, stdout)
    except OSError as exc:
        progress(f"cannot write the report: {exc}")
        return 2
    verdict = "passed" if outcome.ok else f"FAILED ({len(outcome.problems)} problem(s))"
    progress(f"rehearsal {verdict} in {outcome.seconds:.1f} s")
    return 0 if outcome.ok else 1


def _run_guarded(options: Options, guard: SignalGuard) -> Rehearsal | int:
    """The rehearsal, or the exit status when it could not run or was stopped.

    A signal may surface as a cancelled statement (our watcher cancels them) before its
    handler runs, so any failure is checked against ``guard.received`` first; the handler
    raises at most once, so the outer ``except`` is never itself interrupted.
    """
    try:
        try:
            # Anything a migration prints goes to stderr: stdout carries only the report.
            with contextlib.redirect_stdout(sys.stderr):
                result = rehearse(options, guard)
            guard.raise_if_received()
            return result
        except (ConfigError, LifecycleError, psycopg2.Error) as exc:
            guard.raise_if_received()
            progress(f"could not rehearse: {describe_error(exc)}")
            return 2
    except (KeyboardInterrupt, Interrupted):
        signum = guard.received or signal.SIGINT
        progress(f"stopped by {signal.Signals(signum).name}; the scratch database is gone; "
                 "no report")
        return 128 + signum

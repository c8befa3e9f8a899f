"""``scripts/lint_migrations.sh [--warn-only] [--write-baseline REASON] [REV...]``: lint each
revision's SQL with squawk.

A revision that reads well in Python can still lock a busy table for minutes: an index
built without CONCURRENTLY, a NOT NULL column without a default, a type change that
rewrites the table. squawk knows these patterns, but it reads SQL, not Alembic scripts.
So each revision is rendered to SQL the way ``flask db upgrade --sql <down>:<rev>``
prints it (offline: no database is needed), all in this one process, squawk lints the
rendered files in a single run, and every finding is reported against the revision file
it came from::

    migrations/versions/<file>.py (<rev>, "<message>"): <rule>: <squawk's message>

The PostgreSQL version and the rules left out (each with its reason) are in
``.squawk.toml`` at the repository root. Alembic's own bookkeeping (the
``alembic_version`` table and the rows it writes there) is removed before linting: it
is not the revision's SQL. BEGIN and COMMIT stay, because rules such as
constraint-missing-not-valid depend on where transactions start and end.

To silence one rule for one revision, put a comment anywhere in the revision file::

    # squawk-ignore: <rule-name> <why it is safe here>

One rule per comment. The reason is required: a comment without one silences nothing
and is itself a finding, so every exception to a rule says why in the file it excuses.

Revisions that can never be rewritten (an inherited history) cannot take that comment: it
would change their checksums. Their findings are accepted in ``migrations/lint-baseline.txt``
instead (``migration_tools.lint_baseline``; ``--write-baseline REASON`` writes it); a finding
the file does not list still fails, and a line whose finding is gone fails as stale.

A revision that cannot be rendered offline (typically one that reads rows from Python)
is a finding too, ``cannot render offline: <error>``: its SQL cannot be checked, and
``flask db upgrade --sql`` cannot print it either.

Post-deploy revisions (backend/migrate/phases.py) are linted like the rest, each rendered
on its own from its parent, so neither phase's head stands in for the other. A contract
finding (a drop, a rename, ``SET NOT NULL``) in a pre-deploy revision names the post-deploy
phase beside squawk's message: the previous release still serves while it runs. The same
finding in a post-deploy revision is what that phase is for, and gets no such hint. ``head``
as a REV means the pre-deploy head, as ``flask db upgrade`` does; ``post@head`` the other.

Exit status: 1 when any finding remains or a baseline line is stale (0 with
``--warn-only``), 2 when the lint itself cannot run (an unknown revision, squawk missing
or refusing its settings, a malformed baseline line).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tokenize
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from alembic.config import Config as AlembicConfig
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationStep
from alembic.script import ScriptDirectory
from alembic.util import CommandError, to_tuple

from backend import create_app
from backend.config import Config, ConfigError, database_url_setting, parse_database_url
from backend.migrate.phases import is_post, read_phases
from backend.postgres import describe_error
from migration_tools import lint_baseline
from migration_tools.lint_baseline import BASELINE_FILE, LINE_SYNTAX, Baseline, BaselineError
from migration_tools.lint_hints import with_hint

if TYPE_CHECKING:
    from alembic.script import Script
    from flask import Flask

PROG = "scripts/lint_migrations.sh"
SETTINGS_FILE = ".squawk.toml"
IGNORE_SYNTAX = "# squawk-ignore: <rule-name> <why it is safe here>"
# Rendering only needs the dialect: offline mode never connects, so any URL will do.
PLACEHOLDER_URL = "postgresql://offline@localhost/offline"

# Alembic's bookkeeping statements, as it renders them in offline mode.
_BOOKKEEPING = re.compile(
    r"^(?:CREATE TABLE|INSERT INTO|UPDATE|DELETE FROM) alembic_version\b.*?;[ \t]*$\n?",
    re.MULTILINE | re.DOTALL,
)
_IGNORE_COMMENT = re.compile(r"#\s*squawk-ignore\s*:(?P<rest>.*)")
_RULE_NAME = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


class LintError(RuntimeError):
    """The lint cannot run at all; the message is one line, safe to print."""


@dataclass(frozen=True)
class Revision:
    """One revision script: what a finding is reported against."""

    ident: str
    path: Path
    message: str
    down: tuple[str, ...]
    post_deploy: bool = False  # on the post-deploy branch: contract steps belong there


@dataclass(frozen=True)
class Finding:
    """One problem in one revision; ``rule`` is None when no squawk rule applies."""

    revision: Revision
    rule: str | None
    message: str
    sql_line: int = field(default=0, compare=False)

    def render(self, root: Path) -> str:
        """The report line: file, revision id and message, then the rule and its message."""
        rev = self.revision
        path = rev.path.relative_to(root) if rev.path.is_relative_to(root) else rev.path
        message = with_hint(self.rule, self.message, post_deploy=rev.post_deploy)
        what = f"{self.rule}: {message}" if self.rule else message
        return f'{path} ({rev.ident}, "{rev.message}"): {what}'


@dataclass(frozen=True)
class Ignores:
    """The rules a revision file silences, and the comments that silence nothing."""

    rules: frozenset[str]
    problems: tuple[str, ...]


# --- revisions -------------------------------------------------------------------------


def select_revisions(scripts: ScriptDirectory, wanted: Sequence[str]) -> list[Revision]:
    """The revisions to lint, oldest first: all of them, or those named (ids, prefixes, head)."""
    ordered = [
        Revision(ident=s.revision, path=Path(s.path).resolve(), message=s.doc,
                 down=to_tuple(s.down_revision, default=()), post_deploy=is_post(s))
        for s in reversed(list(scripts.walk_revisions()))
    ]
    if not wanted:
        return ordered
    chosen = {script.revision for name in wanted for script in _resolve(scripts, name)}
    return [rev for rev in ordered if rev.ident in chosen]


def _resolve(scripts: ScriptDirectory, name: str) -> list[Script]:
    """The scripts a REV argument names; an unknown name stops the lint (exit 2). ``head``
    beside a post-deploy branch is the pre-deploy head, as for ``flask db upgrade``."""
    if name == "head":
        history = read_phases(scripts)
        if history.has_post and len(history.pre_heads) == 1:
            name = history.pre_heads[0]
    try:
        found = [s for s in scripts.get_revisions(name) if s is not None]
    except CommandError as exc:
        raise LintError(f"unknown revision {name!r}: {exc}") from None
    if not found:
        raise LintError(f"{name!r} names no revision to lint")
    return found


# --- rendering -------------------------------------------------------------------------


def render_upgrade(config: AlembicConfig, scripts: ScriptDirectory, revision: Revision) -> str:
    """What ``flask db upgrade --sql <down>:<rev>`` prints, for this one revision.

    Goes through env.py like the real command, but reuses the parsed scripts, so hundreds
    of revisions render in seconds rather than re-reading the whole folder for each.
    """
    script = scripts.get_revision(revision.ident)

    def this_step_only(heads: tuple[str, ...], context: object) -> list[MigrationStep]:
        return [MigrationStep.upgrade_from_script(scripts.revision_map, script)]

    buffer = io.StringIO()
    config.output_buffer = buffer
    with EnvironmentContext(config, scripts, fn=this_step_only, as_sql=True,
                            starting_rev=revision.down or None,
                            destination_rev=revision.ident):
        scripts.run_env()
    return buffer.getvalue()


def strip_bookkeeping(sql: str) -> str:
    """Drop Alembic's ``alembic_version`` statements: they are not the revision's SQL."""
    return _BOOKKEEPING.sub("", sql)


# --- per-file ignores ------------------------------------------------------------------


def read_ignores(path: Path) -> Ignores:
    """The ``# squawk-ignore: <rule> <reason>`` comments of a revision file."""
    rules: set[str] = set()
    problems: list[str] = []
    for lineno, rest in _ignore_comments(path):
        words = rest.split(maxsplit=1)
        rule = words[0] if words else ""
        reason = words[1] if len(words) > 1 else ""
        if not _RULE_NAME.fullmatch(rule):
            problems.append(f"line {lineno}: a squawk-ignore comment must name one rule "
                            f"and say why: {IGNORE_SYNTAX}")
        elif not re.search(r"\w", reason):
            problems.append(f"line {lineno}: {rule} is not silenced: the comment needs a "
                            f"reason after the rule name ({IGNORE_SYNTAX})")
        else:
            rules.add(rule)
    return Ignores(frozenset(rules), tuple(problems))


def _ignore_comments(path: Path) -> Iterable[tuple[int, str]]:
    """(line, text after the colon) of each squawk-ignore comment; strings do not count."""
    try:
        with tokenize.open(path) as source:
            tokens = list(tokenize.generate_tokens(source.readline))
    except (OSError, SyntaxError, tokenize.TokenError):
        return []  # the file cannot be imported either: rendering reports it
    return [(tok.start[0], match["rest"]) for tok in tokens
            if tok.type == tokenize.COMMENT and (match := _IGNORE_COMMENT.match(tok.string))]


def apply_ignores(revision: Revision, findings: list[Finding]) -> list[Finding]:
    """The revision's findings minus the rules it silences, plus its malformed comments."""
    ignores = read_ignores(revision.path)
    kept = [f for f in findings if f.rule not in ignores.rules]
    return kept + [Finding(revision, "squawk-ignore", p) for p in ignores.problems]


# --- squawk ----------------------------------------------------------------------------


def find_squawk() -> str:
    """squawk from this Python's environment first (the project's .venv), then PATH."""
    beside = Path(sys.executable).parent / "squawk"
    found = str(beside) if os.access(beside, os.X_OK) else shutil.which("squawk")
    if not found:
        raise LintError("squawk is not installed (it comes with the dev requirements: "
                        "make install)")
    return found


def run_squawk(directory: Path, files: Sequence[str], settings: Path | None) -> list[dict]:
    """Lint every file in one squawk run; return its JSON report (one entry per finding)."""
    command = [find_squawk(), "--reporter", "json"]
    if settings is not None:
        command += ["--config", str(settings)]
    proc = subprocess.run([*command, *files], cwd=directory, capture_output=True,
                          text=True, timeout=600)
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        report = None
    if proc.returncode not in (0, 1) or not isinstance(report, list):
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise LintError(f"squawk failed (exit {proc.returncode}): "
                        f"{detail[0] if detail else 'no output'}")
    return report


def squawk_findings(rendered: dict[Revision, str], settings: Path | None) -> list[Finding]:
    """Write one .sql file per revision, named so each finding maps back, and lint them."""
    if not rendered:
        return []
    with tempfile.TemporaryDirectory(prefix="lint-migrations-") as tmp:
        names: dict[str, Revision] = {}
        for index, (revision, sql) in enumerate(rendered.items()):
            name = f"{index:05d}_{revision.ident}.sql"
            (Path(tmp) / name).write_text(sql)
            names[name] = revision
        report = run_squawk(Path(tmp), list(names), settings)
    return [Finding(names[Path(entry["file"]).name], entry.get("rule_name") or "squawk",
                    entry.get("message", "").strip(), int(entry.get("line", 0)))
            for entry in report]


# --- the whole lint --------------------------------------------------------------------


def lint_revisions(config: AlembicConfig, scripts: ScriptDirectory,
                   revisions: Sequence[Revision], settings: Path | None) -> list[Finding]:
    """Every finding for these revisions, in history order, after per-file ignores."""
    rendered: dict[Revision, str] = {}
    failures: dict[Revision, Finding] = {}
    for revision in revisions:
        try:
            rendered[revision] = strip_bookkeeping(render_upgrade(config, scripts, revision))
        except Exception as exc:  # any error in the revision's own code is its finding
            failures[revision] = Finding(revision, None,
                                         f"cannot render offline: {describe_error(exc)}")
    by_revision: dict[Revision, list[Finding]] = {rev: [] for rev in revisions}
    for finding in squawk_findings(rendered, settings):
        by_revision[finding.revision].append(finding)
    findings: list[Finding] = []
    for revision in revisions:
        if revision in failures:
            findings.append(failures[revision])
        ordered = sorted(by_revision[revision], key=lambda f: f.sql_line)
        findings += apply_ignores(revision, ordered)
    return findings


def offline_app() -> Flask:
    """The app, for its migration settings; DATABASE_URL only picks the dialect here."""

    raw = database_url_setting() or PLACEHOLDER_URL
    app = create_app(Config(database_url=parse_database_url(raw)))
    # "Running upgrade ..." for every revision would bury the findings.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return app


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The command line; --help is the user's reference for the ignore comment."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Render each migration revision's SQL offline (as `flask db upgrade "
                    "--sql` does; no database needed) and lint it with squawk, using the "
                    f"settings in {SETTINGS_FILE}. Prints one line per finding, naming the "
                    "revision file, id and message, then a summary.",
        epilog="To silence one rule in one revision, add a comment to its file:\n"
               f"  {IGNORE_SYNTAX}\n"
               "One rule per comment; the reason is required (without one, the comment is "
               "itself a finding).\n\n"
               "Revisions that cannot be rewritten (the comment would change their "
               f"checksum): accept their findings in migrations/{BASELINE_FILE}, one a "
               f"line:\n  {LINE_SYNTAX}\n"
               "A finding it does not list fails; a line whose finding no longer occurs "
               "fails as stale.\n\n"
               "exit status: 0 clean, 1 findings or stale baseline lines (0 with "
               "--warn-only), 2 the lint could not run",
    )
    parser.add_argument("--warn-only", action="store_true",
                        help="print the findings but exit 0")
    parser.add_argument("--write-baseline", metavar="REASON",
                        help=f"write every current finding into migrations/{BASELINE_FILE} "
                             "(lines still true keep their reason; new ones get REASON; "
                             "stale ones go), then exit 0")
    parser.add_argument("revisions", nargs="*", metavar="REV",
                        help="revisions to lint (ids, unique prefixes, head: the "
                             "pre-deploy head, post@head: the post-deploy one); default: all")
    args = parser.parse_args(argv)
    if args.write_baseline is not None and args.revisions:
        parser.error("--write-baseline covers the whole history: give no REV")
    if args.write_baseline is not None and not re.search(r"\w", args.write_baseline):
        parser.error("--write-baseline needs a reason: why these findings are accepted")
    return args


def project_settings(root: Path) -> Path | None:
    """The repository's .squawk.toml; without it squawk's defaults apply, so say so."""
    settings = root / SETTINGS_FILE
    if settings.is_file():
        return settings
    print(f"lint_migrations: warning: no {SETTINGS_FILE} in {root}: squawk's default "
          "rules and PostgreSQL version apply", file=sys.stderr)
    return None


def run(args: argparse.Namespace) -> tuple[Path, Baseline, list[Revision], list[Finding]]:
    """Lint what the arguments ask for; return the repository root, the baseline (read
    first: a malformed line stops the lint before any work), revisions, findings."""
    app = offline_app()
    with app.app_context():
        config = app.extensions["migrate"].migrate.get_config()
        scripts = ScriptDirectory.from_config(config)
        root = Path(scripts.dir).resolve().parent
        baseline = lint_baseline.read_baseline(Path(scripts.dir).resolve(), root)
        revisions = select_revisions(scripts, args.revisions)
        settings = project_settings(root)
        print(f"lint_migrations: rendering {len(revisions)} revision(s) offline, then "
              f"linting them with squawk ({settings.name if settings else 'defaults'})",
              file=sys.stderr)
        findings = lint_revisions(config, scripts, revisions, settings)
    return root, baseline, revisions, findings


def main(argv: Sequence[str]) -> int:
    """Exit status for CI: 1 on findings or stale baseline lines unless --warn-only, 2 when
    the lint cannot run."""
    args = parse_args(argv)

    try:
        root, baseline, revisions, findings = run(args)
        if args.write_baseline is not None:
            written = lint_baseline.write_baseline(baseline, findings, args.write_baseline)
            for finding in findings:
                print(f"accepted: {finding.render(root)}")
            print(written)
            return 0
    except (ConfigError, LintError, CommandError, BaselineError) as exc:
        print(f"lint_migrations: {exc}", file=sys.stderr)
        return 2
    # Linting the whole history judges every baseline line; a few revisions, only theirs.
    judgement = lint_baseline.judge(baseline, findings,
                                    {rev.ident for rev in revisions} if args.revisions else None)
    for line in lint_baseline.report_lines(baseline, judgement, root):
        print(line)
    print(f"{len(revisions)} revision(s) linted, {len(judgement.failures)} finding(s)"
          f"{lint_baseline.summary_suffix(baseline, judgement)}")
    failed = judgement.failures or judgement.stale
    return 1 if failed and not args.warn_only else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

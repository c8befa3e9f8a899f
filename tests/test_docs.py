"""Every shell command printed in README.md and docs/*.md is accounted for.

A command in a ```bash, ```sh or ```console block (console: the lines after ``$ ``) is either
run by a test of the suite, as printed or in the same form (``RUN_BY``: the command's pattern
and the test, which must exist by that name and mention the command), or it cannot run
inside the suite (``NOT_RUN``: docker, kubectl, the make targets that run the suite or
take minutes), with the reason. Every command, run or not, is also checked statically, with
no database: the script, Make target, flag, ``flask`` command, compose service, manifest
name or route it names exists. A printed command that nobody accounts for fails with its
page and line.
"""

from __future__ import annotations

import ast
import functools
import itertools
import re
import shlex
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

from testkit.support import ROOT, child_env

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_LANGUAGES = {"bash", "sh", "console"}
# The CI step that ports a second application exactly as docs/adopting.md says.
SWAP = ".ci/swap_app.sh"

LOOP = "tests/test_readme_loop.py::test_the_documented_loop_from_a_fresh_clone"
# Documented command (a full match of the pattern) -> the test that runs it.
RUN_BY: list[tuple[str, str]] = [
    (r"source \.venv/bin/activate", LOOP),
    (r'scripts/create_migration\.sh "[^"]+"', LOOP),
    (r"flask db (upgrade|current|history|heads|check|downgrade)", LOOP),
    (r"flask db downgrade \w+", LOOP),
    (r"scripts/lint_migrations\.sh( head)?", LOOP),
    (r"scripts/migration_graph\.sh( --output \S+)?", LOOP),
    (r"scripts/verify_migrations\.sh -v", LOOP),
    (r'make verify-migrations( VERIFY_ARGS="-v")?', LOOP),
    (r"scripts/resolve_conflict\.sh( merge)?", LOOP),
    (r"scripts/backup\.sh", LOOP),
    (r"scripts/restore\.sh \S+ --yes", LOOP),
    (r"scripts/lint_migrations\.sh head post@head",
     "tests/scripts/test_lint_migrations.py::"
     "test_each_post_deploy_revision_is_rendered_and_linted_from_its_parent"),
    (r'scripts/create_migration\.sh --post-deploy "[^"]+"',
     "tests/scripts/test_create_migration.py::"
     "test_post_deploy_revisions_start_a_branch_of_their_own_then_follow_it"),
    (r'scripts/resolve_conflict\.sh merge -m "[^"]+"',
     "tests/scripts/test_resolve_conflict.py::test_merge_writes_a_merge_revision_and_upgrades"),
    (r"scripts/resolve_conflict\.sh rebase",
     "tests/scripts/test_resolve_conflict.py::test_rebase_moves_the_newer_head_onto_the_other"),
    (r"scripts/resolve_conflict\.sh rebase --keep \w+",
     "tests/scripts/test_resolve_conflict.py::"
     "test_rebase_keep_moves_the_older_head_and_renames_it_after_its_new_parent"),
    (r"scripts/backup\.sh --dir \S+",
     "tests/migrate/test_backup.py::test_scripts_backup_then_restore_round_trip"),
    (r"scripts/check_compat\.sh( --against \w+ -v)?",
     "tests/scripts/test_check_compat.py::test_a_compatible_revision_passes"),
    (r'scripts/rehearse\.sh --from-url "\$\w+"( --target-url "\$\w+" --report \S+)?',
     "tests/scripts/test_rehearse.py::"
     "test_pending_revisions_pass_and_leave_the_source_alone"),
    (r'scripts/rehearse\.sh --from-dump \S+ --target-url "\$\w+" --json -',
     "tests/scripts/test_rehearse.py::test_from_dump_rehearses_a_backup_file"),
    (r"scripts/reset_dev_database\.sh",
     "tests/scripts/test_branch_switch.py::test_the_reset_backs_up_then_rebuilds_at_head"),
    (r"flask migrations backfill run",
     "tests/migrate/test_background.py::test_run_changes_every_row_once_and_status_reports_done"),
    (r"flask migrations backfill status( --json)?",
     "tests/migrate/test_background.py::test_status_before_a_run_lists_pending_migrations"),
    (r"flask migrations backfill run --log-every \d+",
     "tests/migrate/test_backfill_runner.py::"
     "test_run_without_a_terminal_writes_the_log_lines_alone"),
    (r"flask migrations post-deploy",
     "tests/migrate/test_post_deploy.py::"
     "test_post_deploy_applies_the_contract_once_the_backfill_is_done"),
    # The README's compose step, run by the container suite (`make test-containers`): a bare
    # copy is refused, naming the password to set; every other compose test starts from it.
    (r"cp \.env\.example \.env",
     "tests/containers/test_compose.py::"
     "test_without_its_passwords_compose_refuses_to_start_and_names_the_one_missing"),
    # The port, run by CI's swap step (a script, not a test: it runs the suite itself).
    (r"scripts/remove_example\.sh", SWAP),
    (r"cp -R tests/apps/blog/\. \.", SWAP),
    (r'scripts/lint_migrations\.sh --write-baseline "[^"]+"', SWAP),
]
# Documented commands the suite cannot run, and why. Each is still checked statically.
NOT_RUN: list[tuple[str, str]] = [
    (r"make (run|test|install)", "the suite's own entry points: `make test` runs this test"),
    (r"make test PYTEST_ARGS=\S+", "runs part of the suite; this test is part of it"),
    (r"curl .*", "needs `make run` serving on port 8000; tests/test_health.py and the "
                 "application's API tests ask the same endpoints"),
    (r"docker(-compose| compose) .*", "needs a Docker engine: `make test-containers` runs "
                                      "the compose flows (tests/containers/)"),
    (r"kubectl .*", "needs a Kubernetes cluster: `make lint` validates the manifests and "
                    "`make test-containers` runs the pods' lifecycle on Docker"),
]


@dataclass(frozen=True)
class Command:
    page: str
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.page}:{self.line}: {self.text}"


def strip_comment(line: str) -> str:
    """The line without a trailing ``# comment`` (a ``#`` outside quotes, after a space)."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def commands_in(path: Path) -> list[Command]:
    page = str(path.relative_to(ROOT))
    found: list[Command] = []
    language = None
    pending, start = "", 0
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fence = re.match(r"^\s*```\s*(\S*)", line)
        if fence:
            language = None if language is not None else fence.group(1)
            continue
        if language not in SHELL_LANGUAGES:
            continue
        if language == "console":
            if not line.startswith("$ "):
                continue
            line = line[2:]
        text = strip_comment(line).strip()
        if not pending:
            start = number
        if text.endswith("\\"):
            pending += text[:-1] + " "
            continue
        text = (pending + text).strip()
        pending = ""
        if text:
            found.append(Command(page, start, re.sub(r"\s+", " ", text)))
    return found


ALL = [command for page in PAGES for command in commands_in(page)]


def match(table: list[tuple[str, str]], command: Command) -> str | None:
    for pattern, value in table:
        if re.fullmatch(pattern, command.text):
            return value
    return None


def test_the_pages_print_commands():
    assert len(ALL) > 40 and {c.page for c in ALL} >= {"README.md", "docs/workflow.md"}


@pytest.mark.parametrize("command", ALL, ids=str)
def test_every_documented_command_is_run_by_a_test_or_listed_with_a_reason(command):
    run_by, reason = match(RUN_BY, command), match(NOT_RUN, command)
    assert run_by or reason, (
        f"{command}\nno test runs this command: run it in a test and add it to RUN_BY, or, "
        "if the suite cannot run it, add it to NOT_RUN with the reason")


def find_test(node: str) -> ast.FunctionDef | ast.Module | None:
    """The test a registry entry names, or for a script (no ``::``) the script itself."""
    if "::" not in node:
        path = ROOT / node
        return ast.Module(body=[], type_ignores=[]) if path.is_file() else None
    path, name = node.split("::")
    tree = ast.parse((ROOT / path).read_text())
    return next((f for f in ast.walk(tree)
                 if isinstance(f, ast.FunctionDef) and f.name == name), None)


@pytest.mark.parametrize("pattern, node", RUN_BY, ids=[p for p, _ in RUN_BY])
def test_the_test_that_runs_a_command_exists_and_mentions_it(pattern, node):
    assert find_test(node) is not None, f"{node} (named for {pattern!r}) does not exist"
    # The program the command runs is named in that test's module.
    program = re.sub(r"\\", "", pattern.split(" ")[0].split("(")[0])
    flask_group = "migrations" if pattern.startswith("flask migrations") else "db "
    # cp: what it copies (the first argument that is not a flag), e.g. tests/apps/blog.
    copied = next((re.sub(r"\\", "", word).removesuffix("/.") for word in pattern.split(" ")[1:]
                   if not word.startswith("-")), "")
    needle = {"flask": flask_group, "make": "verify-migrations", "source": ".venv/bin/activate",
              "cp": copied}.get(program, Path(program).name)
    assert needle in (ROOT / node.split("::")[0]).read_text(), (node, needle)


def test_every_entry_of_the_registry_is_still_used():
    unused = [p for p, _ in RUN_BY + NOT_RUN
              if not any(re.fullmatch(p, c.text) for c in ALL)]
    assert not unused, f"no page prints these any more: {unused}"


# --- static checks: what a command names exists ---------------------------------------

@functools.cache
def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z][\w-]*)\s*:(?!=)", text, re.M))


@functools.cache
def script_help(script: str, words: tuple[str, ...]) -> str:
    proc = subprocess.run([str(ROOT / script), *words, "--help"], cwd=ROOT, env=child_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"{script} {' '.join(words)} --help: {proc.stderr}"
    return proc.stdout + proc.stderr


def compose_services() -> set[str]:
    text = "".join((ROOT / name).read_text()
                   for name in ("docker-compose.yml", "docker-compose.override.yml"))
    return set(re.findall(r"^  ([a-z][\w-]*):\s*$", text, re.M))


def manifests() -> str:
    return "".join(p.read_text() for p in (ROOT / "deploy/kubernetes").rglob("*.yaml"))


def check_make(words: list[str]) -> None:
    for word in words[1:]:
        if "=" in word:
            name = word.split("=")[0]
            code = (ROOT / "Makefile").read_text() + (ROOT / "bench/run.py").read_text()
            assert name in code, f"make variable {name} is read nowhere"
        else:
            assert word in make_targets(), f"no Make target {word!r}"


def check_script(words: list[str]) -> None:
    script = words[0]
    path = ROOT / script
    assert path.is_file() and path.stat().st_mode & 0o111, f"{script} is not an executable"
    flags = [w.split("=")[0] for w in words[1:] if w.startswith("-") and w != "-"]
    if flags:
        positional = tuple(w for w in words[1:words.index(next(
            w for w in words if w.startswith("-")))] if not w.startswith("$"))
        text = script_help(script, positional)
        for flag in flags:
            assert flag in text, f"{script} {' '.join(positional)} --help does not mention {flag}"


def check_flask(words: list[str]) -> None:
    from flask_migrate.cli import db

    from backend.cli import migrations_cli

    assert words[1] in ("db", "migrations"), f"unknown flask group {words[1]!r}"
    command, rest = db if words[1] == "db" else migrations_cli, words[2:]
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        named = command.commands.get(rest[0])
        assert named is not None, f"flask {words[1]} has no command {rest[0]!r}"
        command, rest = named, rest[1:]
    options = {opt for param in command.params for opt in param.opts}
    for flag in (w for w in rest if w.startswith("-")):
        assert flag in options, f"{' '.join(words)}: no option {flag}"


def check_docker(words: list[str]) -> None:
    rest = words[2:] if words[0] == "docker" else words[1:]
    while rest and rest[0] == "-f":
        assert (ROOT / rest[1]).is_file(), f"no compose file {rest[1]}"
        rest = rest[2:]
    verb, args = rest[0], rest[1:]
    assert verb in {"up", "down", "exec", "restart", "logs", "ps", "build"}, verb
    if verb == "up":
        assert set(args) <= {"--build", "-d"}, args
        return
    assert args[0] in compose_services(), f"no compose service {args[0]!r}"
    if verb == "exec":
        check(args[1:])


def check_kubectl(words: list[str]) -> None:
    names = manifests()
    for flag, value in itertools.pairwise(words):
        if flag == "-k":
            assert (ROOT / value / "kustomization.yaml").is_file(), f"no kustomization in {value}"
    for word in words[1:]:
        kind_name = re.fullmatch(r"(deployment|job)/([\w-]+)", word)
        if kind_name:
            assert f"kind: {kind_name.group(1).capitalize()}" in names, word
            assert f"name: {kind_name.group(2)}\n" in names, f"no manifest names {word}"
    if words[1:3] == ["delete", "job"] or words[1:4] == ["create", "secret", "generic"]:
        name = words[3] if words[1] == "delete" else words[4]
        assert f"name: {name}\n" in names, f"no manifest names {name}"


def check_curl(words: list[str]) -> None:
    url = next(w for w in words[1:] if w.startswith("localhost:"))
    path = "/" + url.split("/", 1)[1]
    if path.startswith("/api/"):
        return  # the application's routes, behind the seam; its own tests ask them
    health = (ROOT / "backend/serving/health.py").read_text()
    assert f'.get("{path}")' in health, f"no route {path}"


def check(words: list[str]) -> None:
    program = words[0] = words[0].removeprefix(".venv/bin/")
    if program == "make":
        check_make(words)
    elif program.startswith("scripts/"):
        check_script(words)
    elif program == "flask":
        check_flask(words)
    elif program in ("docker", "docker-compose"):
        check_docker(words)
    elif program == "kubectl":
        check_kubectl(words)
    elif program == "curl":
        check_curl(words)
    elif program == "cp":
        sources = [w for w in words[1:-1] if not w.startswith("-")]
        assert sources and all((ROOT / s).exists() for s in sources), f"cp: no {sources}"
    elif program == "source":
        assert words[1] == ".venv/bin/activate" and "VENV := .venv" in \
            (ROOT / "Makefile").read_text()
    else:
        raise AssertionError(f"no static check knows {program!r}")


@pytest.mark.parametrize("command", ALL, ids=str)
def test_what_a_documented_command_names_exists(command):
    try:
        check(shlex.split(command.text))
    except AssertionError as exc:
        raise AssertionError(f"{command}\n{exc}") from None


# --- the pages themselves ---------------------------------------------------------------

@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_lead_to_files(page):
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue
        resolved = (page.parent / target).resolve()
        assert resolved.exists(), f"{page.name}: {target}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_python_examples_parse(page):
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), re.S)
    for block in blocks:
        ast.parse(textwrap.dedent(block))


def test_the_front_door_stays_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 160

"""scripts/lock_hashes.py and the hashes in the committed lock files, offline.

The lock files are installed with `pip install --require-hashes`: a pin without a hash
fails the whole install, so every pin must carry at least one. The script's parsing and
rendering are pure functions, tested on small strings; its fetching is replaced here, so
nothing reaches the network.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCKS = ("requirements.lock", "requirements-dev.lock", "requirements-manifests.lock")
HASH = "--hash=sha256:"


def _load():
    spec = importlib.util.spec_from_file_location("lock_hashes", ROOT / "scripts/lock_hashes.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building
    spec.loader.exec_module(module)
    return module


lock_hashes = _load()
Pin = lock_hashes.Pin
A, B, C = "a" * 64, "b" * 64, "c" * 64

SAMPLE = """\
# Runtime dependencies.
-r requirements.lock

Flask==3.1.3
# a comment between pins
typing_extensions==4.16.0
"""


# --- the committed lock files -----------------------------------------------------------


@pytest.mark.parametrize("name", LOCKS)
def test_every_pin_carries_sha256_hashes(name):
    entries = lock_hashes.parse((ROOT / name).read_text())
    pins = lock_hashes.pins(entries)
    assert pins, f"{name} has no pins"
    for pin in pins:
        assert pin.hashes, f"{name}: {pin} has no --hash"
        for digest in pin.hashes:
            assert re.fullmatch(r"[0-9a-f]{64}", digest), f"{name}: {pin}: {digest!r}"


@pytest.mark.parametrize("name", LOCKS)
def test_no_bare_pin_and_every_hash_well_formed(name):
    lines = (ROOT / name).read_text().splitlines()
    for number, line in enumerate(lines, start=1):
        if re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*==", line):
            assert line.endswith(" \\"), f"{name}:{number}: {line!r} is not hash-locked"
            assert lines[number].lstrip().startswith(HASH), f"{name}:{number}: no hash follows"
        if HASH in line:
            assert re.fullmatch(r"    --hash=sha256:[0-9a-f]{64}( \\)?", line), (
                f"{name}:{number}: {line!r}"
            )


@pytest.mark.parametrize("name", LOCKS)
def test_committed_locks_are_as_the_script_writes_them(name):
    """Regeneration is stable: the committed text is already the rendered form (sorted,
    de-duplicated hashes, one a line), so `make lock` with unchanged pins changes nothing."""
    text = (ROOT / name).read_text()
    assert lock_hashes.render(lock_hashes.parse(text)) == text


def test_the_dev_lock_includes_the_runtime_lock_and_repeats_none_of_its_pins():
    dev = lock_hashes.parse((ROOT / "requirements-dev.lock").read_text())
    runtime = lock_hashes.parse((ROOT / "requirements.lock").read_text())
    assert "-r requirements.lock" in dev
    assert not {p.key for p in lock_hashes.pins(dev)} & {p.key for p in lock_hashes.pins(runtime)}


# --- parsing and rendering --------------------------------------------------------------


def test_parse_keeps_comments_options_and_blank_lines_and_reads_pins():
    entries = lock_hashes.parse(SAMPLE)
    assert entries == [
        "# Runtime dependencies.",
        "-r requirements.lock",
        "",
        Pin("Flask", "3.1.3"),
        "# a comment between pins",
        Pin("typing_extensions", "4.16.0"),
    ]


def test_parse_reads_hashes_across_continuation_lines_sorted_and_deduplicated():
    text = f"alembic==1.20.1 \\\n    --hash=sha256:{B} \\\n    --hash=sha256:{A.upper()} \\\n"
    text += f"    --hash=sha256:{B}\nclick==8.5.1 --hash=sha256:{C}\n"
    assert lock_hashes.parse(text) == [
        Pin("alembic", "1.20.1", hashes=(A, B)),
        Pin("click", "8.5.1", hashes=(C,)),
    ]


def test_parse_keeps_extras_and_markers():
    [pin] = lock_hashes.parse('pkg[extra] == 1.0 ;  python_version < "3.12"\n')
    assert (pin.name, pin.extras, pin.version, pin.marker) == (
        "pkg",
        "[extra]",
        "1.0",
        '; python_version < "3.12"',
    )
    assert lock_hashes.render([pin]) == 'pkg[extra]==1.0 ; python_version < "3.12"\n'


@pytest.mark.parametrize(
    "line",
    ["alembic>=1.20", "alembic", "alembic==1.20.1  # why", "alembic==1.20.1 --no-binary :all:"],
)
def test_parse_refuses_what_is_not_an_exact_pin(line):
    with pytest.raises(lock_hashes.LockError, match="line 2"):
        lock_hashes.parse(f"# header\n{line}\n")


def test_render_writes_pips_hash_format():
    pins = [Pin("alembic", "1.20.1", hashes=(B, A, B)), Pin("click", "8.5.1", hashes=(C,))]
    assert lock_hashes.render(["# header", *pins]) == (
        "# header\n"
        "alembic==1.20.1 \\\n"
        f"    --hash=sha256:{A} \\\n"
        f"    --hash=sha256:{B}\n"
        "click==8.5.1 \\\n"
        f"    --hash=sha256:{C}\n"
    )


def test_render_of_parse_is_idempotent():
    hashed = lock_hashes.render(
        lock_hashes.with_hashes(
            lock_hashes.parse(SAMPLE),
            {("flask", "3.1.3"): [B, A], ("typing-extensions", "4.16.0"): {C}},
        )
    )
    assert lock_hashes.render(lock_hashes.parse(hashed)) == hashed
    assert lock_hashes.render(lock_hashes.parse(SAMPLE)) == SAMPLE
    assert hashed.startswith("# Runtime dependencies.\n-r requirements.lock\n\nFlask==3.1.3 \\\n")
    assert hashed.count(HASH) == 3


def test_with_hashes_replaces_old_hashes():
    [pin] = lock_hashes.with_hashes([Pin("Flask", "3.1.3", hashes=(C,))], {("flask", "3.1.3"): {A}})
    assert pin.hashes == (A,)


# --- names, file names and pip's configuration ------------------------------------------


@pytest.mark.parametrize(
    ("name", "normal"),
    [("Flask_SQLAlchemy", "flask-sqlalchemy"), ("ruamel.yaml", "ruamel-yaml"), ("A-._b", "a-b")],
)
def test_normalize_name(name, normal):
    assert lock_hashes.normalize_name(name) == normal


@pytest.mark.parametrize(
    ("filename", "key", "matches"),
    [
        ("typing_extensions-4.16.0-py3-none-any.whl", ("typing-extensions", "4.16.0"), True),
        ("ruamel.yaml-0.19.1-py3-none-any.whl", ("ruamel-yaml", "0.19.1"), True),
        ("bc-detect-secrets-1.5.52.tar.gz", ("bc-detect-secrets", "1.5.52"), True),
        ("torch-2.13.0+cpu-cp311-cp311-linux_x86_64.whl", ("torch", "2.13.0"), True),
        ("alembic-1.20.0-py3-none-any.whl", ("alembic", "1.20.1"), False),
        ("alembic_utils-1.20.1-py3-none-any.whl", ("alembic", "1.20.1"), False),
        ("index.html", ("alembic", "1.20.1"), False),
    ],
)
def test_file_matches(filename, key, matches):
    assert lock_hashes.file_matches(filename, key) is matches


def test_parse_pip_config_reads_the_install_sources():
    output = (
        ":env:.find-links='/opt/wheels'\n"
        "global.cert='/etc/ssl/certs/ca-certificates.crt'\n"
        "global.extra-index-url='file:///opt/pypi/simple file:///opt/pypi-more/simple'\n"
        "global.find-links='/opt/wheels'\n"
        "download.find-links='/elsewhere'\n"
        "install.index-url='https://pypi.org/simple'\n"
    )
    config = lock_hashes.parse_pip_config(output)
    assert config == {
        "find-links": ["/opt/wheels"],
        "extra-index-url": ["file:///opt/pypi/simple", "file:///opt/pypi-more/simple"],
        "index-url": ["https://pypi.org/simple"],
    }
    assert lock_hashes.local_sources(config) == (
        ["/opt/wheels"],
        ["file:///opt/pypi/simple", "file:///opt/pypi-more/simple"],
    )
    assert lock_hashes.local_sources(lock_hashes.parse_pip_config("")) == ([], [])


def test_page_links_reads_file_names_and_sha256_fragments():
    html = f'<a href="../../files/a_b-1.0-py3-none-any.whl#sha256={A}">x</a><a href="c-2.tar.gz">'
    assert lock_hashes.page_links(html, "file:///idx/simple/a-b/index.html") == [
        ("file:///idx/files/a_b-1.0-py3-none-any.whl", "a_b-1.0-py3-none-any.whl", A),
        ("file:///idx/simple/a-b/c-2.tar.gz", "c-2.tar.gz", None),
    ]


def test_local_hashes_from_a_find_links_directory_and_a_file_index(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    rebuilt = wheels / "Flask-3.1.3-py3-none-any.whl"
    rebuilt.write_bytes(b"a rebuilt wheel")
    (wheels / "Flask-3.1.2-py3-none-any.whl").write_bytes(b"another version")
    project = tmp_path / "simple" / "flask"
    project.mkdir(parents=True)
    (project / "index.html").write_text(
        f'<a href="../../files/flask-3.1.3.tar.gz#sha256={C}">flask-3.1.3.tar.gz</a>'
    )
    index = (tmp_path / "simple").as_uri()
    found = lock_hashes.local_hashes(
        Pin("Flask", "3.1.3"), [str(wheels)], [index, (tmp_path / "absent").as_uri()]
    )
    assert found == {hashlib.sha256(b"a rebuilt wheel").hexdigest(), C}


# --- the command, with the network replaced ---------------------------------------------


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setattr(lock_hashes, "pip_config", lambda: lock_hashes.parse_pip_config(""))
    digests = {"flask": {B, A}, "typing-extensions": {C}}

    def pypi_hashes(pin):
        if pin.key[0] not in digests:
            raise lock_hashes.LockError(f"{pin}: PyPI has no version {pin.version}")
        return set(digests[pin.key[0]])

    monkeypatch.setattr(lock_hashes, "pypi_hashes", pypi_hashes)


def test_main_writes_hashes_then_changes_nothing(tmp_path, offline, capsys):
    lock = tmp_path / "requirements.lock"
    lock.write_text(SAMPLE)
    assert lock_hashes.main([str(lock)]) == 0
    first = lock.read_text()
    assert first.count(HASH) == 3 and first.startswith("# Runtime dependencies.\n")
    assert lock_hashes.main([str(lock)]) == 0
    assert lock.read_text() == first
    assert capsys.readouterr().out.splitlines()[-1] == "requirements.lock: 2 pins, unchanged"


def test_main_leaves_every_file_unchanged_when_one_pin_fails(tmp_path, offline, capsys):
    good = tmp_path / "good.lock"
    good.write_text(SAMPLE)
    bad = tmp_path / "bad.lock"
    bad.write_text("# header\nnosuchpackage==0.0.1\n")
    assert lock_hashes.main([str(good), str(bad)]) == 1
    assert good.read_text() == SAMPLE
    assert bad.read_text() == "# header\nnosuchpackage==0.0.1\n"
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "nosuchpackage==0.0.1" in error

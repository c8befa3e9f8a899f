"""Add sha256 hashes to the pins of the lock files, for `pip install --require-hashes`.

Why: a `name==version` pin names a release, not its bytes. Whoever can publish to, or sit
between us and, an index could serve a different file under the same version and pip would
install it. With a hash on every pin, `pip install --require-hashes` (the Makefile and the
Dockerfile install that way) refuses any file whose sha256 is not in the lock, and refuses a
requirement that is not pinned with hashes, so an unpinned dependency cannot slip in either.

What: each lock's comments, option lines (`-r requirements.lock`) and `name==version` pins
stay as they are; the pins are the source of truth and nothing is re-resolved. Each pin gets
one `--hash=sha256:` per file a pip could install for that exact version:

* every file PyPI lists for it (https://pypi.org/pypi/<name>/<version>/json), so whichever
  wheel a platform or Python picks (the host's, the image's) is covered;
* every file of that name and version in the local sources pip is configured with
  (find-links, extra-index-url or a non-PyPI index-url, from `pip config list` and PIP_*
  variables), which may hold rebuilt files whose hashes differ from PyPI's. A machine with
  no such configuration uses PyPI alone.

Hashes are sorted and de-duplicated, so a second run changes nothing. The files are
written only after every hash has been gathered: a network failure or a version PyPI does
not have is a one-line error naming the pin, a non-zero exit, and untouched lock files.

Usage: python3 scripts/lock_hashes.py [LOCK_FILE ...]   (default: the project's three locks;
`make lock` runs it)
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_LOCKS = ("requirements.lock", "requirements-dev.lock", "requirements-manifests.lock")
PYPI_JSON = "https://pypi.org/pypi"
PYPI_HOSTS = {"pypi.org", "pypi.python.org"}
HASH_INDENT = "    "
TIMEOUT = 60
ATTEMPTS = 3
ARCHIVE_SUFFIXES = (".whl", ".tar.gz", ".zip", ".tar.bz2", ".tar.xz", ".tgz", ".tar")

_HASH_RE = re.compile(r"(?:^|\s)--hash[=\s]\s*sha256:([0-9a-fA-F]{64})(?=\s|$)")
_PIN_RE = re.compile(
    r"^(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)"
    r"\s*(?P<extras>\[[^\]]*\])?"
    r"\s*==\s*(?P<version>[^\s;#\\]+)"
    r"\s*(?P<marker>;[^#]*?)?\s*$"
)


class LockError(Exception):
    """A lock file that cannot be read, or a pin whose hashes cannot be gathered."""


@dataclass(frozen=True)
class Pin:
    """One `name==version` requirement, with the hashes it carries."""

    name: str
    version: str
    extras: str = ""
    marker: str = ""
    hashes: tuple[str, ...] = field(default=())

    @property
    def key(self) -> tuple[str, str]:
        return normalize_name(self.name), self.version.lower()

    def __str__(self) -> str:
        return f"{self.name}=={self.version}"


Entry = Pin | str  # a pin, or a line kept verbatim (comment, blank, option such as -r)


# --- parsing and rendering (no I/O) -----------------------------------------------------


def normalize_name(name: str) -> str:
    """The PEP 503 form of a project name: lower case, runs of -_. as one hyphen."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Physical lines joined where a line ends in a backslash, with their first line number."""
    buffer: list[str] = []
    start = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not buffer:
            start = number
        if line.endswith("\\"):
            buffer.append(line[:-1])
            continue
        buffer.append(line)
        yield start, " ".join(buffer) if len(buffer) > 1 else buffer[0]
        buffer = []
    if buffer:
        yield start, " ".join(buffer)


def parse(text: str) -> list[Entry]:
    """The entries of a lock file: pins (with any hashes) and verbatim lines.

    Comment lines, blank lines and option lines (`-r`, `-c`, `--index-url`, ...) are kept as
    they are. A requirement that is not an exact `==` pin, or a pin followed by an option
    other than --hash or by a comment, is an error: the lock must say exactly what to hash.
    """
    entries: list[Entry] = []
    for number, line in _logical_lines(text):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.startswith("-"):
            entries.append(line.rstrip())
            continue
        hashes = tuple(h.lower() for h in _HASH_RE.findall(stripped))
        requirement = _HASH_RE.sub(" ", stripped).strip()
        if " -" in f" {requirement}" or re.search(r"\s#", requirement):
            raise LockError(
                f"line {number}: {stripped!r}: only --hash options may follow a pin "
                "(put a comment on a line of its own)"
            )
        match = _PIN_RE.match(requirement)
        if not match:
            raise LockError(f"line {number}: {requirement!r} is not an exact name==version pin")
        entries.append(
            Pin(
                name=match["name"],
                version=match["version"],
                extras=(match["extras"] or "").replace(" ", ""),
                marker=" ".join((match["marker"] or "").split()),
                hashes=tuple(sorted(set(hashes))),
            )
        )
    return entries


def render_pin(pin: Pin) -> str:
    """A pin in pip's hash format: one `--hash=sha256:` per continuation line, sorted."""
    head = f"{pin.name}{pin.extras}=={pin.version}"
    if pin.marker:
        head = f"{head} {pin.marker}"
    hashes = sorted(set(pin.hashes))
    if not hashes:
        return head
    lines = [f"{head} \\"]
    lines += [f"{HASH_INDENT}--hash=sha256:{h} \\" for h in hashes[:-1]]
    lines.append(f"{HASH_INDENT}--hash=sha256:{hashes[-1]}")
    return "\n".join(lines)


def render(entries: Iterable[Entry]) -> str:
    """The text of a lock file from its entries, ending in a newline."""
    return "".join(
        (render_pin(entry) if isinstance(entry, Pin) else entry) + "\n" for entry in entries
    )


def pins(entries: Iterable[Entry]) -> list[Pin]:
    """The pins among a lock file's entries."""
    return [entry for entry in entries if isinstance(entry, Pin)]


def with_hashes(
    entries: Iterable[Entry], hashes: Mapping[tuple[str, str], Iterable[str]]
) -> list[Entry]:
    """The entries with each pin's hashes replaced by those gathered for its name and version."""
    return [
        replace(entry, hashes=tuple(sorted(set(hashes[entry.key]))))
        if isinstance(entry, Pin)
        else entry
        for entry in entries
    ]


def split_filename(filename: str) -> tuple[str, str] | None:
    """(normalised name, lower-cased version) of a wheel or sdist file name, None otherwise."""
    lower = filename.lower()
    if lower.endswith(".whl"):
        parts = filename[:-4].split("-")
        return (normalize_name(parts[0]), parts[1].lower()) if len(parts) >= 5 else None
    for suffix in ARCHIVE_SUFFIXES[1:]:
        if lower.endswith(suffix):
            name, dash, version = filename[: -len(suffix)].rpartition("-")
            return (normalize_name(name), version.lower()) if dash and name else None
    return None


def file_matches(filename: str, key: tuple[str, str]) -> bool:
    """Whether pip could take this file for the pin `key`: same project and version (a
    local version label, as in 2.1.0+cpu, matches a pin without one, as `==` does)."""
    parsed = split_filename(filename)
    if parsed is None or parsed[0] != key[0]:
        return False
    version = parsed[1]
    return version == key[1] or ("+" not in key[1] and version.startswith(key[1] + "+"))


def parse_pip_config(output: str) -> dict[str, list[str]]:
    """The package sources in `pip config list` output: {"find-links": [...],
    "extra-index-url": [...], "index-url": [...]}, from the sections `pip install` reads."""
    sources: dict[str, list[str]] = {"find-links": [], "extra-index-url": [], "index-url": []}
    for line in output.splitlines():
        key, eq, raw = line.partition("=")
        section, _, option = key.strip().rpartition(".")
        if not eq or option not in sources or section not in {"global", "install", ":env:"}:
            continue
        try:
            value = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            value = raw.strip().strip("'\"")
        for item in str(value).split():
            if item not in sources[option]:
                sources[option].append(item)
    return sources


def local_sources(config: Mapping[str, Sequence[str]]) -> tuple[list[str], list[str]]:
    """(find-links locations, index URLs) to look in besides PyPI's JSON API."""
    indexes = [
        url
        for url in [*config.get("index-url", []), *config.get("extra-index-url", [])]
        if urllib.parse.urlsplit(url).hostname not in PYPI_HOSTS
    ]
    return list(config.get("find-links", [])), indexes


class _LinkParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            href = dict(attrs).get("href")
            if href:
                self.hrefs.append(href)


def page_links(html: str, base: str) -> list[tuple[str, str, str | None]]:
    """(absolute URL, file name, sha256 from the URL fragment or None) for each link."""
    parser = _LinkParser()
    parser.feed(html)
    links = []
    for href in parser.hrefs:
        url, _, fragment = urllib.parse.urljoin(base, href).partition("#")
        filename = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
        digest = fragment[len("sha256=") :].lower() if fragment.startswith("sha256=") else None
        links.append((url, filename, digest))
    return links


# --- gathering hashes (I/O) -------------------------------------------------------------


def _open(url: str, accept: str = "*/*") -> bytes:
    """The body at url, retried on transient failures; HTTP 404 raises at once."""
    request = urllib.request.Request(url, headers={"Accept": accept})
    for attempt in range(1, ATTEMPTS + 1):
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                return response.read()
        except urllib.error.HTTPError as error:
            if error.code < 500 or attempt == ATTEMPTS:
                raise
        except (urllib.error.URLError, TimeoutError, ConnectionError):
            if attempt == ATTEMPTS:
                raise
        time.sleep(attempt)
    raise AssertionError("unreachable")


def _reason(error: Exception) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code}"
    if isinstance(error, urllib.error.URLError):
        return str(error.reason)
    return str(error) or type(error).__name__


def _pypi_json(pin: Pin, url: str) -> dict | None:
    """A PyPI JSON document; None on HTTP 404; LockError naming the pin on other failures."""
    try:
        return json.loads(_open(url, "application/json"))
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return None
        raise LockError(f"{pin}: PyPI: {_reason(error)}") from error
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise LockError(f"{pin}: PyPI: {_reason(error)}") from error


def pypi_hashes(pin: Pin) -> set[str]:
    """The sha256 of every file PyPI lists for the pin's exact version."""
    project = f"{PYPI_JSON}/{urllib.parse.quote(pin.name)}"
    document = _pypi_json(pin, f"{project}/{urllib.parse.quote(pin.version)}/json")
    if document is not None:
        files = document.get("urls", [])
    else:
        # Some PyPI mirrors serve only the project document, which lists every release.
        document = _pypi_json(pin, f"{project}/json")
        if document is None:
            raise LockError(f"{pin}: PyPI has no project {pin.name}")
        if pin.version not in document.get("releases", {}):
            raise LockError(f"{pin}: PyPI has no version {pin.version} of {pin.name}")
        files = document["releases"][pin.version]
    hashes = {
        str(file["digests"]["sha256"]).lower()
        for file in files
        if file.get("digests", {}).get("sha256")
    }
    if not hashes:
        raise LockError(f"{pin}: PyPI lists no files for version {pin.version}")
    return hashes


def _file_path(location: str) -> Path | None:
    """The local path of a file: URL or a plain path, None for a remote URL."""
    parts = urllib.parse.urlsplit(location)
    if parts.scheme == "file":
        return Path(urllib.request.url2pathname(parts.path))
    return Path(location).expanduser() if not parts.scheme else None


def _sha256_of(url: str) -> str:
    path = _file_path(url)
    if path is None:
        return hashlib.sha256(_open(url)).hexdigest()
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _page(url: str) -> list[tuple[str, str, str | None]]:
    """The links on an HTML page, local or remote; [] if there is no such page."""
    path = _file_path(url)
    if path is not None:
        if not path.is_file():
            return []
        return page_links(path.read_text(errors="replace"), path.resolve().as_uri())
    try:
        return page_links(_open(url, "text/html").decode("utf-8", "replace"), url)
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return []
        raise


def find_links_files(location: str) -> list[tuple[str, str, str | None]]:
    """The files at a find-links location, as pip sees them: a directory's files, or the
    links on a page."""
    path = _file_path(location)
    if path is not None and path.is_dir():
        return [(p.resolve().as_uri(), p.name, None) for p in sorted(path.iterdir()) if p.is_file()]
    return _page(location)


def index_files(index_url: str, project: str) -> list[tuple[str, str, str | None]]:
    """The files a simple (PEP 503) index lists for a project; a local index's project
    directory is read through its index.html, as pip does."""
    url = f"{index_url.rstrip('/')}/{project}/"
    path = _file_path(url)
    if path is not None and path.is_dir():
        return _page(str(path / "index.html"))
    return _page(url)


def local_hashes(pin: Pin, find_links: Sequence[str], indexes: Sequence[str]) -> set[str]:
    """The sha256 of each file for the pin's name and version in pip's local sources."""
    hashes: set[str] = set()
    location = ""
    try:
        files: list[tuple[str, str, str | None]] = []
        for location in find_links:
            files += find_links_files(location)
        for location in indexes:
            files += index_files(location, pin.key[0])
        for url, filename, digest in files:
            if file_matches(filename, pin.key):
                location = url
                hashes.add(digest or _sha256_of(url))
    except (urllib.error.URLError, OSError) as error:
        raise LockError(f"{pin}: {location}: {_reason(error)}") from error
    return hashes


def pip_config() -> dict[str, list[str]]:
    """pip's configured package sources: `pip config list`, or PIP_* variables without pip."""
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            check=False,
        )
        output = result.stdout if result.returncode == 0 else ""
    except OSError:
        output = ""
    if not output:
        variables = {
            "PIP_FIND_LINKS": "find-links",
            "PIP_EXTRA_INDEX_URL": "extra-index-url",
            "PIP_INDEX_URL": "index-url",
        }
        output = "\n".join(
            f":env:.{option}={os.environ[var]!r}"
            for var, option in variables.items()
            if os.environ.get(var)
        )
    return parse_pip_config(output)


def gather(
    all_pins: Iterable[Pin], config: Mapping[str, Sequence[str]]
) -> dict[tuple[str, str], set[str]]:
    """Hashes for every distinct pin: PyPI's files plus the local sources' files."""
    find_links, indexes = local_sources(config)
    unique = {pin.key: pin for pin in all_pins}

    def one(pin: Pin) -> set[str]:
        return pypi_hashes(pin) | local_hashes(pin, find_links, indexes)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = dict(zip(unique, pool.map(one, unique.values()), strict=True))
    return results


def _write(path: Path, text: str) -> None:
    """Replace the file's content in one step (a reader never sees half a lock)."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(temp, path.stat().st_mode & 0o777)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def main(argv: Sequence[str] | None = None) -> int:
    """Re-hash the given lock files (default: the project's three); 0 on success."""
    args = list(sys.argv[1:] if argv is None else argv)
    if {"-h", "--help"} & set(args):
        print(__doc__)
        return 0
    if any(arg.startswith("-") for arg in args):
        print("usage: lock_hashes.py [LOCK_FILE ...]", file=sys.stderr)
        return 2
    paths = [Path(arg) for arg in args] or [ROOT / name for name in DEFAULT_LOCKS]
    try:
        parsed: dict[Path, list[Entry]] = {}
        for path in paths:
            try:
                parsed[path] = parse(path.read_text())
            except OSError as error:
                raise LockError(f"{path}: {error.strerror or error}") from error
            except LockError as error:
                raise LockError(f"{path}: {error}") from error
        hashes = gather((pin for entries in parsed.values() for pin in pins(entries)), pip_config())
    except LockError as error:
        print(f"lock_hashes: error: {error}", file=sys.stderr)
        return 1
    for path, entries in parsed.items():
        text = render(with_hashes(entries, hashes))
        count = len(pins(entries))
        if text == path.read_text():
            print(f"{path.name}: {count} pins, unchanged")
        else:
            _write(path, text)
            print(f"{path.name}: {count} pins, hashes written")
    return 0


if __name__ == "__main__":
    sys.exit(main())

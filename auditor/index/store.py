"""Reading and writing the index on disk.

Reading (`load_index`, `lookup`) validates every file it returns: the schema, the rules of `checks`, and the
rules across files. `load_index` reads many files, so it parses them with a YAML 1.2 reader written in
Rust (turboyaml, about 25 times libyaml's speed here) and types them with msgspec: 10,000 models in about
three seconds on two cores, with no cache (see benchmarks/bench_index.py). Before that reader sees a file,
yamlio's bound on bracket nesting applies (turboyaml crashes on brackets nested thousands deep). A file
holding what only the strict reader may judge (escapes and unusual characters, .inf and .nan) or anything
the fast path refuses goes through the strict reader (`yamlio`) instead, which also names what is wrong.
Knowingly left to `index validate`, which always reads strictly (and runs in CI on every change): a number in
a form YAML 1.1 reads differently (`012`) and a key repeated after an empty first value.

Writing (`append_record`) is safe against crashes and concurrent writers: a lock file in the index root
serialises writers, the new text is validated before it is written, and the file is replaced atomically
(temp file, fsync, rename), so a reader or a crash never sees half a file. Records stay in date order
(nothing is ever overwritten), and one identical to a record already there (same revision, tool version
and settings) is not added twice.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import turboyaml

from .. import clock, yamlio
from ..errors import AuditorError, Failure, UsageError
from ..fileio import atomic_write
from ..ids import is_model_id
from ..models import DataError
from .checks import (
    UNSAFE_CHARACTERS,
    IndexValidationError,
    Problem,
    check_index,
    check_text,
    entry_problems,
    identity,
    parse_date,
)
from .entries import ModelEntry, Record, entry_from_dict, render_entry

LOCK_NAME = ".superweight.lock"
ROOT_FILES = {"README.md"}
FAST_BYTES = 256 * 1024  # bigger files (hundreds of records) take the strict reader


class IndexNotFoundError(AuditorError):
    """There is no index directory where one was expected."""

    code = Failure.NO_INDEX


def index_path(root: str | Path | None = None) -> Path:
    """Where the index is: `root`, else $SUPERWEIGHT_INDEX, else ./index (it may not exist yet). An empty
    SUPERWEIGHT_INDEX counts as unset: never the current directory by accident."""
    return Path(root if root is not None else os.environ.get("SUPERWEIGHT_INDEX") or "index")


def resolve_root(root: str | Path | None = None) -> Path:
    """The index directory, which must exist: `root`, else $SUPERWEIGHT_INDEX, else ./index."""
    path = index_path(root)
    if not path.is_dir():
        named = "" if root is not None or not os.environ.get("SUPERWEIGHT_INDEX") else " (from $SUPERWEIGHT_INDEX)"
        raise IndexNotFoundError(
            f"no index directory at {path}{named} (run from the repository root or pass --index DIR)"
        )
    return path


def check_model_id(model_id: str) -> str:
    if not is_model_id(model_id):
        raise UsageError(f"{model_id!r} is not a Hub model id (org/name)")
    return model_id


def scan(root: Path) -> tuple[list[Path], list[Problem]]:
    """Every index file (`<org>/<name>.yaml` under the root), and a problem for anything else there: a link,
    a stray file, a folder or a .yml. Dotfiles are passed over (the writers' lock, an interrupted write's
    temp file). Directory entries carry their type, so this costs no stat per file."""
    files, problems = [], []

    def odd(entry: os.DirEntry, level: int) -> str | None:
        if entry.is_symlink():
            return "is a symbolic link; the index holds plain files"
        if (level == 0 and not entry.is_dir()) or (level == 1 and not entry.name.endswith(".yaml")):
            return "is out of place: the index holds <org>/<name>.yaml files"
        if level == 1 and not entry.is_file():
            return "is not a plain file"
        return None

    for org in sorted(os.scandir(root), key=lambda e: e.name):
        if org.name.startswith(".") or org.name in ROOT_FILES:
            continue
        if why := odd(org, 0):
            problems.append(Problem(org.name, why))
            continue
        for entry in sorted(os.scandir(org.path), key=lambda e: e.name):
            if entry.name.startswith("."):
                continue
            if reason := odd(entry, 1):
                problems.append(Problem(f"{org.name}/{entry.name}", reason))
            else:
                files.append(root / org.name / entry.name)
    return files, problems


def find_file(root: Path, model_id: str) -> Path | None:
    """The file of `model_id`, matched case-insensitively as the Hub matches ids."""
    exact = root / f"{model_id}.yaml"
    if exact.is_file():
        return exact
    org, name = model_id.lower().split("/", 1)
    for d in root.iterdir() if root.is_dir() else ():
        if d.is_dir() and d.name.lower() == org:
            for f in d.glob("*.yaml"):
                if f.stem.lower() == name:
                    return f
    return None


def read_file(path: Path, root: Path) -> tuple[str, bytes | None, list[Problem]]:
    """(path relative to the root, bytes, problems): index files are plain files, never links, in folders
    that are not links either, and no bigger than the YAML reader takes."""
    rel = path.relative_to(root).as_posix()
    if path.parent.is_symlink():
        return rel, None, [Problem(rel, "is in a linked folder; the index holds plain files")]
    raw, why = read_plain(str(path))
    return rel, raw, [] if raw is not None else [Problem(rel, why)]


def read_plain(path: str) -> tuple[bytes | None, str]:
    """(bytes, "") of a plain file no bigger than the YAML reader takes, else (None, why not)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError as e:
        if e.errno == errno.ELOOP:  # O_NOFOLLOW met a link
            return None, "is a symbolic link; the index holds plain files"
        return None, f"cannot be read ({e.strerror})"
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None, "is not a plain file"
        # Ask for the size fstat gives (and a byte more), then read on to the end or the limit: os.read
        # allocates what it is asked for, and asking for the 4 MiB limit made reading 10,000 files 3x slower.
        chunks, size, want = [], 0, info.st_size + 1
        while size <= yamlio.MAX_BYTES and (data := os.read(fd, min(want, yamlio.MAX_BYTES + 1 - size))):
            chunks.append(data)
            size += len(data)
            want = 64 * 1024
        raw = b"".join(chunks)
    except OSError as e:
        return None, f"cannot be read ({e.strerror})"
    finally:
        os.close(fd)
    if len(raw) > yamlio.MAX_BYTES:
        return None, f"is over the {yamlio.MAX_BYTES:,}-byte limit"
    return raw, ""


def check_file(path: Path, root: Path, *, canonical: bool = True) -> tuple[ModelEntry | None, list[Problem]]:
    rel, raw, problems = read_file(path, root)
    return (None, problems) if raw is None else check_file_bytes(raw, rel, canonical=canonical)


def check_file_bytes(raw: bytes, rel: str, *, canonical: bool = False) -> tuple[ModelEntry | None, list[Problem]]:
    """The strict check of one file's bytes (`checks.check_text`)."""
    try:
        return check_text(raw.decode("utf-8"), rel, canonical=canonical)
    except UnicodeDecodeError:
        return None, [Problem(rel, "is not UTF-8 text")]


def read_entry(path: Path, root: Path) -> ModelEntry:
    """One file, parsed and fully validated (canonical format included)."""
    entry, problems = check_file(path, root)
    if problems:
        raise IndexValidationError(problems)
    return entry


@dataclass
class Index:
    """All models of an index by Hub id (case-insensitive), each validated."""

    root: Path
    entries: dict[str, ModelEntry] = field(default_factory=dict)
    """lower-cased model id -> its entry, in the order of the files (sorted paths)."""

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[ModelEntry]:
        return iter(self.entries.values())

    def models(self) -> list[str]:
        return [entry.model for entry in self.entries.values()]

    def get(self, model_id: str) -> ModelEntry | None:
        return self.entries.get(model_id.lower())

    def lookup(self, model_id: str, revision: str | None = None) -> list[Record]:
        entry = self.get(model_id)
        return [] if entry is None else entry.for_revision(revision)


SAFE_ASCII = bytes(range(0x20, 0x7F)) + b"\t\n"
ESCAPE = re.compile(r"\\[0abvfeN_LPxuU]")  # a double-quoted escape that can make a control character


def read_entry_fast(raw: bytes) -> ModelEntry | None:
    """The file's entry by the fast path, or None where only the strict reader may judge it: characters
    that need the strict check, a possible inf or NaN, or anything the fast reader or the model refuses."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    # Characters the strict check refuses (scanned only when there is more than printable ASCII), and
    # escapes that could make them.
    if (raw.translate(None, SAFE_ASCII) and UNSAFE_CHARACTERS.search(text)) or ("\\" in text and ESCAPE.search(text)):
        return None
    lowered = text.lower()
    if ".inf" in lowered or ".nan" in lowered:  # YAML 1.2 reads .inf and .NaN as floats
        return None
    if yamlio.flow_depth(text) > yamlio.MAX_FLOW_DEPTH:
        return None  # the Rust reader crashes on brackets nested thousands deep
    try:
        return entry_from_dict(turboyaml.load(text, strict=True, yaml_1_1_bools=True))
    except (turboyaml.TurboYamlError, DataError):
        return None


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection for a while: reading makes millions of objects and no cycles, and
    each of the collector's passes would walk all of them again."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def load_files(root: Path, files: list[Path]) -> tuple[dict[str, ModelEntry], list[Problem]]:
    """Read and check index files (those `scan` listed, folders checked): {path relative to the root:
    entry} for the files without problems, and the problems of the others."""
    entries, problems = {}, []
    latest = clock.now() + timedelta(days=1)  # the last acceptable date, read once (rules date-check each record)
    with gc_paused():
        for path in files:
            rel = f"{path.parent.name}/{path.name}"  # scan lists <org>/<name>.yaml
            raw, why = read_plain(f"{root}/{rel}")
            entry = read_entry_fast(raw) if raw is not None and len(raw) <= FAST_BYTES else None
            if entry is not None:
                found = entry_problems(entry, rel, latest)
            elif raw is not None:
                entry, found = check_file_bytes(raw, rel)
            else:
                found = [Problem(rel, why)]
            problems += found
            if entry is not None and not found:
                entries[rel] = entry
    return entries, problems


def load_index(root: str | Path | None = None) -> Index:
    """Every model of the index, validated: each file, and the rules across files, as `index validate`
    checks them (except the canonical formatting of the text, which only reviewers of a diff need).

    Raises:
        IndexNotFoundError: no index directory; IndexValidationError: a file breaks the rules (all of its
        problems and those of every other broken file are listed).
    """
    root = resolve_root(root)
    files, problems = scan(root)
    entries, found = load_files(root, files)
    problems += found + check_index(entries)
    if problems:
        raise IndexValidationError(problems)
    return Index(root, {entry.model.lower(): entry for entry in entries.values()})


def lookup(model_id: str, revision: str | None = None, *, root: str | Path | None = None) -> list[Record]:
    """The records of one model (oldest first), for one revision if given; [] if the model is not indexed.

    Reads only that model's file. Hub ids are matched case-insensitively.
    """
    entry = lookup_entry(model_id, root=root)
    return [] if entry is None else entry.for_revision(revision)


def lookup_entry(model_id: str, *, root: str | Path | None = None) -> ModelEntry | None:
    """One model's entry (its id as the index spells it, and its records), or None; as `lookup` reads it."""
    root = resolve_root(root)
    path = find_file(root, check_model_id(model_id))
    return None if path is None else read_entry(path, root)


@contextlib.contextmanager
def writers_lock(root: Path, timeout: float) -> Iterator[None]:
    """The index's one-writer-at-a-time lock (a lock file in its root).

    Raises:
        AuditorError: another writer held it for `timeout` seconds.
    """
    from filelock import FileLock, Timeout

    lock = FileLock(root / LOCK_NAME, timeout=timeout)
    try:
        lock.acquire()
    except Timeout as e:
        raise AuditorError(f"another writer has held {root / LOCK_NAME} for {timeout:g} s") from e
    try:
        yield
    finally:
        lock.release()


def append_record(model_id: str, record: Record, *, root: str | Path, timeout: float = 600) -> Path | None:
    """Append `record` to the model's file (creating it), safely. Returns None if it was already there.

    Raises:
        IndexValidationError: the file would break the rules (nothing is written).
    """
    check_model_id(model_id)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with writers_lock(root, timeout):
        path = find_file(root, model_id) or root / f"{model_id}.yaml"
        entry = read_entry(path, root) if path.exists() else ModelEntry(model_id, [])
        if any(identity(r) == identity(record) for r in entry.records):
            return None
        # In date order: an audit that finished first but got the lock second still lands in place.
        records = sorted([*entry.records, record], key=lambda r: parse_date(r.date))
        text = render_entry(ModelEntry(entry.model, records))
        _, problems = check_text(text, path.relative_to(root).as_posix())
        if problems:
            raise IndexValidationError(problems)
        atomic_write(path, text)
        return path


def migrate_index(root: str | Path | None = None, *, timeout: float = 600) -> list[Path]:
    """Rewrite every file that is not the canonical text of its data at the current schema version (files
    of an older version, as reading migrates them in memory), under the writers' lock, each atomically.
    Every file is validated first. Returns the files rewritten.

    Raises:
        IndexValidationError: a file breaks the rules (nothing is written).
    """
    root = resolve_root(root)
    with writers_lock(root, timeout):
        # A valid index holds each model at <model>.yaml, so its entries name their own files.
        wanted = {root / f"{entry.model}.yaml": render_entry(entry) for entry in load_index(root)}
        stale = [path for path, text in wanted.items() if path.read_text(encoding="utf-8") != text]
        for path in stale:
            atomic_write(path, wanted[path])
        return stale

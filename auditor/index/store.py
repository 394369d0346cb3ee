"""Reading and writing the index on disk.

Reading (`load_index`, `lookup`) validates every file it returns (see `checks`). Parsing YAML strictly is
slow (libyaml alone needs about 0.25 ms for a 2 KB file), so the validated data of each file is kept in a
cache keyed by a hash of its path and bytes: a changed file misses the cache and is parsed and validated
again (in worker processes when many do); an unchanged one costs a hash. The cache is JSON Lines in the
user's cache directory; delete it at will. Typed entries are built from it only when a model is read.

Writing (`append_record`) is safe against crashes and concurrent writers: a lock file in the index root
serialises writers, the new text is validated before it is written, and the file is replaced atomically
(temp file, fsync, rename), so a reader or a crash never sees half a file. Records stay in date order
(nothing is ever overwritten), and one identical to a record already there (same revision, tool version
and settings) is not added twice.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import multiprocessing
import os
import stat
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__, yamlio
from ..errors import AuditorError, Failure, UsageError
from ..fileio import atomic_write
from ..ids import is_model_id
from .checks import IndexValidationError, Links, Problem, check_links, check_text, identity, parse_date
from .entries import ModelEntry, Record, entry_from_dict, entry_to_dict, render_entry

LOCK_NAME = ".superweight.lock"
CACHE_FORMAT = 3
ROOT_FILES = {"README.md"}
PARALLEL_FROM = 256  # files to parse before worker processes pay for their start


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


def read_file(path: Path, root: Path, *, folder_checked: bool = False) -> tuple[str, bytes | None, list[Problem]]:
    """(path relative to the root, bytes, problems): index files are plain files, never links, in folders
    that are not links either (`scan` has checked the folders of the files it lists), and no bigger than
    the YAML reader takes."""
    rel = path.relative_to(root).as_posix()
    if not folder_checked and path.parent.is_symlink():
        return rel, None, [Problem(rel, "is in a linked folder; the index holds plain files")]
    try:
        with open(path, "rb", opener=lambda p, flags: os.open(p, flags | os.O_NONBLOCK | os.O_NOFOLLOW)) as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return rel, None, [Problem(rel, "is not a plain file")]
            raw = f.read(yamlio.MAX_BYTES + 1)
    except OSError as e:
        if e.errno == errno.ELOOP:  # O_NOFOLLOW met a link
            return rel, None, [Problem(rel, "is a symbolic link; the index holds plain files")]
        return rel, None, [Problem(rel, f"cannot be read ({e.strerror})")]
    if len(raw) > yamlio.MAX_BYTES:
        return rel, None, [Problem(rel, f"is over the {yamlio.MAX_BYTES:,}-byte limit")]
    return rel, raw, []


def check_file(path: Path, root: Path, *, canonical: bool = True) -> tuple[ModelEntry | None, list[Problem]]:
    rel, raw, problems = read_file(path, root)
    if raw is None:
        return None, problems
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
    """All models of an index by Hub id (case-insensitive). Entries are built from validated data on first
    use, so loading many files is cheap and each model costs only when it is read."""

    root: Path
    payloads: dict[str, tuple[str, str]] = field(default_factory=dict)
    """lower-cased model id -> (model id, JSON of the file's validated data)."""
    built: dict[str, ModelEntry] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.payloads)

    def __iter__(self) -> Iterator[ModelEntry]:
        return (self.get(key) for key in self.payloads)

    def models(self) -> list[str]:
        return [model for model, _ in self.payloads.values()]

    def get(self, model_id: str) -> ModelEntry | None:
        key = model_id.lower()
        if key not in self.built and key in self.payloads:
            self.built[key] = entry_from_dict(json.loads(self.payloads[key][1]))
        return self.built.get(key)

    def lookup(self, model_id: str, revision: str | None = None) -> list[Record]:
        entry = self.get(model_id)
        return [] if entry is None else entry.for_revision(revision)


def cache_path(root: Path) -> Path:
    base = os.environ.get("SUPERWEIGHT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "superweight"
    )
    where = hashlib.blake2b(str(root.resolve()).encode(), digest_size=8).hexdigest()
    return Path(base) / f"index-{where}.jsonl"


CACHE_HEADER = json.dumps({"format": CACHE_FORMAT, "tool_version": __version__})


Parsed = tuple[str, str, str]
"""A validated file: (model id, JSON of its `Links`, JSON of its data)."""


def read_cache(path: Path) -> dict[str, Parsed]:
    """key -> `Parsed`: one line per file, `key TAB model TAB links TAB data`; the data is parsed only when used."""
    try:
        with path.open(encoding="utf-8") as f:
            if f.readline().rstrip("\n") != CACHE_HEADER:
                return {}
            return {
                key: (model, links, data) for key, model, links, data in (ln.rstrip("\n").split("\t", 3) for ln in f)
            }
    except (OSError, ValueError):
        return {}  # missing, unreadable or from another version: rebuild it


def parse_file(rel: str, raw: bytes) -> tuple[Parsed | None, list[tuple[str, str, int | None]]]:
    """Validate one file: (`Parsed`, []) or (None, problems). Runs in workers."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None, [(rel, "is not UTF-8 text", None)]
    entry, problems = check_text(text, rel, canonical=False)
    if problems:
        return None, [(p.path, p.message, p.record) for p in problems]
    return (entry.model, Links.of(entry).to_json(), json.dumps(entry_to_dict(entry), allow_nan=False)), []


def parse_all(files: list[tuple[str, bytes]]):
    """Parse files that missed the cache: in worker processes when there are many (YAML is the cost)."""
    workers = min(os.cpu_count() or 1, 8)
    if len(files) < PARALLEL_FROM or workers < 2:
        return [parse_file(rel, raw) for rel, raw in files]
    context = multiprocessing.get_context("spawn")  # no fork of a threaded parent
    try:
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            return list(pool.map(parse_file, *zip(*files, strict=True), chunksize=64))
    except (BrokenProcessPool, OSError):  # workers cannot start here (a main module read from stdin...)
        return [parse_file(rel, raw) for rel, raw in files]


def load_index(root: str | Path | None = None, *, cache: bool = True) -> Index:
    """Every model of the index, validated: each file, and the rules across files, as `index validate`
    checks them (except the canonical formatting of the text, which only reviewers of a diff need).

    Raises:
        IndexNotFoundError: no index directory; IndexValidationError: a file breaks the rules (all of its
        problems and those of every other broken file are listed).
    """
    root = resolve_root(root)
    cached = read_cache(cache_path(root)) if cache else {}
    fresh: dict[str, Parsed] = {}
    paths: dict[str, str] = {}  # key -> path relative to the root
    misses: list[tuple[str, bytes]] = []
    files, problems = scan(root)
    for path in files:
        rel, raw, found = read_file(path, root, folder_checked=True)
        if raw is None:
            problems += found
            continue
        key = hashlib.blake2b(rel.encode() + b"\0" + raw, digest_size=16).hexdigest()
        paths[key] = rel
        if key in cached:
            fresh[key] = cached[key]
        else:
            misses.append((key, raw))
    for (key, _), (parsed, found) in zip(misses, parse_all([(paths[k], raw) for k, raw in misses]), strict=True):
        if parsed is None:
            problems += [Problem(*p) for p in found]
        else:
            fresh[key] = parsed
    problems += check_links({paths[key]: Links.from_json(links) for key, (_, links, _) in fresh.items()})
    if problems:
        raise IndexValidationError(problems)
    if cache and fresh.keys() != cached.keys():
        lines = [CACHE_HEADER] + ["\t".join((key, *parsed)) for key, parsed in fresh.items()]
        with contextlib.suppress(OSError):  # a read-only home is no reason to fail a read
            atomic_write(cache_path(root), "\n".join(lines) + "\n")
    return Index(root, {model.lower(): (model, data) for model, _, data in fresh.values()})


def lookup(model_id: str, revision: str | None = None, *, root: str | Path | None = None) -> list[Record]:
    """The records of one model (oldest first), for one revision if given; [] if the model is not indexed.

    Reads only that model's file. Hub ids are matched case-insensitively.
    """
    root = resolve_root(root)
    path = find_file(root, check_model_id(model_id))
    return [] if path is None else read_entry(path, root).for_revision(revision)


def append_record(model_id: str, record: Record, *, root: str | Path, timeout: float = 600) -> Path | None:
    """Append `record` to the model's file (creating it), safely. Returns None if it was already there.

    Raises:
        IndexValidationError: the file would break the rules (nothing is written).
    """
    from filelock import FileLock, Timeout

    check_model_id(model_id)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(root / LOCK_NAME, timeout=timeout):
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
    except Timeout as e:
        raise AuditorError(f"another writer has held {root / LOCK_NAME} for {timeout:g} s") from e

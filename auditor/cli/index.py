"""`superweight index ...`: validate, look up, export and seed the index (no torch needed)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import clock
from ..errors import AuditorError, UsageError
from .common import emit_json, index_option


def cmd_validate(args: argparse.Namespace) -> int:
    """Check every file (or the files given), then the rules across files; list every problem."""
    from ..index import check_index, resolve_root
    from ..index.store import check_file, scan

    problems, records, files = [], 0, 0
    for target in args.paths or [resolve_root(args.index)]:
        if target.is_dir():
            root, (paths, found) = target, scan(target)
            problems += found
        elif target.is_file():
            target = target.absolute()  # its folder's folder is the root, even from inside it
            root, paths = target.parent.parent, [target]
        else:
            raise UsageError(f"{target}: no such file or directory")
        entries = {}
        for path in paths:
            files += 1
            entry, found = check_file(path, root)
            problems += found
            if entry is not None:
                entries[path.relative_to(root).as_posix()] = entry
                records += len(entry.records)
        if target.is_dir():
            problems += check_index(entries)
    for p in problems:
        print(p)
    if problems:
        print(f"superweight: {len(problems)} problem(s) in {files} file(s)", file=sys.stderr)
        return 1
    print(f"superweight: {files} file(s), {records} record(s): all valid", file=sys.stderr)
    return 0


def cmd_lookup(args: argparse.Namespace) -> int:
    from ..index.entries import record_to_dict
    from ..index.store import lookup_entry

    entry = lookup_entry(args.model, root=args.index)
    records = [] if entry is None else entry.for_revision(args.revision)
    if not records:
        at = f" at revision {args.revision}" if args.revision else ""
        raise AuditorError(f"{args.model}{at} is not in the index")
    if args.json:  # the id as the index spells it (ids are case-insensitive)
        sys.stdout.write(emit_json({"model": entry.model, "records": [record_to_dict(r) for r in records]}))
        return 0
    for r in records:
        head = f"{r.source} {r.date}" + (f" @ {r.revision}" if r.revision else "")
        if r.source == "measured":
            a = r.ablation
            head += f": {a.verdict}"
            if a.damage is not None:
                head += f" (zeroed x{a.damage:,.1f} perplexity, control x{a.control_damage:,.2f})"
        elif r.source == "reported":
            head += f": {r.citation}"
        elif r.source == "screened":
            head += f": a screen against {r.base.model} @ {r.base.revision[:12]}: {r.outcome}"
        else:
            head += f": same weights as {r.same_weights_as.model} @ {r.same_weights_as.revision}"
        print(head)
        for w in getattr(r, "super_weights", []):
            expert = f" expert {w.expert}" if w.expert is not None else ""
            value = f"  value {w.value:.4g}" if w.value is not None else ""
            where = f"  {w.tensor}[{', '.join(map(str, w.index))}]" if w.tensor and w.index else ""
            print(f"  {w.ref().label}{expert}{value}{where}")
        for f in getattr(r, "files", []):  # a screen: each file's value at each super weight
            for w in f.weights:
                stored = f"{w.value:.4g}" if w.value is not None else "not finite"
                print(f"  {f.file}: layer {w.layer} [{w.row}, {w.col}] {w.base:.4g} -> {stored}: {w.state}")
        if rejected := getattr(r, "rejected_candidates", []):
            print(f"  rejected candidates: {', '.join(w.ref().label for w in rejected)}")
        if getattr(r, "note", None):
            print(f"  note: {r.note}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..fileio import atomic_write
    from ..index import export, load_index

    text = export(load_index(args.index), args.format)
    if args.out:
        atomic_write(args.out, text)
        print(f"superweight: wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_seed(args: argparse.Namespace) -> int:
    """Add the published coordinates as reported records; a second run adds nothing."""
    from ..index import append_record
    from ..index.published import PUBLISHED, reported_record
    from ..index.store import index_path

    today = clock.today()
    added = 0
    for p in PUBLISHED:
        path = append_record(p.model, reported_record(p, today), root=index_path(args.index))
        if path:
            added += 1
            print(f"added {path}")
    print(f"superweight: {added} reported record(s) added, {len(PUBLISHED) - added} already there", file=sys.stderr)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    """Rewrite the files of older schema versions in the current one."""
    from ..index import SCHEMA_VERSION
    from ..index.store import migrate_index

    for path in (changed := migrate_index(args.index)):
        print(f"migrated {path}")
    print(f"superweight: {len(changed)} file(s) rewritten at schema version {SCHEMA_VERSION}", file=sys.stderr)
    return 0


def register(sub) -> None:
    group = sub.add_parser("index", help="validate, look up and export the index", description=__doc__)
    commands = group.add_subparsers(dest="index_command", required=True, metavar="COMMAND")

    p = commands.add_parser("validate", help="check index files against the schema and its rules")
    p.add_argument("paths", nargs="*", type=Path, metavar="PATH", help="files or index directories (default: --index)")
    index_option(p)
    p.set_defaults(func=cmd_validate)

    p = commands.add_parser("lookup", help="one model's records (case-insensitive Hub id)")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--revision", help="only records of this commit sha")
    p.add_argument("--json", action="store_true", help="print JSON (the index file's shape)")
    index_option(p)
    p.set_defaults(func=cmd_lookup)

    p = commands.add_parser("export", help="the whole index as one JSON, JSON Lines or CSV file")
    p.add_argument("--format", choices=["json", "jsonl", "csv"], default="json")
    p.add_argument("--out", type=Path, metavar="FILE", help="write here instead of stdout")
    index_option(p)
    p.set_defaults(func=cmd_export)

    p = commands.add_parser("migrate", help="rewrite files of older schema versions in the current one")
    index_option(p)
    p.set_defaults(func=cmd_migrate)

    p = commands.add_parser("seed", help="add the published super weights as reported records")
    index_option(p)
    p.set_defaults(func=cmd_seed)

"""`superweight check-gguf` and `screen`: a base model's super weights in its quants and fine-tunes, by
range reads of a few kilobytes (`auditor.derivatives`)."""

from __future__ import annotations

import argparse
import glob
import re
import sys

from ..errors import UsageError
from ..ids import is_model_id
from ..models import to_full_data
from .common import emit_json, given_index, optional_index_option, quiet_libraries

SCREEN_INDEX_HELP = (
    "the index the base model is read from, and, given, the screen is recorded in (Hub repos only); "
    "--index alone: $SUPERWEIGHT_INDEX, else ./index"
)
HUB_URL = re.compile(r"https://huggingface\.co/([\w.-]+/[\w.-]+)/?$")


def gguf_targets(target: str, revision: str | None) -> list[tuple[list[tuple[str, str | None]], str | None]]:
    """The GGUF files meant, as checks to make: for each, its (path or repo, filename) pairs (a split
    model's shards together, first shard first) and the revision to read. TARGET is a local file, REPO:FILE,
    or every .gguf of REPO (all read at the commit they were listed at)."""
    from pathlib import Path

    from .. import hub
    from ..derivatives import SPLIT, gguf_groups

    path = Path(target)
    if path.exists():
        m = SPLIT.fullmatch(path.name)
        if m is None:
            return [([(target, None)], None)]
        shards = [p.name for p in path.parent.glob(f"{glob.escape(m['stem'])}-*-of-{m['count']}.gguf")]
        [group] = [g for g in gguf_groups(shards) if path.name in g]
        return [([(str(path.parent / name), None) for name in group], None)]
    repo, _, filename = target.partition(":")
    if not is_model_id(repo):
        raise UsageError(f"{target}: no such file, and not a Hub repo id (org/name[:file.gguf])")
    if filename and not SPLIT.fullmatch(filename):
        return [([(repo, filename)], revision)]
    info = hub.model_info(repo, revision=revision)
    groups = gguf_groups(s.rfilename for s in info.siblings or [] if s.rfilename.endswith(".gguf"))
    if filename:  # one shard named: its split model
        groups = [g for g in groups if filename in g]
    if not groups:
        raise UsageError(f"{target}: no such .gguf file" if filename else f"{repo} has no .gguf file")
    return [([(repo, name) for name in group], info.sha) for group in groups]


def base_of_gguf(header) -> str:
    """The base model a GGUF file names in its metadata (`general.base_model.0.repo_url`), if it names a Hub
    model (the file is untrusted: `../x` or a path is no name of a base)."""
    url = header.metadata.get("general.base_model.0.repo_url")
    m = HUB_URL.match(url) if isinstance(url, str) else None
    if m is None or not is_model_id(m.group(1)):
        raise UsageError(f"{header.name} names no base model on the Hub in its metadata: give one with --base")
    return m.group(1)


def index_root(args: argparse.Namespace):
    """Where `--index` (alone, or absent: the default index) reads base models and writes screens."""
    from ..index.store import index_path

    return given_index(args.index) or index_path()


def record(args: argparse.Namespace, repo: str | None, revision: str | None, base, files) -> None:
    """With --index, the screen as a record of the derivative's index file (Hub repos only)."""
    if args.index is None:
        return
    if repo is None or revision is None:
        raise UsageError("--index takes Hub repos only (org/name): a local file has no Hub id or commit to record")
    from ..derivatives import record_of
    from ..index import append_record

    path = append_record(repo, record_of(revision, base, files), root=index_root(args))
    print(f"{'wrote' if path else 'already recorded in'} {path or repo}", file=sys.stderr)


def cmd_check_gguf(args: argparse.Namespace) -> int:
    from ..derivatives import base_from, check_gguf, gguf_file, gguf_header, open_file

    quiet_libraries(progress=False)
    results, bases, files, revision = [], {}, [], None
    for group, at in gguf_targets(args.target, args.revision):
        reader, *shards = [open_file(target, filename, revision=at) for target, filename in group]
        header = gguf_header(reader)  # once: it also names the base model when --base does not
        name = args.base or base_of_gguf(header)
        if name not in bases:  # a name from the file's metadata is looked up in the index only
            bases[name] = base_from(name, index_root=index_root(args), local=args.base is not None)
        results.append(check_gguf(reader, bases[name], header, shards=shards))
        target, filename = group[0]
        files.append(gguf_file(results[-1], filename or target))
        revision = getattr(reader, "revision", None)
    if len(bases) > 1 and args.index is not None:
        raise UsageError(f"the files name {len(bases)} base models: give one with --base to record them")
    repo = args.target.partition(":")[0] if revision else None
    record(args, repo, revision, next(iter(bases.values())), files)
    if args.json:
        sys.stdout.write(emit_json([to_full_data(r) for r in results]))
        return 0
    for r in results:
        split = f", {r.shards} files" if r.shards > 1 else ""
        print(f"{r.file} ({r.size:,} bytes{split}), against {r.base}: read {r.bytes_read:,} bytes in {r.reads} reads")
        print(f"  (the header is {r.header_bytes:,} bytes; the rest is one row of blocks per super weight)")
        for w in r.weights:
            s = w.stored
            others = ", ".join(f"[{c}] {v:.4g}" for c, v in s.row_top)
            print(
                f"  layer {w.layer} [{s.row}, {s.col}] {s.qtype}: {s.base:.6g} -> {s.stored:.6g} "
                f"({s.rel_error:.1%} off): {w.state.replace('_', ' ')}; the row's largest others: {others}"
            )
    return 0


def cmd_screen(args: argparse.Namespace) -> int:
    from ..derivatives import base_from, safetensors_files, screen

    quiet_libraries(progress=False)
    base = base_from(args.base, index_root=index_root(args))
    result = screen(args.model, base, revision=args.revision)
    record(args, args.model if result.revision else None, result.revision, base, safetensors_files(result))
    if args.json:
        sys.stdout.write(emit_json({**to_full_data(result), "verdict": result.verdict}))
        return 0
    print(f"{result.model} against {result.base}: read {result.bytes_read:,} bytes in {result.reads} reads")
    for w in result.weights:
        print(
            f"  layer {w.layer} [{w.row}, {w.col}] ({w.file}): {w.base:.6g} -> {w.value:.6g} "
            f"({w.change:+.2%}): {w.state}"
        )
    within = "within 1 %" if result.verdict == "inherited" else "not within 1 %"
    print(f"screened, not audited: the base model's super weights are {within} of its values ({result.verdict})")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "check-gguf",
        help="read a GGUF quant at its base model's super weights: kept, clipped or zeroed (range reads)",
        description="For each super weight of the base model, read only the GGUF header and the blocks of its "
        "row, dequantize them, and compare the stored value with the base model's.",
    )
    p.add_argument("target", metavar="FILE_OR_REPO[:FILENAME]", help="a local .gguf, REPO:FILE, or every .gguf of REPO")
    p.add_argument(
        "--base",
        metavar="MODEL",
        help="the base model: audited in the index, or a local checkpoint (default: the file's base_model)",
    )
    p.add_argument("--revision", help="the Hub repo's branch, tag or commit")
    p.add_argument("--json", action="store_true", help="print a JSON list, one object per file")
    optional_index_option(p, SCREEN_INDEX_HELP)
    p.set_defaults(func=cmd_check_gguf)

    p = sub.add_parser(
        "screen",
        help="read a fine-tune at its base model's super weights: inherited or changed (range reads)",
        description="Read only the safetensors headers and a few bytes at each super weight of the base "
        "model: a screen, not an audit.",
    )
    p.add_argument("model", metavar="MODEL", help="a checkpoint directory or a Hub repo id")
    p.add_argument("--base", metavar="MODEL", required=True, help="audited in the index, or a local checkpoint")
    p.add_argument("--revision", help="the Hub repo's branch, tag or commit")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    optional_index_option(p, SCREEN_INDEX_HELP)
    p.set_defaults(func=cmd_screen)

"""`superweight discover`, `request validate` and `run`: the scheduled auditor."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import msgspec

from ..models import to_data
from .common import config_of, emit_json, positive, quiet_libraries, repo_options
from .publish import add_github_options


def date(text: str) -> str:
    """An argparse type: a calendar date, YYYY-MM-DD."""
    import datetime

    try:
        datetime.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None
    return text


def duration(text: str) -> str:
    """An argparse type: a duration such as 90s, 45m, 6h or 1d."""
    from ..errors import AuditorError
    from ..scheduler.config import parse_duration

    try:
        if parse_duration(text) <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} is not a positive duration")
    except AuditorError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def cmd_discover(args: argparse.Namespace) -> int:
    from ..scheduler.discover import discover, load_cursor, save_cursor
    from ..scheduler.lock import repo_lock
    from ..scheduler.queue import load_queue, save_queue
    from ..scheduler.runner import RepoPaths

    quiet_libraries(progress=False)
    config = config_of(args)
    paths = RepoPaths.of(args.repo, config)
    with repo_lock(args.repo):  # a run saving the queue meanwhile would otherwise lose what one of us wrote
        queue, cursor = load_queue(paths.queue), load_cursor(paths.cursor)
        found = discover(config, queue=queue, cursor=cursor, index_root=paths.index, limit=args.limit, since=args.since)
        queue.prune(config.run.keep_skipped)
        save_queue(paths.queue, queue)
        save_cursor(paths.cursor, cursor)
    if args.json:
        sys.stdout.write(
            emit_json(
                {
                    "examined": found.examined,
                    "queued": to_data(found.queued),
                    "skipped": to_data(found.skipped),
                    "already_audited": found.already_audited,
                    "same_weights": [
                        {"model": m, "revision": r, "same_weights_as": to_data(ref)} for m, r, ref in found.same_weights
                    ],
                }
            )
        )
        return 0
    print(f"{found.examined} new model(s) examined")
    for item in found.queued:
        print(f"  queued   {item.model} @ {item.revision}")
    for m, r, ref in found.same_weights:
        print(f"  same     {m} @ {r}: identical weights to {ref.model} @ {ref.revision} (recorded)")
    for item in found.skipped:
        print(f"  skipped  {item.model} ({item.code}): {item.message}")
    for model in found.already_audited:
        print(f"  audited  {model} (already in the index at this commit)")
    return 0


def cmd_request_validate(args: argparse.Namespace) -> int:
    from ..scheduler.eligibility import Ineligible
    from ..scheduler.requestfiles import check_request, read_request, request_files

    quiet_libraries(progress=False)
    config = config_of(args)
    files = args.files or request_files(args.repo / "requests")
    results, bad = [], 0
    for path in files:
        try:
            candidate = check_request(read_request(path), config, index_root=args.repo / "index")
            results.append({"file": str(path), "ok": True, "model": candidate.model, "revision": candidate.revision})
        except Ineligible as e:
            bad += 1
            results.append({"file": str(path), "ok": False, "code": e.code, "message": str(e)})
    if args.json:
        sys.stdout.write(emit_json(results))
    else:
        for r in results:
            print(
                f"{r['file']}: ok: {r['model']} pinned to {r['revision']}"
                if r["ok"]
                else f"{r['file']}: {r['code']}: {r['message']}"
            )
    print(f"superweight: {len(files) - bad} of {len(files)} request(s) valid", file=sys.stderr)
    return 1 if bad else 0


def cmd_run(args: argparse.Namespace) -> int:
    from ..scheduler.runner import run
    from ..scheduler.summary import render

    quiet_libraries(progress=False)
    config = config_of(args)
    if args.no_quantize_impact:
        config = msgspec.structs.replace(config, audit=msgspec.structs.replace(config.audit, quantize_impact="off"))
    if args.executor or args.ray_address:
        executor = args.executor or ("ray" if args.ray_address else config.run.executor)
        address = args.ray_address or config.run.ray_address
        config = msgspec.structs.replace(
            config, run=msgspec.structs.replace(config.run, executor=executor, ray_address=address)
        )
    if args.publish:
        from .publish import sync_repo

        sync_repo(args, config)  # requests merged on GitHub since, and records added there
    report = run(
        args.repo,
        config,
        max_models=args.max_models,
        time_budget=args.time_budget,
        discover_models=not args.no_discover,
    )
    sys.stdout.write(render(report))
    if args.publish:
        from .publish import publish_run

        return publish_run(args, config, report.run_id)
    return 0


def register(sub) -> None:
    common = repo_options()

    p = sub.add_parser("discover", parents=[common], help="find new open checkpoints on the Hub and queue them")
    p.add_argument("--since", metavar="YYYY-MM-DD", type=date, help="do not look at models created before this date")
    p.add_argument("--limit", type=positive(int), help="models to examine (default: the config's discover.limit)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_discover)

    group = sub.add_parser("request", help="audit requests (requests/*.yaml)")
    commands = group.add_subparsers(dest="request_command", required=True, metavar="COMMAND")
    p = commands.add_parser("validate", parents=[common], help="check request files as the queue would")
    p.add_argument("files", nargs="*", type=Path, metavar="FILE", help="default: REPO/requests/*.yaml")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_request_validate)

    p = sub.add_parser("run", parents=[common], help="the scheduled job: requests, discovery, audits")
    p.add_argument("--max-models", type=positive(int), help="audits to run (default: the config's run.max_models)")
    p.add_argument("--time-budget", metavar="DURATION", type=duration, help="no audit starts after this (e.g. 6h)")
    p.add_argument("--no-discover", action="store_true", help="only requests and the existing queue")
    p.add_argument(
        "--executor",
        choices=["local", "ray"],
        help="where audits run: one at a time here (local), or as tasks of a Ray cluster (default: run.executor)",
    )
    p.add_argument("--ray-address", metavar="ADDRESS", help="the Ray cluster to join (auto, ray://head:10001)")
    p.add_argument(
        "--no-quantize-impact",
        action="store_true",
        help="skip the quantization figures (measured by default when audits run on a GPU: audit.quantize_impact)",
    )
    p.add_argument("--publish", action="store_true", help="then publish the results to GitHub (superweight publish)")
    add_github_options(p)
    p.set_defaults(func=cmd_run)

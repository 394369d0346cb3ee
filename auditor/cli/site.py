"""`superweight site build` and `site check`: the static site that people read."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import UsageError
from .common import index_option

DEFAULT_QUEUE = Path("queue/queue.yaml")


def cmd_build(args: argparse.Namespace) -> int:
    from ..web.build import build_site

    if not args.base_url.startswith(("/", "http://", "https://")):
        raise UsageError(
            f"--base-url {args.base_url}: give a path from the server's root (/repo/) or a URL (https://...)"
        )
    if args.queue is not None and not args.queue.is_file():  # the default may be missing; a file named must not
        raise UsageError(f"--queue {args.queue}: no such file")
    result = build_site(
        args.out,
        base_url=args.base_url,
        index_root=args.index,
        queue_file=args.queue or DEFAULT_QUEUE,
        site_dir=args.site_dir,
        repo_url=args.repo_url,
    )
    print(
        f"superweight: built {result.models} model pages, {result.files} files in {result.out} "
        f"({result.seconds:.1f} s)",
        file=sys.stderr,
    )
    if not result.feeds:
        print("superweight: no feed.xml or sitemap.xml: they need an absolute --base-url", file=sys.stderr)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from ..web.check import check_site

    problems = check_site(args.directory)
    for p in problems:
        print(p)
    print(f"superweight: {len(problems)} problem(s) in {args.directory}", file=sys.stderr)
    return 1 if problems else 0


def register(sub) -> None:
    group = sub.add_parser("site", help="build and check the static site", description=__doc__)
    commands = group.add_subparsers(dest="site_command", required=True, metavar="COMMAND")
    p = commands.add_parser("build", help="render the site from the index (never committed)")
    p.add_argument("--out", type=Path, default=Path("_site"), help="output directory (default: _site)")
    p.add_argument(
        "--base-url",
        default="/",
        help="where the site is served, e.g. https://org.github.io/repo/ (default: /): the feed and sitemap "
        "need it absolute, and 404.html links from its path; every other link is relative",
    )
    index_option(p)
    p.add_argument("--queue", type=Path, help=f"the queue file (default: {DEFAULT_QUEUE}, if there is one)")
    p.add_argument("--site-dir", type=Path, help="templates/ and assets/ to use instead of the built-in ones")
    p.add_argument("--repo-url", help="the repository on GitHub, for links to source files")
    p.set_defaults(func=cmd_build)
    p = commands.add_parser("check", help="check that every link and asset of a built site resolves")
    p.add_argument("directory", type=Path, nargs="?", default=Path("_site"), metavar="DIR", help="(default: _site)")
    p.set_defaults(func=cmd_check)

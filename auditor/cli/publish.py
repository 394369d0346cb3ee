"""`superweight publish`, and `superweight run --publish`: results to GitHub through its REST API."""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import UsageError
from .common import config_of, repo_options


def client(args: argparse.Namespace, config):
    """A GitHub client, or None when there is no token (then nothing remote may change)."""
    from ..github import GitHub, token_from_env

    token = token_from_env()
    if token is None:
        return None
    repo = args.github_repo or config.github.repo or os.environ.get("GITHUB_REPOSITORY")
    if not repo:
        raise UsageError("which GitHub repository? pass --github-repo OWNER/NAME or set github.repo in auditor.yaml")
    github = config.github
    return GitHub(repo, token, api_url=github.api_url, write_interval=github.write_interval, login=github.bot_login)


def publish_run(args: argparse.Namespace, config, run_id: str | None) -> int:
    from ..publish import plan_offline, publish

    gh = client(args, config)
    if gh is None:
        sys.stdout.write(plan_offline(args.repo, run_id=run_id, work_dir=config.run.work_dir))
        return 0
    result = publish(
        args.repo,
        gh,
        run_id=run_id,
        base=config.github.base,
        site_url=config.github.site_url,
        work_dir=config.run.work_dir,
    )
    if result.url and result.committed:
        counts = f"{len(result.changed)} changed, {len(result.deleted)} deleted"
        print(f"published run {result.run_id}: {result.url} ({counts})")
    elif result.url:
        print(f"run {result.run_id}: nothing new; {result.url} already holds every change")
    else:
        print(f"run {result.run_id}: nothing new to commit")
    for c in result.comments:
        print(f"  request status on {c}")
    for n in result.closed:
        print(f"  closed #{n} (superseded)")
    for failure in result.failed:
        print(f"superweight: no status comment: {failure}", file=sys.stderr)
    return 0


def sync_repo(args: argparse.Namespace, config) -> None:
    """Catch the runner's clone up with GitHub (no-op without a token)."""
    from ..publish import sync

    gh = client(args, config)
    if gh is None:
        print("superweight: no GitHub token: not syncing with GitHub", file=sys.stderr)
        return
    done = sync(args.repo, gh, base=config.github.base, work_dir=config.run.work_dir)
    print(
        f"superweight: synced with {gh.repo}: {len(done.merged)} index file(s) merged, "
        f"{len(done.requests)} new request(s)",
        file=sys.stderr,
    )


def cmd_sync(args: argparse.Namespace) -> int:
    sync_repo(args, config_of(args))
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    return publish_run(args, config_of(args), args.run)


def add_github_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--github-repo", metavar="OWNER/NAME", help="default: github.repo in auditor.yaml, or $GITHUB_REPOSITORY"
    )


def register(sub) -> None:
    p = sub.add_parser(
        "publish",
        parents=[repo_options()],
        help="publish a run's results to GitHub (a pull request, request status comments)",
        description="Commit a run's changes through GitHub's REST API, open or update its pull request and "
        "comment on request pull requests. The token comes from SUPERWEIGHT_GITHUB_TOKEN or GITHUB_TOKEN; "
        "without one, nothing remote changes and the plan is printed.",
    )
    p.add_argument("--run", metavar="RUN_ID", help="the run to publish (default: the latest)")
    add_github_options(p)
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser(
        "sync",
        parents=[repo_options()],
        help="catch the runner's clone up with GitHub: new index records and requests (no git pull)",
        description="Merge index records added on GitHub into the local index (records are append-only) and "
        "fetch request files merged there since, through the REST API. `run --publish` does this first.",
    )
    add_github_options(p)
    p.set_defaults(func=cmd_sync)

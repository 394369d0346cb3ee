"""Helpers shared by the command modules."""

from __future__ import annotations

import argparse
import json
import logging
import warnings
from pathlib import Path
from typing import Any


def directory(text: str) -> Path:
    """An argparse type: a directory path, which may not exist yet but is not empty and not a file."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path: name a directory")
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is not a directory")
    return path


def output_file(text: str) -> Path:
    """An argparse type: a file to write, checked before any work is done (its folder may not exist yet)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path: name a file")
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory")
    existing = next(p for p in path.absolute().parents if p.exists())
    if not existing.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: {existing} is not a directory")
    return path


def optional_index_option(p: argparse.ArgumentParser, help: str) -> None:
    """--index [DIR], for the commands that may write to the index: DIR, or alone, the default index."""
    p.add_argument("--index", metavar="DIR", nargs="?", const=True, type=directory, help=help)


def given_index(value: Path | bool | None) -> Path | None:
    """What `optional_index_option` parsed: None when absent, the default index for --index alone, else DIR."""
    if value is True:
        from ..index.store import index_path

        return index_path()
    return value or None


def index_option(p: argparse.ArgumentParser) -> None:
    """--index DIR, for the commands that read or write the index; the default honours $SUPERWEIGHT_INDEX."""
    p.add_argument(
        "--index", type=directory, metavar="DIR", help="the index directory (default: $SUPERWEIGHT_INDEX, else index/)"
    )


def emit_json(data: Any) -> str:
    return json.dumps(data, indent=2, allow_nan=False) + "\n"


def quiet_libraries(progress: bool) -> None:
    """Keep stdout for our output and stderr for progress bars and our own messages."""
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING, format="superweight: %(message)s")
    from huggingface_hub.utils import disable_progress_bars
    from huggingface_hub.utils import logging as hflog
    from transformers.utils import logging as tlog

    hflog.disable_propagation()  # it has its own handler: its retries' warnings were printed twice
    tlog.set_verbosity_error()
    if not progress:
        tlog.disable_progress_bar()
        disable_progress_bars()


def repo_options() -> argparse.ArgumentParser:
    """A parent parser for the commands that work on the index repository and its auditor.yaml."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--repo", type=Path, default=Path("."), help="the index repository (default: .)")
    p.add_argument("--config", type=Path, help="the configuration file (default: REPO/auditor.yaml)")
    return p


def config_of(args: argparse.Namespace):
    """The configuration that --config or --repo names."""
    from ..scheduler.config import load_config

    return load_config(args.config, repo=args.repo)


def positive(kind: type, minimum: float = 0):
    """An argparse type: a number of `kind` no smaller than `minimum`."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if not value >= minimum:  # also refuses NaN
            raise argparse.ArgumentTypeError(f"{text!r} must be at least {minimum}")
        return value

    return parse

"""The `superweight` command line: a thin layer over the library.

Each command parses options, calls library functions and prints their results; one module per group.
Errors the user can fix are `AuditorError`s: one line on stderr, exit status 1. Anything else is a bug,
reported on one line too. SUPERWEIGHT_DEBUG=1 shows the traceback of either, with its causes.
"""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from ..errors import AuditorError, debugging, first_line
from . import derivatives, index, models, publish, scheduler, site

EXIT_ERROR = 1
EXIT_USAGE = 2  # a bad option, as argparse (and most tools) exit
EXIT_INTERRUPTED = 130
# The top-level modules of the `audit` extra (pyproject.toml): the base install reads the index without them.
AUDIT_MODULES = {
    "accelerate",
    "gguf",
    "huggingface_hub",
    "numpy",
    "pyarrow",
    "safetensors",
    "tokenizers",
    "torch",
    "tqdm",
    "transformers",
}


class Parser(argparse.ArgumentParser):
    """argparse, with a bad option reported as every other failure is: one line (not the whole usage)."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="superweight",
        description="Find super weights in open language models, confirm them by ablation, and keep an index.",
    )
    parser.add_argument("--version", action="version", version=f"superweight {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (models, derivatives, index, scheduler, publish, site):
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except AuditorError as e:
        if debugging():
            raise  # the traceback, with the cause each error keeps (`raise ... from e`)
        print(f"superweight: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as e:  # the file system or the network said no: the user's to fix, not a bug
        if debugging():
            raise
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        print(f"superweight: error: {where}{e.strerror or first_line(e, 300)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("superweight: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:
        missing = (getattr(e, "name", None) or "").split(".")[0] if isinstance(e, ModuleNotFoundError) else ""
        if missing in AUDIT_MODULES:
            print(
                f"superweight: error: this command needs the audit dependencies ({missing} is not installed): "
                "pip install 'superweight-index[audit]' (torch first, as the README says)",
                file=sys.stderr,
            )
            return EXIT_ERROR
        if debugging():
            raise
        print(
            f"superweight: internal error: {type(e).__name__}: {first_line(e, 300)} "
            "(SUPERWEIGHT_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return EXIT_ERROR

"""The `superweight` command line: a thin layer over the library.

Each command parses options, calls one library function and prints its result. Errors the user can fix are
`AuditorError`s: one line on stderr, exit status 1. Anything else is a bug, reported on one line too
(SUPERWEIGHT_DEBUG=1 shows the traceback).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from . import __version__
from .errors import AuditorError

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def emit_json(data: Any) -> str:
    return json.dumps(data, indent=2, allow_nan=False) + "\n"


def quiet_libraries(progress: bool) -> None:
    """Keep stdout for our output and stderr for progress bars and our own messages."""
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING, format="superweight: %(message)s")
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as tlog

    tlog.set_verbosity_error()
    if not progress:
        tlog.disable_progress_bar()
        disable_progress_bars()


# -- option groups --------------------------------------------------------------------------------


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


def add_model_options(p: argparse.ArgumentParser) -> None:
    from .detect import (
        DEFAULT_MAX_SUPER_WEIGHTS,
        DEFAULT_MIN_INPUT_RATIO,
        DEFAULT_MIN_OUTPUT_RATIO,
        DEFAULT_MIN_SHARE,
        DEFAULT_PROMPT,
    )

    p.add_argument(
        "model", metavar="MODEL", help="Hub repo id (org/name), checkpoint directory, or .gguf file"
    )
    p.add_argument("--revision", help="Hub branch, tag or commit (the commit sha loaded is recorded)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda (default: auto)")
    p.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "float16", "bfloat16"],
        help="auto keeps the checkpoint's dtype on GPU and uses float32 on CPU (default: auto)",
    )
    g = p.add_argument_group("detection")
    g.add_argument(
        "--prompt", default=DEFAULT_PROMPT, help="text of the detection pass (default: the paper's)"
    )
    g.add_argument(
        "--min-output-ratio",
        type=positive(float),
        default=DEFAULT_MIN_OUTPUT_RATIO,
        help="output spike over the layer's median channel maximum (default: %(default)g)",
    )
    g.add_argument(
        "--min-input-ratio",
        type=positive(float),
        default=DEFAULT_MIN_INPUT_RATIO,
        help="input spike over the layer's median channel maximum (default: %(default)g)",
    )
    g.add_argument(
        "--min-share",
        type=positive(float),
        default=DEFAULT_MIN_SHARE,
        help="fraction of the output spike one weight must carry (default: %(default)g)",
    )
    g.add_argument(
        "--max-super-weights",
        type=positive(int),
        default=DEFAULT_MAX_SUPER_WEIGHTS,
        help="stop the iterative search after this many (default: %(default)d)",
    )
    g.add_argument(
        "--module-pattern",
        metavar="REGEX",
        help="regex for the down projections' module names, for unknown layouts",
    )
    o = p.add_argument_group("output")
    o.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    o.add_argument("--output", metavar="FILE", type=Path, help="also write the JSON result to FILE")
    o.add_argument("--quiet", action="store_true", help="no progress bars")


def add_ablation_options(p: argparse.ArgumentParser) -> None:
    from .ablation import DEFAULT_MIN_DAMAGE, DEFAULT_MIN_MARGIN
    from .evaltext import DEFAULT_MAX_TOKENS, DEFAULT_SEQ_LEN

    g = p.add_argument_group("ablation")
    g.add_argument(
        "--eval-text",
        metavar="FILE",
        help="UTF-8 text to measure perplexity on (default: WikiText-2 test, fetched from the Hub)",
    )
    g.add_argument(
        "--max-tokens",
        type=positive(int),
        default=DEFAULT_MAX_TOKENS,
        help="tokens scored per measurement, 0 for the whole text (default: %(default)d)",
    )
    g.add_argument(
        "--seq-len",
        type=positive(int, 2),
        default=DEFAULT_SEQ_LEN,
        help="window length, capped by the model's context (default: %(default)d)",
    )
    g.add_argument(
        "--min-damage",
        type=positive(float),
        default=DEFAULT_MIN_DAMAGE,
        help="confirmed needs ablated >= this x original perplexity (default: %(default)g)",
    )
    g.add_argument(
        "--min-margin",
        type=positive(float),
        default=DEFAULT_MIN_MARGIN,
        help="confirmed needs ablated >= this x control perplexity (default: %(default)g)",
    )


# -- commands -------------------------------------------------------------------------------------


def settings_from(args: argparse.Namespace):
    from .audit import AuditSettings

    fields = AuditSettings.__dataclass_fields__
    return AuditSettings(**{k: v for k, v in vars(args).items() if k in fields})


def cmd_detect_or_audit(args: argparse.Namespace) -> int:
    from .audit import audit
    from .fileio import atomic_write
    from .report import render

    quiet_libraries(progress=not args.quiet)
    result = audit(
        args.model,
        revision=args.revision,
        settings=settings_from(args),
        ablation=args.command == "audit",
        progress=not args.quiet,
    )
    data = emit_json(result.to_json())
    if args.output:
        atomic_write(args.output, data)
    sys.stdout.write(data if args.json else render(result) + "\n")
    if args.output:
        print(f"superweight: wrote {args.output}", file=sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from . import synthetic

    quiet_libraries(progress=False)
    out: Path = args.directory
    model = synthetic.build(out / "model", args.family)
    text = synthetic.write_eval_text(out / "eval.txt")
    print(f"wrote a {args.family} checkpoint with a planted super weight to {model}")
    print(f"wrote its evaluation text to {text}")
    if args.gguf:
        print(f"wrote a GGUF copy to {synthetic.write_gguf(model, out / 'model.gguf')}")
    print(f"next: superweight audit {model} --eval-text {text}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="superweight",
        description="Find super weights in open language models and confirm them by ablation.",
    )
    parser.add_argument("--version", action="version", version=f"superweight {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "detect",
        help="find super-weight candidates in one forward pass per weight",
        description="Find super-weight candidates from activation spikes (no ablation).",
    )
    add_model_options(p)
    p.set_defaults(func=cmd_detect_or_audit)

    p = sub.add_parser(
        "audit",
        help="detect super weights and confirm them by ablation",
        description="Detect super weights, then confirm them: perplexity with them zeroed, "
        "against a control that zeroes as many of the largest other weights.",
    )
    add_model_options(p)
    add_ablation_options(p)
    p.set_defaults(func=cmd_detect_or_audit)

    from .synthetic import FAMILIES

    p = sub.add_parser(
        "demo",
        help="write a tiny checkpoint with a planted super weight, for offline tries",
        description="Write a tiny checkpoint with a planted super weight and an evaluation "
        "text, so the auditor can be tried with no Hub access.",
    )
    p.add_argument("directory", type=Path, metavar="DIR")
    p.add_argument("--family", default="llama", choices=sorted(FAMILIES))
    p.add_argument("--gguf", action="store_true", help="also write a GGUF copy (llama only)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except AuditorError as e:
        print(f"superweight: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("superweight: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:
        if os.environ.get("SUPERWEIGHT_DEBUG"):
            raise
        first = (str(e).strip().splitlines() or [""])[0]
        print(
            f"superweight: internal error: {type(e).__name__}: {first} "
            "(SUPERWEIGHT_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())

"""The text perplexity is measured on, cut into fixed-length windows (the paper's protocol).

Default: WikiText-2 (raw) test split, fetched through the Hub, joined with blank lines and tokenized in one
piece, then cut into non-overlapping windows of `seq_len` tokens, as GPTQ and the super-weight paper do.
`--eval-text FILE` uses a local UTF-8 file instead, which is what offline runs need.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from .errors import EvalTextError, HubError, first_line

WIKITEXT_REPO = "Salesforce/wikitext"
WIKITEXT_FILE = "wikitext-2-raw-v1/test-00000-of-00001.parquet"
WIKITEXT_NAME = "wikitext-2-raw-v1 (test)"


@dataclass(frozen=True)
class EvalText:
    name: str
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


def from_file(path: str | Path) -> EvalText:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise EvalTextError(f"--eval-text {path}: no such file") from e
    except (OSError, UnicodeDecodeError) as e:
        raise EvalTextError(f"--eval-text {path}: cannot read it as UTF-8 text ({e})") from e
    if not text.strip():
        raise EvalTextError(f"--eval-text {path} is empty")
    return EvalText(f"file:{path.name}", text)


def wikitext2() -> EvalText:
    """WikiText-2 raw test split from the Hub (needs network, or a warm huggingface_hub cache)."""
    import pyarrow.parquet as pq

    from . import hub

    try:
        local = hub.download(WIKITEXT_REPO, WIKITEXT_FILE, repo_type="dataset")
    except Exception as e:
        raise HubError(f"cannot fetch WikiText-2 from the Hub ({first_line(e)}); pass --eval-text FILE offline") from e
    lines = pq.read_table(local, columns=["text"]).column("text").to_pylist()
    return EvalText(WIKITEXT_NAME, "\n\n".join(lines))


def load(path: str | Path | None) -> EvalText:
    return from_file(path) if path is not None else wikitext2()


def windows(tokenizer, text: EvalText, *, seq_len: int, max_tokens: int):
    """Token windows [n, seq_len]: as many whole windows as fit in the text and in `max_tokens` (0: no cap).

    A text shorter than one window gives a single window of all its tokens, and a `max_tokens` below
    `seq_len` a single window that long: the cap bounds the cost (the window length is recorded).
    """
    ids = tokenizer(text.text, return_tensors="pt", verbose=False).input_ids[0]
    if ids.numel() < 2:
        raise EvalTextError(f"{text.name} has {ids.numel()} token(s); perplexity needs at least 2")
    seq_len = max(2, min(seq_len, ids.numel(), max_tokens if max_tokens > 0 else seq_len))
    n = ids.numel() // seq_len
    if max_tokens > 0:
        n = max(1, min(n, max_tokens // seq_len))
    return ids[: n * seq_len].reshape(n, seq_len)


def calibration(tokenizer, text: EvalText, windows, *, tokens: int):
    """Windows to choose a setting on, not scored: `tokens` of the text after the evaluation `windows`, as
    windows of the same length (at least one), or the first window when the text has no more."""
    ids = tokenizer(text.text, return_tensors="pt", verbose=False).input_ids[0]
    n, seq_len = windows.shape
    rest = ids[n * seq_len :]
    count = max(1, min(tokens // seq_len, rest.numel() // seq_len))
    if rest.numel() < seq_len:
        return windows[:1]
    return rest[: count * seq_len].reshape(count, seq_len)

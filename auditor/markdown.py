"""Markdown for GitHub (pull request bodies, comments, run summaries) that text from users or the Hub cannot
break out of: file names, model ids and messages go into code spans, where GitHub renders no link, mention,
emphasis or HTML."""

from __future__ import annotations

import re
from urllib.parse import quote

MAX_CODE = 300


def code(text: object, *, limit: int = MAX_CODE, table: bool = False) -> str:
    """`text` as one inline code span that no backtick inside can close: the fence is one backtick longer
    than the longest run of them inside (CommonMark), and padded with spaces when the text starts or ends
    with one. Line breaks become spaces (a blank line would end the span); `table` escapes pipes, which
    GitHub splits table cells on even inside code."""
    value = " ".join(str(text).split()) or " "
    if len(value) > limit:
        value = value[: limit - 1] + "…"
    if table:
        value = value.replace("|", "\\|")
    fence = "`" * (max((len(run) for run in re.findall(r"`+", value)), default=0) + 1)
    pad = " " if value[0] in "` " or value[-1] in "` " else ""
    return f"{fence}{pad}{value}{pad}{fence}"


def comment_safe(text: str) -> str:
    """Text for inside an HTML comment (`<!-- ... -->`): percent-encoded, so `-->` cannot end it early."""
    return quote(text, safe="/")

"""Hub model ids: the one definition every check uses (index files, the queue, requests, the command line).

The Hub's own rules (huggingface_hub's `validate_repo_id`), in ASCII: `org/name`, each part 1 to 96 letters,
digits, `.`, `_` or `-`, starting and ending with a letter or digit, with no `--` or `..` and no `.git` at
the end. Python's and JSON Schema's `\\w` would also take other scripts' letters, which the Hub refuses.
"""

from __future__ import annotations

import re

PART = "[A-Za-z0-9]([A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
MODEL_ID = f"^{PART}/{PART}$"
"""org/name, as a pattern for JSON Schemas (the index schema's `model` uses this exact string)."""
_MODEL_ID, _NAME = re.compile(MODEL_ID), re.compile(f"^{PART}$")


def _hub_rules(text: str) -> bool:
    return "--" not in text and ".." not in text and not text.endswith(".git")


def is_model_id(text: object) -> bool:
    """`org/name`, as the Hub allows it."""
    return isinstance(text, str) and bool(_MODEL_ID.match(text)) and _hub_rules(text)


def is_hub_id(text: object) -> bool:
    """A model id, or a bare name the Hub resolves without an org (`gpt2`)."""
    return is_model_id(text) or (isinstance(text, str) and bool(_NAME.match(text)) and _hub_rules(text))

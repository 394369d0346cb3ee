"""Every JSON Schema this project publishes, generated from its models (`auditor.models`).

    python -m auditor.schemas    # rewrite them after changing a model

A test fails when a committed file differs from what its model generates, so they cannot drift apart.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .index.entries import index_schema

ROOT = Path(__file__).resolve().parent.parent

SCHEMAS: dict[str, Callable[[], dict[str, Any]]] = {
    "auditor/index/schema.json": index_schema,
}
"""Path in the repository -> the function generating it."""


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    for path, generate in SCHEMAS.items():
        (ROOT / path).write_text(render(generate()), encoding="utf-8")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()

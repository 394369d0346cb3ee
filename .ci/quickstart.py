"""Print the bash blocks of the README's "Quick start" section, for .ci/run and tests/test_docs.py.

`install` is the first block, `tests` the last, `main` every block between them, joined in order: run
verbatim, they are the README's promise that a fresh machine works.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def blocks(text: str | None = None) -> dict[str, str]:
    text = README.read_text() if text is None else text
    section = text.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    found = re.findall(r"^```bash\n(.*?)^```$", section, flags=re.M | re.S)
    if len(found) < 3:
        raise SystemExit("README: the Quick start needs an install block, main-job blocks and a test block")
    return {"install": found[0], "main": "".join(found[1:-1]), "tests": found[-1]}


if __name__ == "__main__":
    sys.stdout.write(blocks()[sys.argv[1]])

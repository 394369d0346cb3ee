"""Check a built site before it is published: `superweight site check DIR`.

- every internal link, stylesheet, script and image of every page resolves to a file of the build, under
  the base path it was built for (fragments included: `#id` must exist on the target page);
- internal links are relative and name a file, so the site also works opened from disk (404.html excepted:
  a server shows it at any depth, so it links from the base path);
- nothing is loaded from another origin (links out are fine; resources are not);
- feed.xml and sitemap.xml (built for an absolute base URL) are well-formed XML, the JSON files parse,
  and SHA256SUMS matches the dumps.
HTML validity itself is checked in the tests with the W3C's Nu Html Checker.
"""

from __future__ import annotations

import hashlib
import json
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

from .build import MARKER

RESOURCE_TAGS = {("link", "href"), ("script", "src"), ("img", "src"), ("source", "src"), ("iframe", "src")}


class Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, str, str]] = []  # (tag, attribute, url)
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if values.get("id"):
            self.ids.add(values["id"])
        for name in ("href", "src"):
            if values.get(name) is not None:
                rel = values.get("rel") or ""
                resource = (tag, name) in RESOURCE_TAGS and not (tag == "link" and "alternate" in rel)
                self.links.append(("resource" if resource else tag, name, values[name]))


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def target(root: Path, base: str, url_path: str) -> Path | None:
    """The file a same-origin URL path names, or None if it is outside the base path."""
    if not url_path.startswith(base):
        return None
    rel = unquote(url_path[len(base) :])
    file = root / rel
    return file / "index.html" if rel == "" or rel.endswith("/") or file.is_dir() else file


def check_site(root: str | Path) -> list[str]:
    """Every problem found, as `page: message` lines ([] when the site is sound)."""
    root = Path(root)
    if not root.is_dir():
        return [f"{root}: no such directory"]
    if not (root / MARKER).exists():
        return [f"{root}: not a site build (no {MARKER})"]
    built = json.loads((root / MARKER).read_text())
    base = built["base_path"]
    problems: list[str] = []
    pages = {p: parse(p) for p in sorted(root.rglob("*.html"))}
    for path, page in pages.items():
        rel = path.relative_to(root).as_posix()
        here = base + (rel.removesuffix("index.html") if rel.endswith("index.html") else rel)
        for kind, _, url in page.links:
            parts = urlsplit(urljoin(here, url))
            if parts.scheme in ("http", "https") and parts.netloc:
                if kind == "resource":
                    problems.append(f"{rel}: loads {url} from another origin")
                continue
            if parts.scheme not in ("", "http", "https"):
                if parts.scheme not in ("mailto",):
                    problems.append(f"{rel}: unexpected link scheme in {url}")
                continue
            file = target(root, base, parts.path)
            folder = file is not None and file.name == "index.html" and not parts.path.endswith("index.html")
            if rel != "404.html" and (url.startswith("/") or (url.split("#")[0] and folder)):
                problems.append(f"{rel}: {url} does not open from disk (links must be relative and name a file)")
            if file is None:
                problems.append(f"{rel}: {url} is outside the base path {base}")
            elif not file.is_file():
                problems.append(f"{rel}: {url} does not resolve (no {file.relative_to(root)})")
            elif parts.fragment and file.suffix == ".html" and parts.fragment not in pages[file].ids:
                problems.append(f"{rel}: {url}: no element with id {parts.fragment!r}")
    for name in ("feed.xml", "sitemap.xml") if built.get("feeds", True) else ():
        try:
            ET.parse(root / name)
        except (OSError, ET.ParseError) as e:
            problems.append(f"{name}: {e}")
    for path in sorted(root.rglob("*.json")):
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except ValueError as e:
            problems.append(f"{path.relative_to(root)}: not valid JSON ({e})")
    sums = root / "api" / "v1" / "SHA256SUMS"
    for line in sums.read_text().splitlines() if sums.exists() else ["missing"]:
        digest, _, name = line.partition("  ")
        file = sums.parent / name
        if not name or not file.is_file() or hashlib.sha256(file.read_bytes()).hexdigest() != digest:
            problems.append(f"api/v1/SHA256SUMS: {name or line} does not match")
    return problems

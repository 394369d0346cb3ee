"""Build the static site: `superweight site build [--out DIR] [--base-url URL]`.

Pages (jinja2 templates from `auditor/web/templates`, escaping on):
  index.html                  every model in one table (JavaScript adds sorting and filtering; without it
                              the table and the per-verdict views under verdict/<name>/ still work)
  models/<org>/<name>/        one page per model: coordinates, a profile chart (SVG, drawn here), the
                              ablation, what round-to-nearest quantization does with and without the super
                              weights kept (a table and a chart), provenance, history, the command that
                              reproduces it
  about/, request/, queue/    how it works; how to ask for an audit; what is waiting or was refused
  broken-quants/              GGUF quants whose screen found a super weight not intact (clipped, zeroed,
                              sign-flipped): a screen reads the stored values, nothing is ablated
Machine-readable (the versioned API; every payload has `schema_version` and `generated_at`):
  api/v1/index.json|jsonl|csv, api/v1/SHA256SUMS, api/v1/schema.json,
  api/v1/models/<org>/<name>.json and .yaml, feed.xml (Atom, newest audits first), sitemap.xml

Every link is relative and names a file (`../about/index.html`, never `/about/`), so one build works on
GitHub Pages, under any sub-path, and opened straight from disk (`file://`); only 404.html, which a server
shows at any depth, links from the base path of `--base-url`. Absolute URLs (the feed, the sitemap) need an
absolute `--base-url`. Assets carry a content hash in their names, so browsers never keep a stale copy. Nothing is
loaded from another origin, and a Content-Security-Policy says so. The site is built in a temporary
directory and moved into place when complete.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import jinja2

from .. import __version__, clock
from ..errors import UsageError
from ..index import MeasuredRecord, export, load_index, resolve_root
from ..index.entries import SCHEMA_VERSION, record_to_dict
from ..models import to_data
from ..settings import AuditSettings
from .chart import profile_svg, quant_svg
from .views import (
    OUTCOME_LABELS,
    VERDICT_LABELS,
    QuantView,
    all_screens,
    broken_quants,
    derivatives,
    quant_series,
    quant_view,
    record_view,
    row,
    sort_value,
)

MARKER = ".superweight-site"
DEFAULT_SITE_DIR = Path(__file__).resolve().parent  # templates/ and assets/, shipped as package data
FEED_ENTRIES = 200


@dataclass(frozen=True)
class BuildResult:
    out: Path
    models: int
    files: int
    seconds: float
    feeds: bool
    """Whether feed.xml and sitemap.xml were written: they need absolute URLs, so an absolute --base-url."""


def split_base(base_url: str) -> tuple[str, str]:
    """(absolute URL of the site root, its path), both ending in '/'. A bare path gives itself twice."""
    url = base_url if base_url.endswith("/") else base_url + "/"
    parts = urlsplit(url)
    if parts.scheme not in ("", "http", "https") or (parts.scheme and not parts.netloc):
        raise UsageError(f"--base-url {base_url!r} must be an http(s) URL or a path like /repo/")
    path = parts.path if parts.path.startswith("/") else "/" + parts.path
    return url, path


def build_site(
    out: str | Path = "_site",
    *,
    base_url: str = "/",
    index_root: str | Path | None = None,
    queue_file: str | Path | None = "queue/queue.yaml",
    site_dir: str | Path | None = None,
    repo_url: str | None = None,
    generated_at: str | None = None,
) -> BuildResult:
    """Render the whole site into `out` (replacing a previous build there, never anything else)."""

    started = time.monotonic()
    out, site_dir = Path(out), Path(site_dir or DEFAULT_SITE_DIR)
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists():
        raise UsageError(f"{out} is not empty and not a previous site build: choose another --out")
    if not (site_dir / "templates").is_dir():
        raise UsageError(f"no templates in {site_dir / 'templates'} (pass --site-dir)")
    site_url, base = split_base(base_url)
    feeds = bool(urlsplit(site_url).scheme)
    generated_at = generated_at or clock.stamp()
    index_root = resolve_root(index_root)  # None: $SUPERWEIGHT_INDEX, else ./index
    index = load_index(index_root)
    entries = sorted(index, key=lambda e: e.model.lower())
    queue = load_queue_items(queue_file)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        assets = copy_assets(site_dir / "assets", tmp / "assets")
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(site_dir / "templates"),
            autoescape=jinja2.select_autoescape(["html", "xml"]),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        env.globals.update(
            site_url=site_url,
            link=link,
            asset=jinja2.pass_context(lambda context, name: context["root"] + assets[name]),
            generated_at=generated_at,
            version=__version__,
            repo_url=repo_url,
            labels=VERDICT_LABELS,
            outcomes=OUTCOME_LABELS,
            defaults=AuditSettings(),
            schema_version=SCHEMA_VERSION,
            sort_value=sort_value,
            feeds=feeds,
            inf=math.inf,
        )
        writer = Writer(tmp)

        def page(rel: str, template: str, **context) -> None:
            root = base if rel == "404.html" else "../" * rel.count("/")
            writer.text(rel, env.get_template(template).render(root=root, **context))

        rows = sorted((row(e, index.lookup) for e in entries), key=lambda r: r.date, reverse=True)
        counts = {v: sum(r.verdict == v for r in rows) for v in VERDICT_LABELS}
        page("index.html", "home.html", rows=rows, counts=counts, view=None)
        for verdict, n in counts.items():
            if n:
                subset = [r for r in rows if r.verdict == verdict]
                page(f"verdict/{verdict}/index.html", "home.html", rows=subset, counts=counts, view=verdict)
        screens = all_screens(entries)
        bases = derivatives(screens)
        for entry in entries:
            views = [record_view(entry.model, r) for r in reversed(entry.records)]
            current = entry.latest()
            chart = ""
            if isinstance(current, MeasuredRecord):
                chart = profile_svg(
                    current.profile.rows(),
                    {w.layer for w in current.super_weights},
                    f"Down-projection profile of {entry.model}",
                )
            quant = quant_view(entry)
            quant_bits, quant_chart = quant_chart_of(entry.model, quant) if quant else (0, "")
            page(
                f"models/{entry.model}/index.html",
                "model.html",
                entry=entry,
                current=current and record_view(entry.model, current),
                records=views,
                chart=chart,
                row=row(entry, index.lookup),
                quant=quant,
                quant_chart=quant_chart,
                quant_bits=quant_bits,
                screens=screens[entry.model],
                derivatives=bases.get(entry.model, []),
            )
            api = {"schema_version": SCHEMA_VERSION, "generated_at": generated_at, **to_data(entry)}
            writer.text(f"api/v1/models/{entry.model}.json", json.dumps(api, separators=(",", ":")) + "\n")
            source = index_root / f"{entry.model}.yaml"
            writer.bytes(f"api/v1/models/{entry.model}.yaml", source.read_bytes())
        for name in ("about", "request", "queue"):
            page(f"{name}/index.html", f"{name}.html", queue=queue)
        page("broken-quants/index.html", "broken-quants.html", broken=broken_quants(screens))
        page("404.html", "404.html")
        dumps = {f"index.{fmt}": export(index, fmt, generated_at=generated_at) for fmt in ("json", "jsonl", "csv")}
        for name, text in dumps.items():
            writer.text(f"api/v1/{name}", text)
        writer.text(
            "api/v1/SHA256SUMS",
            "".join(f"{hashlib.sha256(text.encode()).hexdigest()}  {name}\n" for name, text in sorted(dumps.items())),
        )
        writer.bytes("api/v1/schema.json", (Path(__file__).parents[1] / "index" / "schema.json").read_bytes())
        if feeds:
            writer.text("feed.xml", env.get_template("feed.xml").render(entries=feed_entries(entries)))
            pages = ["", "about/", "request/", "queue/", "broken-quants/", *(r.path for r in rows)]
            writer.text("sitemap.xml", env.get_template("sitemap.xml").render(pages=pages))
        writer.text(".nojekyll", "")  # GitHub Pages: serve the files as they are
        writer.text(
            MARKER,
            json.dumps(
                {
                    "tool_version": __version__,
                    "generated_at": generated_at,
                    "base_url": site_url,
                    "base_path": base,
                    "feeds": feeds,
                }
            ),
        )
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return BuildResult(out, len(entries), writer.count, time.monotonic() - started, feeds)


def quant_chart_of(model: str, quant: QuantView) -> tuple[int, str]:
    """(bits, the SVG markup) of the model page's quantization chart: "" when fewer than two blocks of one
    width were measured."""
    bits, labels, series = quant_series(quant)
    names = ", ".join(name for name, _, _ in series)
    return bits, quant_svg(
        labels,
        series,
        f"Perplexity of {model} quantized to {bits} bits by round-to-nearest, over the original",
        f"Perplexity over the unquantized model's, log scale, for each block size: {', '.join(labels)} (inputs "
        f"per block; per-channel: one block per output row). Lines: {names}. A triangle above the plot marks a "
        "loss that was not finite (diverged).",
    )


@jinja2.pass_context
def link(context, path: str) -> str:
    """A page's link to `path` (from the site root): relative to the page, and naming the file, since a
    directory link opens as a folder listing from disk."""
    return context["root"] + (path + "index.html" if path == "" or path.endswith("/") else path)


class Writer:
    def __init__(self, root: Path):
        self.root, self.count = root, 0

    def bytes(self, rel: str, data: bytes) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.count += 1

    def text(self, rel: str, text: str) -> None:
        self.bytes(rel, text.encode("utf-8"))


def copy_assets(source: Path, target: Path) -> dict[str, str]:
    """Copy each asset under a name carrying a hash of its content; return name -> path from the base."""
    target.mkdir(parents=True)
    names = {}
    for path in sorted(p for p in source.iterdir() if p.is_file()):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:10]
        hashed = f"{path.stem}.{digest}{path.suffix}"
        shutil.copyfile(path, target / hashed)
        names[path.name] = f"assets/{hashed}"
    return names


def load_queue_items(path: str | Path | None) -> dict[str, list]:
    from ..scheduler.queue import load_queue

    items = load_queue(Path(path)).items if path and Path(path).exists() else []
    grouped: dict[str, list] = {"pending": [], "running": [], "failed": [], "skipped": []}
    for item in sorted(items, key=lambda i: i.updated, reverse=True):
        grouped.setdefault(item.state, []).append(item)
    return grouped


def feed_entries(entries) -> list[tuple[str, object, str]]:
    """(model, record, id) for the newest records, newest first: what the Atom feed announces. The id is a
    hash of the record's content, which never changes (records are only appended)."""
    records = [(e.model, r) for e in entries for r in e.records]
    newest = sorted(records, key=lambda mr: mr[1].date, reverse=True)[:FEED_ENTRIES]
    return [(model, r, f"{r.source}-{record_hash(r)}") for model, r in newest]


def record_hash(record) -> str:
    text = json.dumps(record_to_dict(record), sort_keys=True)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()

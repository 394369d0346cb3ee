"""Benchmark: building the site for 10,000 models.

    python benchmarks/bench_site.py [--models 10000] [--browser]

Writes N model files (one realistic measured record each, as in bench_index.py), then times
`superweight site build` twice (the index read and validated each time; target: under 30 s). With
`--browser`, it also serves the site on 127.0.0.1 and times the home table in headless Chromium: the
page ready, filtering it down to one row, back to the first page, a sort, and showing every row.
Reported, never asserted.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench_index import record

from auditor.index import ModelEntry
from auditor.index.entries import render_entry
from auditor.web.build import build_site

BASE_PATH = "/index/"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=10_000)
    parser.add_argument("--browser", action="store_true", help="also time the home table in headless Chromium")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "index"
        text = render_entry(ModelEntry("org/model", [record(0)]))
        for i in range(args.models):
            (root / f"org{i % 100}").mkdir(parents=True, exist_ok=True)
            (root / f"org{i % 100}" / f"model-{i}.yaml").write_text(
                text.replace("model: org/model", f"model: org{i % 100}/model-{i}", 1)
            )
        times = []
        for _ in range(2):
            start = time.perf_counter()
            result = build_site(
                Path(tmp) / "site", base_url="https://example.org" + BASE_PATH, index_root=root, queue_file=None
            )
            times.append(time.perf_counter() - start)
        size = sum(p.stat().st_size for p in result.out.rglob("*") if p.is_file())
        print(f"{args.models:,} models: {result.files:,} files, {size / 2**20:.0f} MiB")
        print(f"site build (index read and validated)   {times[0]:6.1f} s   (target < 30 s)")
        print(f"site build, again                       {times[1]:6.1f} s")
        if args.browser:
            browse(result.out, args.models)


def browse(site: Path, models: int) -> None:
    import functools
    import http.server
    import shutil
    import threading

    from playwright.sync_api import expect, sync_playwright

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    # Served under a sub-path, as GitHub Pages serves a project site (links are relative).
    root = site.parent / "www"
    root.mkdir()
    (root / BASE_PATH.strip("/")).symlink_to(site)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}{BASE_PATH}"
    rows, more = "#models tbody tr", "button.more"
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=shutil.which("chromium") or shutil.which("google-chrome"),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page()
        ready = timed(lambda: (page.goto(url), page.wait_for_selector("#filters:not([hidden])")))
        narrow = timed(lambda: (page.fill("#filter-text", "model-4242"), expect(page.locator(rows)).to_have_count(1)))
        back = timed(lambda: (page.fill("#filter-text", ""), expect(page.locator(more)).to_be_visible()))
        sort = timed(
            lambda: (
                page.click("#models thead th:nth-child(3) button"),
                page.wait_for_selector('th[aria-sort="ascending"]'),
            )
        )
        every = timed(lambda: (page.click(more), expect(page.locator(rows)).to_have_count(models)))
        browser.close()
    server.shutdown()
    print(
        f"home table in Chromium: ready {ready:.1f} s; filter to 1 row {narrow:.2f} s (80 ms debounce); "
        f"back to the first page {back:.2f} s; sort {sort:.2f} s; show all {models:,} rows {every:.1f} s"
    )


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()

"""The static site: built from a fixture index, checked link by link, validated, and used in a real browser."""

from __future__ import annotations

import csv
import functools
import hashlib
import http.server
import io
import json
import math
import os
import re
import shutil
import subprocess
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import msgspec
import pytest
from playwright.sync_api import expect

from auditor.errors import UsageError
from auditor.index import MeasuredRecord, ModelRef, ReportedRecord, SameWeightsRecord, append_record, export, load_index
from auditor.index.entries import (
    SCHEMA_VERSION,
    ScreenedFile,
    ScreenedRecord,
    ScreenedWeight,
    index_schema,
)
from auditor.models import to_data
from auditor.records import Quantization, QuantRow, QuantScheme, QuantSettings, SuperWeight
from auditor.scheduler.queue import Item, Queue, save_queue
from auditor.web.build import build_site
from auditor.web.check import check_site

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
HOSTILE = '<img src=x onerror="alert(1)"> & <script>alert(2)</script>'
BASE_URL = "https://example.org/sub/"
# The default grid, as ratios to the original: (bits, block, rtn, rtn_sw, rtn_sw_clip, clip_z); None: diverged.
QUANT_GRID = [
    (4, 64, 1.30, 1.02, 1.01, 4.0),
    (4, 128, 1.45, 1.03, 1.02, 4.0),
    (4, 256, 1.80, 1.05, 1.04, 3.5),
    (4, 512, 2.60, 1.08, 1.06, 3.5),
    (4, 1024, 4.10, 1.12, 1.09, 3.0),
    (4, None, None, 1.90, 1.60, 3.0),  # plain RTN per channel breaks the model: off the chart
    (8, None, 1.004, 1.001, 1.001, None),  # clipping helped at no threshold: the figure without it
]


def quantization_of(record: MeasuredRecord, grid=QUANT_GRID) -> Quantization:
    """Quantization figures for an audited record (its super weights held out), from ratios to its original."""
    original = record.ablation.perplexity_original

    def times(ratio: float | None) -> float | None:
        return None if ratio is None else original * ratio

    return Quantization(
        perplexity_original=original,
        tokens=record.ablation.tokens,
        held_out=[w.ref() for w in record.super_weights],
        rows=[
            QuantRow(bits, times(rtn), block, times(kept), times(clipped), z)
            for bits, block, rtn, kept, clipped, z in grid
        ],
        settings=QuantSettings(
            [QuantScheme(bits, block) for bits, block, *_ in grid], clip_z=[3.0, 3.5, 4.0], calibration_tokens=512
        ),
    )


def screened_records(record: MeasuredRecord) -> dict[str, ScreenedRecord]:
    """Screens of derivatives of the audited model: a GGUF repository (one file keeps the super weight, one
    clips it to 31 %) and a fine-tune that changed it."""
    [w] = record.super_weights
    base = ModelRef("demo/tiny-llama", record.revision)

    def weight(value: float, state: str) -> ScreenedWeight:
        return ScreenedWeight(w.layer, w.row, w.col, base=w.value, value=value, state=state)

    gguf = ScreenedRecord(
        "e" * 40,
        "2026-11-21",
        "0.1.0",
        base,
        [
            ScreenedFile(
                "tiny-llama-Q4_K_M.gguf", "gguf", 80_000_000, 41_000, [weight(w.value * 0.996, "intact")], "Q4_K"
            ),
            ScreenedFile(
                "tiny-llama-Q2_K.gguf", "gguf", 50_000_000, 38_000, [weight(w.value * 0.31, "clipped")], "Q2_K"
            ),
        ],
    )
    tune = ScreenedRecord(
        "b" * 40,
        "2026-11-21",
        "0.1.0",
        base,
        [ScreenedFile("model.safetensors", "safetensors", 300_000_000, 1_024, [weight(w.value * 0.5, "changed")])],
    )
    return {"quants/tiny-llama-GGUF": gguf, "tuner/tiny-llama-chat": tune}


@pytest.fixture(scope="module")
def site(tmp_path_factory, audit_result) -> Path:
    """A site built from the repository's index plus an audited model (with quantization figures), a copy of it,
    a hostile record and a queue."""
    work = tmp_path_factory.mktemp("site")
    index = work / "index"
    shutil.copytree(REPO / "index", index)
    record = MeasuredRecord.from_audit(audit_result)
    record = msgspec.structs.replace(record, quantization=quantization_of(record))
    append_record("demo/tiny-llama", record, root=index)
    copy = SameWeightsRecord(
        "f" * 40, "2026-11-22", "0.1.0", ModelRef("demo/tiny-llama", record.revision), record.weights_sha256
    )
    append_record("other/copy", copy, root=index)
    for model, screen in screened_records(record).items():
        append_record(model, screen, root=index)
    hostile = ReportedRecord(
        revision=None,
        date="2026-11-20",
        citation=f"A paper {HOSTILE}",
        note=HOSTILE,
        architecture="LlamaForCausalLM",
        num_layers=4,
        super_weights=[SuperWeight(1, 2, 3, shape=(64, 128), module="model.layers.1.mlp.down_proj")],
    )
    append_record("evil/model", hostile, root=index)
    queue = Queue(
        [
            Item(
                "org/waiting",
                "c" * 40,
                "request",
                "pending",
                "2026-11-22T00:00:00Z",
                "2026-11-22T01:00:00Z",
                requested_by="alice",
            ),
            Item(
                "org/gated",
                "d" * 40,
                "discovered",
                "skipped",
                "2026-11-22T00:00:00Z",
                "2026-11-22T01:00:00Z",
                code="gated",
                message=f"gated {HOSTILE}",
            ),
        ]
    )
    save_queue(work / "queue.yaml", queue)
    out = build_site(
        work / "_site",
        base_url=BASE_URL,
        index_root=index,
        queue_file=work / "queue.yaml",
        generated_at="2026-11-22T12:00:00Z",
    ).out
    (out / ".index").symlink_to(index)  # for the tests below; dotfiles are not part of the site
    return out


def read(site: Path, rel: str) -> str:
    return (site / rel).read_text(encoding="utf-8")


def test_every_internal_link_and_asset_resolves(site):
    assert check_site(site) == []
    expected = {
        "index.html",
        "about/index.html",
        "request/index.html",
        "queue/index.html",
        "404.html",
        "models/demo/tiny-llama/index.html",
        "models/huggyllama/llama-7b/index.html",
        "feed.xml",
        "sitemap.xml",
        "api/v1/index.json",
        "api/v1/index.csv",
        "api/v1/index.jsonl",
        "api/v1/SHA256SUMS",
        "api/v1/models/demo/tiny-llama.json",
        "api/v1/models/demo/tiny-llama.yaml",
        "verdict/confirmed/index.html",
        "verdict/screened/index.html",
        "broken-quants/index.html",
        "models/quants/tiny-llama-GGUF/index.html",
        "models/tuner/tiny-llama-chat/index.html",
    }
    assert expected <= {p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file()}
    # Links are relative and name files: the same build works under /sub/ and from disk.
    assert 'href="models/demo/tiny-llama/index.html"' in read(site, "index.html")
    model = read(site, "models/demo/tiny-llama/index.html")
    assert 'href="../../../about/index.html"' in model and 'href="../../../assets/style.' in model
    assert 'href="/sub/index.html"' in read(site, "404.html")  # shown at any depth: from the base path


def test_the_checker_finds_broken_links_and_foreign_resources(site, tmp_path):
    broken = shutil.copytree(site, tmp_path / "broken", symlinks=True)
    page = broken / "about" / "index.html"
    page.write_text(
        page.read_text().replace(
            "</main>",
            '<a href="../nowhere.html">x</a><a href="../../elsewhere/index.html">y</a><a href="../queue/">z</a>'
            '<a href="../queue">v</a><a href="/sub/index.html">w</a><script src="https://cdn.example.com/x.js"></script>'
            "</main>",
        )
    )
    disk = "does not open from disk (links must be relative and name a file)"
    assert check_site(broken) == [
        "about/index.html: ../nowhere.html does not resolve (no nowhere.html)",
        "about/index.html: ../../elsewhere/index.html is outside the base path /sub/",
        f"about/index.html: ../queue/ {disk}",
        f"about/index.html: ../queue {disk}",
        f"about/index.html: /sub/index.html {disk}",
        "about/index.html: loads https://cdn.example.com/x.js from another origin",
    ]


def test_the_html_is_valid(site, variants):
    jar = os.environ.get("VNU_JAR") or str(REPO / ".ci/vendor/node_modules/vnu-jar/build/dist/vnu.jar")
    if not Path(jar).exists() or not shutil.which("java"):
        if os.environ.get("CI"):
            pytest.fail("the Nu Html Checker (vnu.jar) and java must be installed: see .ci/run")
        pytest.skip("vnu.jar not installed (.ci/run installs it)")
    proc = subprocess.run(
        ["java", "-jar", jar, "--errors-only", "--skip-non-html", str(site), str(variants)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_strings_from_the_hub_and_requests_are_escaped(site):
    for rel in ("models/evil/model/index.html", "queue/index.html", "index.html"):
        html = read(site, rel)
        assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in read(site, "models/evil/model/index.html")
    assert "&lt;img src=x onerror=" in read(site, "queue/index.html")
    assert "Content-Security-Policy" in read(site, "index.html")


def test_the_model_page(site, audit_result):
    html = read(site, "models/demo/tiny-llama/index.html")
    sha = audit_result.info.revision
    assert "<code>model.model.layers[1].mlp.down_proj.weight[7, 33]</code>" in html
    assert f'from_pretrained("demo/tiny-llama", revision="{sha}")' in html
    assert f'href="https://huggingface.co/demo/tiny-llama/commit/{sha}"' in html
    profile = html.split('<svg class="profile"')[1].split("</svg>")[0]
    assert '<rect class="marked"' in profile and profile.count("<polyline") == 2
    assert html.count('<polyline class="input" fill="none" stroke="#0b5cad"') == 1  # draws without the CSS
    assert "super weights zeroed" in html and "control: 1 largest other weight zeroed" in html
    assert f"superweight audit demo/tiny-llama --revision {sha}" in html
    alternate = (
        'type="application/json" title="demo/tiny-llama (JSON)" href="../../../api/v1/models/demo/tiny-llama.json"'
    )
    assert f'<link rel="alternate" {alternate}>' in html
    phi3 = read(site, "models/microsoft/Phi-3-mini-4k-instruct/index.html")
    snippet = phi3.split('<pre class="snippet"><code>')[1].split("</code></pre>")[0].splitlines()
    reads = [line for line in snippet if line.startswith("model.model.layers[")]
    assert len(reads) == 6 and all(
        re.fullmatch(r"model\.model\.layers\[[24]\]\.mlp\.down_proj\.weight\[\d+, (808|2723)\]", r) for r in reads
    )
    reported = read(site, "models/huggyllama/llama-7b/index.html")
    assert "Reported, not measured here" in reported and "arXiv:2411.07191" in reported
    assert (
        "70.1 to 35.1" in reported and "<code>model.model.layers[2].mlp.down_proj.weight[3968, 7003]</code>" in reported
    )
    copy = read(site, "models/other/copy/index.html")
    assert "byte-identical" in copy and 'href="../../../models/demo/tiny-llama/index.html"' in copy


def test_the_home_table_and_its_views(site):
    html = read(site, "index.html")
    rows = re.findall(r'<tr data-verdict="([a-z_]+)">', html)
    assert len(rows) == 15 and rows.count("reported") == 11 and rows.count("screened") == 2
    assert rows.count("confirmed") == 2  # the audited model, and its byte-identical copy, which inherits it
    copy = html[html.index('href="models/other/copy/index.html"') :].split("</tr>")[0]
    assert "same weights" in copy and "L1 [7, 33]" in copy
    demo = html[html.index('href="models/demo/tiny-llama/index.html"') :].split("</tr>")[0]
    assert "L1 [7, 33]" in demo
    assert int(re.search(r"×([\d,]+)<", demo).group(1).replace(",", "")) > 100  # the ablation's damage
    phi3 = html[html.index('href="models/microsoft/Phi-3-mini-4k-instruct/index.html"') :].split("</tr>")[0]
    coords = re.findall(r'<span class="coord">([^<]+)</span>', phi3)  # each kept on one line
    assert coords == ["L2 [525, 808]", "L2 [1693, 808]", "L2 [1113, 808]", "+3 more"]
    confirmed = read(site, "verdict/confirmed/index.html")
    assert re.findall(r'<tr data-verdict="([a-z_]+)">', confirmed) == ["confirmed", "confirmed"]
    assert '<form class="filters" id="filters" hidden>' in html  # shown by the script only


def section(html: str, start: str, end: str) -> str:
    return html[html.index(start) :].split(end)[0]


def home_cells(html: str, model: str) -> list[tuple[str, str]]:
    """(data-value, content) of each cell of a model's row in the home table."""
    link = html.index(f'href="models/{model}/index.html"')
    tr = html[html.rindex("<tr", 0, link) :].split("</tr>")[0]
    return re.findall(r'<td(?: data-value="([^"]*)")?>(.*?)</td>', tr)


def test_screened_derivatives_in_the_home_table(site):
    html = read(site, "index.html")
    for model, outcome in (("quants/tiny-llama-GGUF", "broken"), ("tuner/tiny-llama-chat", "changed")):
        cells = home_cells(html, model)
        verdict = f'<span class="verdict screened {outcome}" title="A screen of the stored values, not an ablation">'
        assert cells[4][1] == f"{verdict}screen: {outcome}</span>"  # a screen's outcome, not an ablation verdict
        assert cells[3][1] == '<span class="coord">–</span>' and cells[5] == ("0", "–") and cells[6] == ("0", "–")
        assert cells[8][1] == "screened"
    assert re.findall(r'<tr data-verdict="([a-z_]+)">', read(site, "verdict/screened/index.html")) == ["screened"] * 2


def test_a_screened_derivative_s_page(site, audit_result):
    html = read(site, "models/quants/tiny-llama-GGUF/index.html")
    sha = audit_result.info.revision
    heading = section(html, '<h2 id="screen-1">', "</h2>")
    assert 'Screened against <a href="../../../models/demo/tiny-llama/index.html">demo/tiny-llama</a>' in heading
    assert f"<code>{sha[:12]}</code>" in heading
    note = re.sub(r"\s+", " ", section(html, '<h2 id="screen-1">', "</p>"))
    assert (
        "A screen reads the stored values at the base model's super weights by HTTP range reads; nothing was ablated"
        in note
    )
    tables = re.findall(r'<table class="screen">(.*?)</table>', html, re.S)
    assert len(tables) == 2
    assert "<caption><code>tiny-llama-Q4_K_M.gguf</code>: gguf, Q4_K, 80 MB, 41 kB read</caption>" in tables[0]
    assert "<caption><code>tiny-llama-Q2_K.gguf</code>: gguf, Q2_K, 50 MB, 38 kB read</caption>" in tables[1]
    intact = re.findall(
        r"<tr><th scope=\"row\">([^<]+)</th><td>([^<]+)</td><td>([^<]+)</td><td>([^<]+)</td><td>([^<]+)</td></tr>",
        tables[0],
    )
    clipped = re.findall(
        r"<tr><th scope=\"row\">([^<]+)</th><td>([^<]+)</td><td>([^<]+)</td><td>([^<]+)</td><td>([^<]+)</td></tr>",
        tables[1],
    )
    assert [(c[0], c[3], c[4]) for c in intact] == [("L1 [7, 33]", "−0.4 %", "intact")]
    assert [(c[0], c[3], c[4]) for c in clipped] == [("L1 [7, 33]", "−69 %", "clipped")]
    assert float(intact[0][1]) == float(clipped[0][1]) != float(clipped[0][2])
    assert "<h2>Ablation</h2>" not in html and "Provenance" not in html  # nothing was ablated
    tune = read(site, "models/tuner/tiny-llama-chat/index.html")
    assert "<caption><code>model.safetensors</code>: safetensors, 300 MB, 1.02 kB read</caption>" in tune
    assert "<td>−50 %</td><td>changed</td>" in tune


def test_the_base_model_lists_its_derivatives(site):
    html = read(site, "models/demo/tiny-llama/index.html")
    items = re.findall(r"<li>(.*?)</li>", section(html, '<ul class="derivatives">', "</ul>"))
    quants = '<a href="../../../models/quants/tiny-llama-GGUF/index.html">quants/tiny-llama-GGUF</a>'
    tune = '<a href="../../../models/tuner/tiny-llama-chat/index.html">tuner/tiny-llama-chat</a>'
    assert items == [
        f"{quants} Q4_K_M: intact, −0.4 %",
        f"{quants} Q2_K: clipped to 31 % of the original",
        f"fine-tune {tune}: changed, −50 %",
    ]
    assert '<h2 id="derivatives">' not in read(site, "models/huggyllama/llama-7b/index.html")


def test_the_broken_quants_page(site, tmp_path):
    html = read(site, "broken-quants/index.html")
    table = section(html, '<table class="broken-quants">', "</table>")
    assert "<code>tiny-llama-Q2_K.gguf</code> (Q2_K)" in table and "clipped to 31 % of the original" in table
    assert "Q4_K_M" not in table and "tiny-llama-chat" not in table  # intact, and a fine-tune: not quants that broke
    assert table.count("<tr>") == 2  # the header and the one file
    assert 'href="../broken-quants/index.html"' in read(site, "about/index.html")
    empty = build_site(tmp_path / "empty", index_root=REPO / "index", queue_file=None).out
    assert "No screened quant has broken a super weight" in read(empty, "broken-quants/index.html")


def test_the_quantization_section(site):
    html = read(site, "models/demo/tiny-llama/index.html")
    assert '<h2 id="quantization">Quantization</h2>' in html
    lede = re.sub(r"\s+", " ", section(html, '<h2 id="quantization">', "</p>"))
    assert "At 4-bit, 256-block, round-to-nearest (RTN) quantization takes perplexity to ×1.80 the original" in lede
    assert "brings perplexity to ×1.05: when you quantize this model, keep this weight in high precision." in lede
    table = section(html, '<table class="quantization">', "</table>")
    assert '<th scope="colgroup" colspan="3">RTN + super weights kept + outliers clipped</th>' in table
    rows = re.findall(r"<tr><th scope=\"row\">([^<]+)</th>(.*?)</tr>", table)
    assert [label for label, _ in rows] == [
        "4-bit, 64-block",
        "4-bit, 128-block",
        "4-bit, 256-block",
        "4-bit, 512-block",
        "4-bit, 1024-block",
        "4-bit, per-channel",
        "8-bit, per-channel",
    ]
    cells = {label: re.findall(r"<td>([^<]*)</td>", tds) for label, tds in rows}
    assert all(len(c) == 7 for c in cells.values())  # perplexity and ratio thrice, and the z
    assert cells["4-bit, 256-block"][1::2] == ["×1.80", "×1.05", "×1.04"] and cells["4-bit, 256-block"][6] == "3.5"
    assert cells["4-bit, per-channel"][:3] == ["diverged", "unbounded", cells["4-bit, per-channel"][2]]
    assert cells["4-bit, per-channel"][3] == "×1.90"
    eight = cells["8-bit, per-channel"]
    assert eight[1::2] == ["×1.00", "×1.00", "×1.00"] and eight[4] == eight[2] and eight[6] == "–"
    # The chart: the 4-bit blocks on x, one line per series, a point per finite figure, the diverged one above.
    chart = section(html, '<svg class="quant"', "</svg>")
    assert '<title id="quant-title">Perplexity of demo/tiny-llama quantized to 4 bits' in chart
    assert 'aria-labelledby="quant-title quant-desc"' in chart and '<desc id="quant-desc">' in chart
    assert html.count('id="chart-title"') == html.count('id="quant-title"') == 1  # two charts, unique ids
    ticks = re.findall(r'<text class="tick" x="[\d.]+" y="[\d.]+" text-anchor="middle"[^>]*>([^<]+)</text>', chart)
    assert ticks == ["64", "128", "256", "512", "1024", "per-channel"]
    assert [chart.count(f'<polyline class="line {kind}"') for kind in ("rtn", "kept", "clipped")] == [1, 1, 1]
    assert [chart.count(f'<circle class="point {kind}"') for kind in ("rtn", "kept", "clipped")] == [5, 6, 6]
    assert chart.count('<path class="diverged rtn"') == 1 and "diverged (the loss was not finite)" in chart
    assert 'stroke="#cf222e" stroke-width="2"' in chart  # colours are attributes: draws without the CSS
    assert "<figcaption>Perplexity over the original (log scale) at each block size of the 4-bit schemes" in html


def test_the_home_table_quotes_4_bit_rtn_at_256_block(site):
    html = read(site, "index.html")
    headers = re.findall(r'<th scope="col" data-type="(\w+)"[^>]*>([^<]+)</th>', html)
    assert len(headers) == 9 and headers[6] == ("number", "4-bit RTN, 256-block (SW kept)")
    for model in ("demo/tiny-llama", "other/copy"):  # the copy stands for the audit it points at
        cells = home_cells(html, model)
        assert len(cells) == 9
        value, text = cells[6]
        assert text == '<span class="quant">×1.80 → ×1.05</span>'
        assert float(value) == pytest.approx(1.8)  # sorts by plain RTN
    assert home_cells(html, "huggyllama/llama-7b")[6] == ("0", "–")


def test_the_api_carries_the_quantization_figures(site):
    index = load_index(site / ".index")
    quantization = index.get("demo/tiny-llama").records[-1].quantization
    assert quantization is not None and len(quantization.rows) == len(QUANT_GRID)
    expected = to_data(quantization)
    model = json.loads(read(site, "api/v1/models/demo/tiny-llama.json"))
    assert model["records"][-1]["quantization"] == expected
    assert model["records"][-1]["quantization"]["rows"][5]["rtn"] is None  # diverged: null, never NaN or inf
    dump = json.loads(read(site, "api/v1/index.json"))
    [entry] = [m for m in dump["models"] if m["model"] == "demo/tiny-llama"]
    assert entry["records"][-1]["quantization"] == expected
    lines = [json.loads(line) for line in read(site, "api/v1/index.jsonl").splitlines()]
    assert [line["record"].get("quantization") for line in lines if line["model"] == "demo/tiny-llama"] == [expected]
    rows = [r for r in csv.DictReader(io.StringIO(read(site, "api/v1/index.csv"))) if r["model"] == "demo/tiny-llama"]
    assert rows and {float(r["quantization.perplexity_original"]) for r in rows} == {quantization.perplexity_original}
    assert "quantization" in read(site, "api/v1/models/demo/tiny-llama.yaml")


@pytest.fixture(scope="module")
def variants(tmp_path_factory, audit_result) -> Path:
    """A small site: an audit without quantization figures, and a model whose older audit has them (at no
    256-block) and whose newest does not."""
    work = tmp_path_factory.mktemp("variants")
    index = work / "index"
    record = msgspec.structs.replace(MeasuredRecord.from_audit(audit_result), quantization=None)
    append_record("demo/tiny-llama", record, root=index)
    no_256 = [g for g in QUANT_GRID if g[1] != 256]
    older = msgspec.structs.replace(
        record, revision="a" * 40, date="2026-11-01T12:00:00Z", quantization=quantization_of(record, no_256)
    )
    append_record("demo/requantized", older, root=index)
    append_record("demo/requantized", record, root=index)
    return build_site(work / "_site", base_url=BASE_URL, index_root=index, queue_file=None).out


def test_a_record_without_quantization_has_no_section(variants):
    assert check_site(variants) == []
    html = read(variants, "models/demo/tiny-llama/index.html")
    assert "<h2>Ablation</h2>" in html
    assert "Quantization" not in html and "quant" not in html
    home = read(variants, "index.html")
    assert home_cells(home, "demo/tiny-llama")[6] == ("0", "–")


def test_an_older_audit_s_quantization_is_shown_as_such(variants):
    html = read(variants, "models/demo/requantized/index.html")
    note = re.sub(r"\s+", " ", section(html, '<h2 id="quantization">', "<table"))
    assert "From the audit of commit" in note and "<code>aaaaaaaaaaaa</code>" in note
    assert "the newest audit did not measure quantization" in note
    assert "At 4-bit, 128-block, round-to-nearest" in note  # the nearest block to 256, the smaller of two
    assert html.count('<circle class="point rtn"') == 4  # 64, 128, 512, 1024: per-channel diverged
    home = read(variants, "index.html")
    assert home_cells(home, "demo/requantized")[6][1] == (
        '<span class="quant">×1.45 → ×1.03</span> <span class="scheme">(128-block)</span>'
    )


def test_quantization_without_super_weights_held_out(audit_result):
    from auditor.index import ModelEntry
    from auditor.web.build import quant_chart_of
    from auditor.web.views import headline, quant_view, row

    record = MeasuredRecord.from_audit(audit_result)
    q = quantization_of(record, [(4, 512, 2.6, None, None, None), (4, None, 9.5, None, None, None)])
    held = quant_view(ModelEntry("demo/tiny-llama", [msgspec.structs.replace(record, quantization=q)]))
    assert [(r.kept.text, r.clipped.text) for r in held.rows] == [("diverged", "diverged")] * 2  # held out: measured
    record = msgspec.structs.replace(record, quantization=msgspec.structs.replace(q, held_out=[]))
    entry = ModelEntry("demo/tiny-llama", [record])
    h = headline(record)
    assert (h.label, h.text, h.fallback, h.block_label) == ("4-bit, 512-block", "×2.60", True, "512-block")
    assert not h.helps  # nothing held out

    def helps(grid) -> bool:
        return headline(msgspec.structs.replace(record, quantization=quantization_of(record, grid))).helps

    assert helps(QUANT_GRID) and not helps([(4, 256, 1.001, 1.0, 1.0, None)])  # no measurable gain
    assert not helps([(4, 256, 2.0, None, None, 3.0)])  # held out, and diverged all the same
    assert row(entry, lambda *a: []).quantized == h
    view = quant_view(entry)
    assert view.current and not view.kept and not view.clipped
    assert [(r.kept.perplexity, r.clipped.perplexity) for r in view.rows] == [(None, None)] * 2  # not measured
    bits, chart = quant_chart_of(entry.model, view)
    assert bits == 4 and chart.count("<polyline") == 1 and chart.count("<circle") == 2
    assert 'class="diverged' not in chart
    one = msgspec.structs.replace(record.quantization, rows=record.quantization.rows[:1])
    assert (
        quant_chart_of(
            entry.model, quant_view(ModelEntry(entry.model, [msgspec.structs.replace(record, quantization=one)]))
        )[1]
        == ""
    )
    assert headline(msgspec.structs.replace(record, quantization=None)) is None


def test_the_quantization_ratio_axis():
    from auditor.web.chart import ratio_ticks
    from auditor.web.views import times

    assert ratio_ticks(1.0, 4.1) == [1.0, 2.0, 3.0, 4.0]
    assert ratio_ticks(1.0, 1.12) == [1.0, 1.05, 1.1]
    assert ratio_ticks(1.0, 900.0) == [1.0, 10.0, 100.0]
    assert ratio_ticks(0.98, 30.0) == [1.0, 2.0, 5.0, 10.0, 20.0]
    assert [times(v) for v in (1.0449, 1.8, 250.0, 12345.0, None, math.inf)] == [
        "×1.04",
        "×1.80",
        "×250.0",
        "×12,345",
        "–",
        "diverged",
    ]


def test_a_diverged_ablation_sorts_as_the_most_damage(audit_result):

    from auditor.index import ModelEntry
    from auditor.web.views import row, sort_value

    record = MeasuredRecord.from_audit(audit_result)
    broken = msgspec.structs.replace(
        record, ablation=msgspec.structs.replace(record.ablation, perplexity_ablated=None, diverged=["ablated"])
    )
    measured, diverged = (row(ModelEntry("demo/tiny-llama", [r]), lambda *a: []) for r in (record, broken))
    assert sort_value(measured.damage) == repr(record.ablation.damage) and record.ablation.damage > 100
    assert sort_value(diverged.damage) == "Infinity"  # parseFloat reads it, and it sorts above every ratio
    assert sort_value(None) == "0"


def test_the_machine_readable_files(site):
    index = load_index(site / ".index")
    dump = json.loads(read(site, "api/v1/index.json"))
    assert (dump["schema_version"], dump["generated_at"]) == (SCHEMA_VERSION, "2026-11-22T12:00:00Z")
    assert json.loads(read(site, "api/v1/schema.json")) == index_schema()  # the schema, as generated
    assert dump == json.loads(export(index, "json", generated_at="2026-11-22T12:00:00Z"))
    model = json.loads(read(site, "api/v1/models/demo/tiny-llama.json"))
    assert (model["schema_version"], model["generated_at"], model["model"]) == (
        SCHEMA_VERSION,
        "2026-11-22T12:00:00Z",
        "demo/tiny-llama",
    )
    assert read(site, "api/v1/models/demo/tiny-llama.yaml") == read(site, ".index/demo/tiny-llama.yaml")
    rows = list(csv.DictReader(io.StringIO(read(site, "api/v1/index.csv"))))
    assert {r["generated_at"] for r in rows} == {"2026-11-22T12:00:00Z"}
    for line in read(site, "api/v1/SHA256SUMS").splitlines():
        digest, name = line.split("  ")
        assert hashlib.sha256((site / "api/v1" / name).read_bytes()).hexdigest() == digest
    atom = "{http://www.w3.org/2005/Atom}"
    feed = ET.parse(site / "feed.xml").getroot()
    updated = [e.findtext(f"{atom}updated") for e in feed.iter(f"{atom}entry")]
    assert updated == sorted(updated, reverse=True) and updated[0].startswith("2026-11-22T")
    assert feed.find(f"{atom}entry/{atom}link").get("href").startswith(BASE_URL + "models/")
    ids = [e.findtext(f"{atom}id") for e in feed.iter(f"{atom}entry")]
    assert len(set(ids)) == len(ids) == len(updated)  # the seed has reported records of one day: still unique
    urls = [
        u.text
        for u in ET.parse(site / "sitemap.xml").getroot().iter("{http://www.sitemaps.org/schemas/sitemap/0.9}loc")
    ]
    assert BASE_URL in urls and BASE_URL + "models/demo/tiny-llama/" in urls


def test_a_build_for_a_bare_path_leaves_out_the_feed_and_sitemap(tmp_path):
    out = build_site(tmp_path / "site", base_url="/", index_root=REPO / "index", queue_file=None).out
    assert not (out / "feed.xml").exists() and not (out / "sitemap.xml").exists()  # Atom needs absolute ids
    assert "feed.xml" not in read(out, "index.html")
    assert check_site(out) == []


def test_a_build_never_overwrites_something_else(tmp_path):
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.tex").write_text("years of work")
    with pytest.raises(UsageError, match="not empty and not a previous site build"):
        build_site(tmp_path / "precious", index_root=REPO / "index", queue_file=None)
    assert (tmp_path / "precious" / "thesis.tex").exists()
    with pytest.raises(UsageError, match="must be an http"):
        build_site(tmp_path / "out", base_url="ftp://example.org/", index_root=REPO / "index", queue_file=None)


@pytest.mark.parametrize(
    "damage",
    [b"{not json", b'{"format": 3, "tool_version": "0"}\nkey\tmodel\t[\t{"trunc', b"\x80\x04\x95pickle", b""],
    ids=["not JSON", "truncated", "binary", "empty"],
)
def test_a_damaged_cache_left_by_an_older_version_changes_nothing(tmp_path, monkeypatch, capsys, damage):
    # Issue 13: a damaged ~/.cache/superweight/index-*.jsonl made every build an "internal error: JSONDecodeError".
    # The index is read afresh by each build since the typed models: no cache is read or written any more.
    from auditor.cli import main

    cache = tmp_path / "cache" / "superweight"
    cache.mkdir(parents=True)
    (cache / "index-0123456789abcdef.jsonl").write_bytes(damage)
    for name, value in {"XDG_CACHE_HOME": cache.parent, "SUPERWEIGHT_CACHE": cache, "HOME": tmp_path}.items():
        monkeypatch.setenv(name, str(value))

    assert main(["site", "build", "--out", str(tmp_path / "out"), "--index", str(REPO / "index")]) == 0

    assert "error" not in capsys.readouterr().err
    assert [p.name for p in cache.iterdir()] == ["index-0123456789abcdef.jsonl"]
    assert (cache / "index-0123456789abcdef.jsonl").read_bytes() == damage
    assert check_site(tmp_path / "out") == []


# -- in a real browser --------------------------------------------------------------------------------


def browser_path() -> str | None:
    return os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("google-chrome")


@pytest.fixture(scope="module")
def served(site, tmp_path_factory):
    yield from serve(site, tmp_path_factory.mktemp("www"))


def serve(site: Path, root: Path):
    """The site served over HTTP from 127.0.0.1 under /sub/, as GitHub Pages serves a project site."""
    (root / "sub").symlink_to(site)
    handler = functools.partial(Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/sub/"
    server.shutdown()


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def page(served):
    executable = browser_path()
    if executable is None:
        if os.environ.get("CI"):
            pytest.fail("chromium must be installed: see .ci/run")
        pytest.skip("no chromium (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    args = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ]
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=args)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.errors = []
        page.on("console", lambda m: page.errors.append(m.text) if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: page.errors.append(str(e)))
        yield page
        browser.close()


def test_home_loads_without_console_errors_and_filters(page, served):
    page.goto(served)
    page.screenshot(path=str(ARTIFACTS / "home.png"), full_page=True)
    assert page.errors == []
    visible = "#models tbody tr"
    assert page.locator(visible).count() == 15
    assert not page.locator("button.more").is_visible()  # every row fits on the first page
    page.fill("#filter-text", "llama-7b")
    expect(page.locator(visible)).to_have_count(1)  # (no wait_for_function: the CSP forbids eval, rightly)
    assert page.locator(visible).first.locator("td").first.inner_text() == "huggyllama/llama-7b"
    page.fill("#filter-text", "")
    page.select_option("#filter-verdict", "reported")
    expect(page.locator(visible)).to_have_count(11)
    expect(page.locator("#filter-count")).to_have_text("11 models")
    page.screenshot(path=str(ARTIFACTS / "home-filtered.png"), full_page=True)
    page.select_option("#filter-verdict", "")
    page.click("#models thead th:nth-child(1) button")
    firsts = page.locator("#models tbody tr td:first-child").all_inner_texts()
    assert firsts == sorted(firsts, key=natural)  # llama-7b, llama-13b, llama-30b
    page.click("#models thead th:nth-child(1) button")
    assert page.locator("#models tbody tr td:first-child").all_inner_texts() == sorted(
        firsts, key=natural, reverse=True
    )
    quantized = page.locator("#models thead th:nth-child(7)")
    quantized.locator("button").click()
    quantized.locator("button").click()  # descending: the models with figures first
    expect(quantized).to_have_attribute("aria-sort", "descending")
    firsts = page.locator("#models tbody tr td:first-child").all_inner_texts()
    assert set(firsts[:2]) == {"demo/tiny-llama", "other/copy"}
    assert page.locator("#models tbody tr:first-child td:nth-child(7)").inner_text() == "×1.80 → ×1.05"
    page.fill("#filter-text", "×1.80")  # the column's text is searchable too
    expect(page.locator(visible)).to_have_count(2)
    page.fill("#filter-text", "")
    assert page.errors == []


@pytest.fixture(scope="module")
def long_site(tmp_path_factory) -> Path:
    """300 models: more than the script puts in the table at once."""
    work = tmp_path_factory.mktemp("long")
    weight = [SuperWeight(2, 3968, 7003, shape=(4096, 11008), module="model.layers.2.mlp.down_proj")]
    for i in range(300):
        record = ReportedRecord(
            revision=None,
            date="2026-11-20",
            citation="A paper",
            architecture="LlamaForCausalLM",
            num_layers=32,
            super_weights=weight,
        )
        append_record(f"org/model-{i}", record, root=work / "index")
    return build_site(work / "_site", base_url=BASE_URL, index_root=work / "index", queue_file=None).out


@pytest.fixture(scope="module")
def long_served(long_site, tmp_path_factory):
    yield from serve(long_site, tmp_path_factory.mktemp("www-long"))


def test_a_long_table_shows_a_page_of_matches_until_asked_for_all(page, long_served):
    page.goto(long_served)
    rows, more = page.locator("#models tbody tr"), page.locator("button.more")
    assert rows.count() == 250
    expect(page.locator("#filter-count")).to_have_text("300 models")
    expect(more).to_have_text("Show all 300 models")
    page.fill("#filter-text", "model-25")  # model-25 and model-250 to model-259
    expect(rows).to_have_count(11)
    expect(more).to_be_hidden()
    page.fill("#filter-text", "")
    expect(rows).to_have_count(250)
    page.click("#models thead th:nth-child(1) button")
    assert rows.first.locator("td").first.inner_text() == "org/model-0"  # sorted over all 300, not the page
    more.click()
    expect(rows).to_have_count(300)
    expect(more).to_be_hidden()
    firsts = rows.locator("td:first-child").all_inner_texts()
    assert firsts == [f"org/model-{i}" for i in range(300)]  # all 300, in natural order
    assert page.errors == []


def natural(text: str) -> list:
    """Sort key for text as people read it (numbers by value), as the table script sorts."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def test_a_model_page_shows_its_chart(page, served):
    page.goto(served)
    page.click("text=demo/tiny-llama")
    page.wait_for_url("**/sub/models/demo/tiny-llama/index.html")
    chart = page.locator("svg.profile")
    assert chart.is_visible() and chart.bounding_box()["width"] > 300
    assert page.locator("svg.profile polyline.output").count() == 1
    page.screenshot(path=str(ARTIFACTS / "model.png"), full_page=True)
    assert page.errors == []
    page.click("text=JSON")  # (Chromium then asks the origin's root for a favicon: not part of the site)
    assert json.loads(page.inner_text("body"))["model"] == "demo/tiny-llama"


def test_the_page_works_without_javascript(served, page):
    context = page.context.browser.new_context(java_script_enabled=False)
    plain = context.new_page()
    plain.goto(served)
    assert plain.locator("#models tbody tr").count() == 15
    assert not plain.locator("#filters").is_visible()  # the controls need the script; the table does not
    plain.click("text=Confirmed (2)")
    assert plain.locator("#models tbody tr").count() == 2
    context.close()


def computed(locator, prop: str) -> str:
    return locator.evaluate(f"e => getComputedStyle(e).{prop}")


def test_the_site_opened_from_disk_is_styled_and_its_links_work(page, site):
    """What a reader gets by opening index.html from a file manager: no server, no base path."""
    page.errors.clear()
    page.goto(site.joinpath("index.html").as_uri())
    assert computed(page.locator("header.site"), "backgroundColor") == "rgb(31, 58, 95)"  # the stylesheet loaded
    assert page.locator("#filters").is_visible()  # and the table script ran
    page.click("text=demo/tiny-llama")
    page.wait_for_url(site.joinpath("models/demo/tiny-llama/index.html").as_uri())
    output = page.locator("svg.profile polyline.output")
    assert (computed(output, "fill"), computed(output, "stroke")) == ("none", "rgb(207, 34, 46)")
    page.screenshot(path=str(ARTIFACTS / "model-from-disk.png"), full_page=True)
    page.click("header.site >> text=About")
    page.wait_for_url(site.joinpath("about/index.html").as_uri())
    assert page.locator("h1").inner_text()
    assert page.errors == []


def test_the_chart_draws_without_the_stylesheet(page, site, tmp_path):
    bare = shutil.copytree(site, tmp_path / "bare", symlinks=True)
    for css in (bare / "assets").glob("*.css"):
        css.unlink()
    page.goto(bare.joinpath("models/demo/tiny-llama/index.html").as_uri())
    page.errors.clear()  # the missing stylesheet's own error: removing it is the point
    lines = page.locator("svg.profile polyline")
    assert [(computed(line, "fill"), computed(line, "strokeWidth")) for line in lines.all()] == [("none", "2px")] * 2
    shade = page.locator("svg.profile rect.marked")
    assert computed(shade, "fillOpacity") == "0.25" and computed(shade, "fill") == "rgb(244, 180, 0)"
    page.screenshot(path=str(ARTIFACTS / "model-without-css.png"), full_page=True)

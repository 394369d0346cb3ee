"""Benchmark: loading an index of 10,000 models, and the candidates for doing it fast, side by side.

    python benchmarks/bench_index.py [--models 10000]

Writes N model files, each with one realistic measured record (two super weights, a 32-layer profile, the
full ablation), then times, cold (no cache of any kind):

- `load_index` as it is: turboyaml (a YAML 1.2 reader in Rust) and msgspec, then the index rules;
- the strict path every file took before, and still takes when the fast one declines: yamlio (libyaml,
  plus its checks), the JSON Schema (jsonschema-rs), the model and the rules;
- each stage alone: parsing with libyaml (yamlio), turboyaml and any other reader installed (yaml-rs,
  ryaml, rapidyaml), and validating with jsonschema-rs or msgspec;
- a validated per-file cache keyed by a content hash (MessagePack of the typed entries): what a warm
  load would cost with one;
- one `lookup`, and an `export` to JSON.

Target: loading 10,000 models under a second. Reported, never asserted.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import tempfile
import time
from pathlib import Path

import msgspec
import turboyaml

from auditor import yamlio
from auditor.index import MeasuredRecord, ModelEntry, export, load_index, lookup
from auditor.index.checks import check_index, check_text, entry_problems, schema_problems
from auditor.index.entries import DetectionSummary, Profile, Software, entry_from_dict, render_entry
from auditor.index.store import gc_paused, read_plain
from auditor.records import Ablation, DetectionSettings, LayerProfile, SuperWeight, WeightPerplexity, WeightRef
from auditor.settings import DEFAULT_PROMPT


def record(i: int) -> MeasuredRecord:
    weights = [
        SuperWeight(
            layer=2,
            row=3968,
            col=7003,
            shape=(4096, 11008),
            module="model.layers.2.mlp.down_proj",
            tensor="model.layers.2.mlp.down_proj.weight",
            index=(3968, 7003),
            value=-0.72265625,
            activation=-2458.0,
            input_activation=3401.5,
            token=0,
            output_ratio=51234.5,
            input_ratio=20312.25,
            share=0.98,
        ),
        SuperWeight(
            layer=7,
            row=3968,
            col=453,
            shape=(4096, 11008),
            module="model.layers.7.mlp.down_proj",
            tensor="model.layers.7.mlp.down_proj.weight",
            index=(3968, 453),
            value=0.5,
            activation=812.0,
            input_activation=1624.0,
            token=0,
            output_ratio=9000.0,
            input_ratio=8000.0,
            share=0.9,
        ),
    ]
    return MeasuredRecord(
        revision=f"{i:040x}",
        date="2026-11-22T07:00:00Z",
        tool_version="0.1.0",
        architecture="LlamaForCausalLM",
        model_type="llama",
        num_layers=32,
        num_parameters=6_738_415_616,
        dtype="bfloat16",
        device="cuda",
        hardware="NVIDIA H100 80GB HBM3 (CUDA 12.8)",
        software=Software("2.13.0", "5.23.0"),
        elapsed_s=184.2,
        super_weights=weights,
        ablation=Ablation(
            eval_text="wikitext-2-raw-v1 (test)",
            eval_sha256="ab" * 32,
            tokens=65536,
            seq_len=2048,
            perplexity_original=5.68,
            perplexity_ablated=4820.1,
            perplexity_control=5.71,
            verdict="confirmed",
            min_damage=2.0,
            min_margin=2.0,
            control_weights=[WeightRef(2, 11, 12), WeightRef(7, 13, 14)],
            per_weight=[WeightPerplexity(2, 3968, 7003, 3100.5), WeightPerplexity(7, 3968, 453, 6.2)],
        ),
        detection=DetectionSummary(DetectionSettings(DEFAULT_PROMPT, 100.0, 100.0, 0.5, 16), passes=3, truncated=False),
        profile=Profile.of([LayerProfile(n, 1.25 + n, n * 7, 3.5 + n, n * 11) for n in range(32)]),
        weights_sha256={"model-00001-of-00002.safetensors": "cd" * 32, "model-00002-of-00002.safetensors": "ef" * 32},
    )


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def other_readers() -> dict:
    """YAML readers other than libyaml and turboyaml, where installed: name -> parse function."""
    found = {}
    for module, name, call in (
        ("yaml_rs", "yaml-rs", lambda m, t: m.loads(t)),
        ("ryaml", "ryaml", lambda m, t: m.loads(t)),
        ("ryml", "rapidyaml", lambda m, t: m.parse_in_arena(t.encode())),
    ):
        try:
            m = importlib.import_module(module)
        except ImportError:
            continue
        found[name] = lambda t, m=m, call=call: call(m, t)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=10_000)
    args = parser.parse_args()
    rows: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "index"
        text = render_entry(ModelEntry("org/model", [record(0)]))
        texts = []
        for i in range(args.models):
            org = root / f"org{i % 100}"
            org.mkdir(parents=True, exist_ok=True)
            model = f"org{i % 100}/model-{i}"
            texts.append((f"{model}.yaml", text.replace("model: org/model", f"model: {model}", 1)))
            (org / f"model-{i}.yaml").write_text(texts[-1][1])
        size = sum(len(t) for _, t in texts)
        paths = [p for p, _ in texts]

        def measure(name: str, fn) -> object:
            result, seconds = timed(fn)
            rows.append((name, seconds))
            return result

        index = measure("load_index, cold: turboyaml + msgspec + rules", lambda: load_index(root))
        with gc_paused():
            measure(
                "before: yamlio + JSON Schema + model + rules",
                lambda: [check_text(t, p, canonical=False) for p, t in texts],
            )
            data = measure(
                "  parse only: yamlio (libyaml + strict checks)", lambda: [yamlio.load(t, p) for p, t in texts]
            )
            measure("  parse only: turboyaml", lambda: [turboyaml.load(t, strict=True) for _, t in texts])
            for name, parse in other_readers().items():
                measure(f"  parse only: {name}", lambda parse=parse: [parse(t) for _, t in texts])
            measure("  validate only: JSON Schema (jsonschema-rs)", lambda: [schema_problems(d, "x") for d in data])
            measure("  validate and type: msgspec", lambda: [entry_from_dict(d) for d in data])
            # The floor of a cold load: reading the files, and building the typed records from the fastest
            # form there is (MessagePack, no parsing), which any reader pays whatever parses the text.
            measure(
                "  read only: every file (open, fstat, one read)", lambda: [read_plain(f"{root}/{p}") for p, _ in texts]
            )
            packed = msgspec.msgpack.encode(list(index))
            measure(
                "  type only: msgspec from MessagePack", lambda: msgspec.msgpack.decode(packed, type=list[ModelEntry])
            )
            measure(
                "  rules only: each file's, then across files",
                lambda: (
                    [entry_problems(e, f"{e.model}.yaml") for e in index],
                    check_index({e.model: e for e in index}),
                ),
            )
            # The one route under a second here: files in YAML 1.2's JSON subset, parsed and typed at once.
            # A change of the format people read and review: measured, not made.
            as_json = Path(tmp) / "json"
            for (p, _), e in zip(texts, index, strict=True):
                (as_json / p).parent.mkdir(parents=True, exist_ok=True)
                (as_json / p).write_bytes(msgspec.json.encode(e))
            decoder = msgspec.json.Decoder(ModelEntry, strict=True)
            measure(
                "if the files were JSON (a YAML subset): read, type, rules",
                lambda: [entry_problems(decoder.decode(read_plain(f"{as_json}/{p}")[0]), p) for p in paths],
            )

            def keys() -> list[str]:
                return [hashlib.blake2b(p.encode() + t.encode(), digest_size=16).hexdigest() for p, t in texts]

            cache = msgspec.msgpack.encode(dict(zip(keys(), index, strict=True)))
            warm = lambda: (keys(), msgspec.msgpack.decode(cache, type=dict[str, ModelEntry]))  # noqa: E731
            measure("  a content-hash cache, warm: hash every file + decode", warm)
        measure("lookup of one model", lambda: lookup("ORG42/model-42", root=root))
        measure("export to JSON", lambda: export(index, "json"))
    print(f"{args.models:,} model files, {size / 2**20:.1f} MiB of YAML ({size // args.models:,} bytes each)")
    for name, seconds in rows:
        print(f"{name:58s} {seconds:7.3f} s")


if __name__ == "__main__":
    main()

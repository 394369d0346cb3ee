"""A base model's super weights looked up in its derivatives by range reads: a GGUF conversion and
fine-tune stand-ins, from local files and from the Hub stand-in, counting the bytes read."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from auditor import derivatives, gguf_read, synthetic
from auditor.cli import main
from auditor.errors import UsageError
from auditor.hub import RemoteFile
from auditor.index import MeasuredRecord, append_record
from auditor.ranges import LocalReader


@pytest.fixture(scope="module")
def base(build_checkpoint):
    """The planted llama (layer 1 [7, 33] = -2.0) and its super weights, detected on the local checkpoint."""
    path = build_checkpoint("llama")
    return path, derivatives.base_from(str(path))


def fine_tune(src: Path, out: Path, change: float | None) -> Path:
    """A copy of the checkpoint, with the super weight and a few ordinary weights of its matrix scaled by
    (1 + change) (None: a byte-identical re-upload)."""
    out.mkdir()
    for f in src.iterdir():
        (out / f.name).write_bytes(f.read_bytes())
    if change is not None:
        tensors = load_file(src / "model.safetensors")
        down = tensors["model.layers.1.mlp.down_proj.weight"]
        down[7, 30:36] *= 1 + change
        save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    return out


def test_a_gguf_conversion_holds_each_super_weight_exactly(base, tmp_path):
    path, found = base
    gguf = synthetic.write_gguf(path, tmp_path / "model.gguf")

    check = derivatives.check_gguf(LocalReader(gguf), found)

    [w] = check.weights
    assert (w.layer, w.stored.row, w.stored.col, w.state) == (1, 7, 33, "intact")
    assert w.stored.stored == w.stored.base == -2.0 and w.stored.qtype == "F32"
    # The header's first read (64 KiB, more than this small header) and one row of 128 floats: not the file.
    assert check.bytes_read == gguf_read.FIRST_CHUNK + 128 * 4 < check.size / 10


def test_a_gguf_quant_on_the_hub_is_read_by_ranges_only(base, hub, tmp_path):
    path, found = base
    gguf = synthetic.write_gguf(path, tmp_path / "model.gguf")
    sha = hub.add_model("someone/tiny-llama-GGUF", {"tiny-llama.F32.gguf": gguf.read_bytes()})

    reader = hub_reader = derivatives.open_file("someone/tiny-llama-GGUF", "tiny-llama.F32.gguf")
    check = derivatives.check_gguf(reader, found)

    assert isinstance(hub_reader, RemoteFile) and hub_reader.revision == sha
    assert [w.state for w in check.weights] == ["intact"] and check.weights[0].stored.stored == -2.0
    gets = [r for r in hub.requests if r.method == "GET" and r.path.endswith(".gguf")]
    assert gets and all(r.headers.get("range", "").startswith("bytes=") for r in gets)
    assert len(gets) == check.reads == 2 and check.bytes_read == gguf_read.FIRST_CHUNK + 128 * 4


def test_a_hub_file_is_read_from_the_commit_its_size_came_from(hub):
    first = hub.add_model("someone/moving", {"a.gguf": b"A" * 100})
    reader = RemoteFile("someone/moving", "a.gguf")  # main, resolved to its commit now
    second = hub.add_commit("someone/moving", {"a.gguf": b"B" * 100})  # main moves on

    assert second != first and reader.revision == first
    assert reader.read(0, 4) == b"AAAA"  # not commit two's bytes under commit one's name
    assert first in reader.url


@pytest.mark.parametrize(("change", "state"), [(None, "inherited"), (0.004, "inherited"), (-0.5, "changed")])
def test_a_fine_tune_is_screened_as_inherited_or_changed(base, tmp_path, change, state):
    path, found = base
    tuned = fine_tune(path, tmp_path / "tuned", change)

    result = derivatives.screen(str(tuned), found)

    [w] = result.weights
    assert (w.layer, w.row, w.col, w.state, result.verdict) == (1, 7, 33, state, state)
    assert w.value == pytest.approx(-2.0 * (1 + (change or 0)), rel=1e-6)
    assert [c for c, _ in w.neighbours] == [31, 32, 34, 35]
    header = int.from_bytes((tuned / "model.safetensors").read_bytes()[:8], "little")
    assert result.bytes_read <= 8 + header + 64 * 1024 and result.reads <= 3  # the header and 20 bytes


def test_a_sharded_fine_tune_on_the_hub_is_screened_from_the_index_s_record(
    build_checkpoint, audit_result, hub, tmp_path
):
    index = tmp_path / "index"
    append_record("demo/tiny-llama", MeasuredRecord.from_audit(audit_result), root=index)
    sharded = build_checkpoint("llama", max_shard_size="200KB")
    files = {p.name: p.read_bytes() for p in sharded.iterdir()}
    assert "model.safetensors.index.json" in files
    hub.add_model("someone/tiny-llama-tuned", files)

    result = derivatives.screen("someone/tiny-llama-tuned", derivatives.base_from("demo/tiny-llama", index_root=index))

    [w] = result.weights
    assert w.state == "inherited" and w.file != "model.safetensors" and result.base == "demo/tiny-llama"
    header = int.from_bytes(files[w.file][:8], "little")
    assert result.bytes_read == 8 + header + 5 * 4 and result.reads == 3  # its length, the header, 5 floats


def test_the_commands_print_json_and_fail_in_one_line(base, tmp_path, capsys):
    path, _ = base
    gguf = synthetic.write_gguf(path, tmp_path / "model.gguf")

    assert main(["check-gguf", str(gguf), "--base", str(path), "--json"]) == 0
    [check] = json.loads(capsys.readouterr().out)
    assert check["weights"][0]["state"] == "intact" and check["bytes_read"] < check["size"]

    tuned = fine_tune(path, tmp_path / "tuned", -0.5)
    assert main(["screen", str(tuned), "--base", str(path), "--json"]) == 0
    screened = json.loads(capsys.readouterr().out)
    assert screened["verdict"] == "changed" and screened["weights"][0]["change"] == pytest.approx(-0.5)

    assert main(["check-gguf", str(gguf)]) == 1
    err = capsys.readouterr().err
    assert "names no base model on the Hub in its metadata: give one with --base" in err and "Traceback" not in err
    for missing in ("/nonexistent.gguf", "./nonexistent.gguf", "not a model"):  # a path, never a Hub id
        assert main(["check-gguf", missing, "--base", str(path)]) == 1
        assert f"{missing}: no such file, and not a Hub repo id" in capsys.readouterr().err
        assert main(["screen", missing, "--base", str(path)]) == 1
        assert f"{missing}: no such directory, and not a Hub repo id (org/name)" in capsys.readouterr().err
    (tmp_path / "index").mkdir()
    assert main(["screen", str(tuned), "--base", "org/unaudited", "--index", str(tmp_path / "index")]) == 1
    assert "neither a local checkpoint nor a model the index has audited" in capsys.readouterr().err


def test_a_file_shaped_unlike_the_base_model_is_refused_not_judged(base, tmp_path):
    from msgspec.structs import replace

    path, found = base
    rows, cols = found.weights[0].shape
    other = derivatives.Base("org/wider", None, [replace(w, shape=(rows, cols * 2)) for w in found.weights])
    gguf = synthetic.write_gguf(path, tmp_path / "model.gguf")
    message = rf"ffn_down\.weight is {rows} x {cols}, but org/wider's layer 1 down projection is {rows} x {cols * 2}"
    with pytest.raises(UsageError, match=message + ": not a derivative of it"):
        derivatives.check_gguf(LocalReader(gguf), other)
    tuned = fine_tune(path, tmp_path / "tuned", None)
    with pytest.raises(UsageError, match=rf"down_proj\.weight is {rows} x {cols}, but org/wider's"):
        derivatives.screen(str(tuned), other)


def test_a_base_without_values_is_refused_before_any_read(base, tmp_path):
    from msgspec.structs import replace

    path, found = base
    coordinates_only = derivatives.Base("org/cited", None, [replace(w, value=None) for w in found.weights])
    message = r"org/cited's record gives no value for layer 1 \[7, 33\]: audit it"
    with pytest.raises(UsageError, match=message):
        derivatives.check_gguf(LocalReader(synthetic.write_gguf(path, tmp_path / "model.gguf")), coordinates_only)
    with pytest.raises(UsageError, match=message):
        derivatives.screen(str(path), coordinates_only)


def split(gguf_path: Path, out: Path, parts: int = 3) -> list[Path]:
    """The file as llama.cpp's gguf-split shards it: NAME-0000K-of-0000N.gguf, the tensors in runs."""
    import gguf

    tensors = list(gguf.GGUFReader(gguf_path).tensors)[::-1]  # the first layers last
    size = -(-len(tensors) // parts)
    paths = []
    for k in range(parts):
        path = out / f"{gguf_path.stem}-{k + 1:05d}-of-{parts:05d}.gguf"
        w = gguf.GGUFWriter(str(path), "llama")
        w.add_uint16("split.no", k)
        w.add_uint16("split.count", parts)
        for t in tensors[k * size : (k + 1) * size]:
            w.add_tensor(t.name, np.array(t.data), raw_dtype=t.tensor_type)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        paths.append(path)
    return paths


def test_a_split_gguf_model_is_checked_across_its_files(base, hub, tmp_path, capsys):
    path, found = base
    whole = synthetic.write_gguf(path, tmp_path / "model.gguf")
    shards = split(whole, tmp_path)
    holding = [gguf_read.down_tensor(gguf_read.read_header(LocalReader(p)), 1) is not None for p in shards]
    assert sum(holding) == 1 and not holding[0]  # the super weight's layer is in a later file

    check = derivatives.check_gguf(LocalReader(shards[0]), found, shards=[LocalReader(p) for p in shards[1:]])
    alone = derivatives.check_gguf(LocalReader(whole), found)
    assert check.weights == alone.weights and check.shards == 3
    assert check.size == sum(p.stat().st_size for p in shards)
    assert main(["check-gguf", str(shards[1]), "--base", str(path), "--json"]) == 0  # any shard finds the rest
    [cli] = json.loads(capsys.readouterr().out)
    assert cli["file"] == shards[0].name and cli["shards"] == 3 and cli["weights"][0]["state"] == "intact"

    hub.add_model("someone/split-GGUF", {p.name: p.read_bytes() for p in [*shards, whole]})
    assert main(["check-gguf", "someone/split-GGUF", "--base", str(path), "--json"]) == 0
    assert [(c["file"], c["shards"]) for c in json.loads(capsys.readouterr().out)] == [
        (f"someone/split-GGUF/{shards[0].name}", 3),
        ("someone/split-GGUF/model.gguf", 1),
    ]
    assert derivatives.gguf_groups(["b.gguf", *(p.name for p in reversed(shards))]) == [
        ["b.gguf"],
        [p.name for p in shards],
    ]
    with pytest.raises(UsageError, match=r"model-00001-of-00003\.gguf: a split GGUF model with 2 of its 3 files"):
        derivatives.gguf_groups([p.name for p in shards[:2]])


def test_a_base_named_by_a_gguf_file_is_a_hub_model_never_a_local_path(base, tmp_path):
    from types import SimpleNamespace

    from auditor.cli.derivatives import base_of_gguf

    def header(url: str) -> SimpleNamespace:
        return SimpleNamespace(name="q.gguf", metadata={"general.base_model.0.repo_url": url})

    assert base_of_gguf(header("https://huggingface.co/demo/tiny-llama")) == "demo/tiny-llama"
    for url in ("https://huggingface.co/../cwd", "https://huggingface.co/a/..", "https://huggingface.co/a--b/c"):
        with pytest.raises(UsageError, match="names no base model on the Hub in its metadata"):
            base_of_gguf(header(url))
    path, _ = base  # a checkpoint on disk: a name from a file never loads it
    (tmp_path / "index").mkdir()
    with pytest.raises(UsageError, match="neither a local checkpoint nor a model the index has audited"):
        derivatives.base_from(str(path), index_root=tmp_path / "index", local=False)


@pytest.mark.slow
def test_the_real_gguf_holds_the_loaded_models_values_at_each_super_weight(smollm2):
    gguf = smollm2
    found = derivatives.base_from(str(gguf))  # detection on the fully loaded (dequantized) model

    check = derivatives.check_gguf(LocalReader(gguf), found)

    assert [(w.layer, w.stored.col) for w in check.weights] == [(2, 90), (2, 430), (11, 1229), (11, 1487), (28, 678)]
    assert all(w.stored.stored == w.stored.base and w.state == "intact" for w in check.weights)
    # The header (1.8 MB, mostly the vocabulary) and five rows of 48 Q4_1 blocks: 2.1 MB of the file's 98 MB.
    assert check.bytes_read - check.header_bytes < 2**20 and check.bytes_read < check.size / 40
    assert torch.tensor(check.weights[2].stored.stored) == pytest.approx(5.8757324)


def test_screens_of_hub_repos_are_recorded_in_the_index(build_checkpoint, audit_result, hub, tmp_path, capsys):
    from auditor.index import ScreenedRecord, load_index, lookup

    index = tmp_path / "index"
    append_record("demo/tiny-llama", MeasuredRecord.from_audit(audit_result), root=index)
    gguf = synthetic.write_gguf(build_checkpoint("llama"), tmp_path / "tiny-llama.F32.gguf")
    quant_sha = hub.add_model("someone/tiny-llama-GGUF", {gguf.name: gguf.read_bytes()})
    tuned = fine_tune(build_checkpoint("llama"), tmp_path / "tuned", -0.5)
    tuned_sha = hub.add_model("someone/tiny-llama-tuned", {f.name: f.read_bytes() for f in tuned.iterdir()})

    args = ["--base", "demo/tiny-llama", "--index", str(index)]
    assert main(["check-gguf", "someone/tiny-llama-GGUF", *args]) == 0  # every .gguf of the repo
    assert main(["screen", "someone/tiny-llama-tuned", *args]) == 0
    assert main(["screen", "someone/tiny-llama-tuned", *args]) == 0  # the same screen again: not twice
    assert "already recorded in" in capsys.readouterr().err

    [quant] = lookup("someone/tiny-llama-GGUF", root=index)
    assert isinstance(quant, ScreenedRecord) and quant.revision == quant_sha and quant.outcome == "intact"
    assert quant.base.model == "demo/tiny-llama" and quant.base.revision == audit_result.info.revision
    [file] = quant.files
    assert (file.file, file.format, file.qtype, file.weights[0].value) == (gguf.name, "gguf", "F32", -2.0)
    assert main(["index", "lookup", "SOMEONE/tiny-llama-gguf", "--index", str(index)]) == 0
    out = capsys.readouterr().out
    assert f"a screen against demo/tiny-llama @ {quant.base.revision[:12]}: intact" in out
    assert f"  {gguf.name}: layer 1 [7, 33] -2 -> -2: intact\n" in out
    assert main(["index", "lookup", "SOMEONE/tiny-llama-gguf", "--index", str(index), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == "someone/tiny-llama-GGUF"  # as the index spells it
    [tuned_record] = lookup("someone/tiny-llama-tuned", root=index)
    assert tuned_record.revision == tuned_sha and tuned_record.outcome == "changed"
    assert tuned_record.files[0].weights[0].state == "changed" and tuned_record.verdict is None
    assert len(load_index(index).entries) == 3  # and every file valid

    assert main(["screen", str(tuned), *args]) == 1
    assert "--index takes Hub repos only" in capsys.readouterr().err


def test_discovery_screens_derivatives_of_indexed_models_and_queues_only_what_changed(
    build_checkpoint, audit_result, hub, tmp_path, eval_text
):
    from auditor.index import ScreenedRecord, lookup
    from auditor.scheduler.config import Config
    from auditor.scheduler.discover import Cursor, discover
    from auditor.scheduler.queue import Queue
    from auditor.scheduler.report import RunReport
    from auditor.scheduler.summary import render

    index = tmp_path / "index"
    append_record("demo/tiny-llama", MeasuredRecord.from_audit(audit_result), root=index)
    base = build_checkpoint("llama")
    card = {"license": "apache-2.0", "base_model": "demo/tiny-llama"}
    gguf = synthetic.write_gguf(base, tmp_path / "tiny-llama.F32.gguf")
    hub.add_model("someone/tiny-llama-GGUF", {gguf.name: gguf.read_bytes()}, card_data=card)
    (tmp_path / "split").mkdir()
    shards = {p.name: p.read_bytes() for p in split(gguf, tmp_path / "split")}
    hub.add_model("someone/tiny-llama-split-GGUF", shards, card_data=card)
    for name, change in (("kept", 0.004), ("changed", -0.5)):
        tuned = fine_tune(base, tmp_path / name, change)
        hub.add_model(f"someone/tuned-{name}", {f.name: f.read_bytes() for f in tuned.iterdir()}, card_data=card)
    other = {p.name: p.read_bytes() for p in build_checkpoint("llama", [synthetic.Plant(2, 11, 50)]).iterdir()}
    hub.add_model("someone/tuned-elsewhere", other, card_data={**card, "base_model": "org/not-indexed"})
    queue = Queue()

    found = discover(Config(licenses=["apache-2.0"], memory_gib=1.0), queue=queue, cursor=Cursor(), index_root=index)

    assert sorted(found.screened) == [
        ("someone/tiny-llama-GGUF", "intact"),
        ("someone/tiny-llama-split-GGUF", "intact"),  # its three files read as one model
        ("someone/tuned-changed", "changed"),
        ("someone/tuned-kept", "inherited"),
    ]
    assert sorted(i.model for i in found.queued) == ["someone/tuned-changed", "someone/tuned-elsewhere"]
    [kept] = [i for i in found.skipped if i.model == "someone/tuned-kept"]
    assert kept.code == "inherited" and "screened, not audited" in kept.message
    for model in ("someone/tiny-llama-GGUF", "someone/tuned-kept", "someone/tuned-changed"):
        [record] = lookup(model, root=index)
        assert isinstance(record, ScreenedRecord) and record.base.model == "demo/tiny-llama"
    assert not (index / "someone" / "tuned-elsewhere.yaml").exists()
    summary = render(RunReport("run", "2026-11-30T00:00:00Z", discovery=found))  # the run's pull request body
    assert "\n4 derivative(s) of indexed models screened: changed 1, inherited 1, intact 2.\n" in summary
    # The budget: none screened when it is 0, and the derivatives are then handled as any other model.
    from msgspec.structs import replace

    config = Config(licenses=["apache-2.0"], memory_gib=1.0)
    config = replace(config, discover=replace(config.discover, screens=0))
    again = discover(config, queue=Queue(), cursor=Cursor(), index_root=index)
    assert again.screened == [] and "someone/tuned-kept" in [i.model for i in again.queued]
    assert len(lookup("someone/tuned-kept", root=index)) == 1  # no second screen


def test_a_screen_that_fails_unexpectedly_leaves_the_model_to_be_audited(
    build_checkpoint, audit_result, hub, tmp_path, monkeypatch, caplog
):
    from auditor.scheduler import discover as discovery
    from auditor.scheduler.config import Config
    from auditor.scheduler.queue import Queue

    index = tmp_path / "index"
    append_record("demo/tiny-llama", MeasuredRecord.from_audit(audit_result), root=index)
    tuned = fine_tune(build_checkpoint("llama"), tmp_path / "tuned", -0.5)
    files = {f.name: f.read_bytes() for f in tuned.iterdir()}
    hub.add_model("someone/tuned", files, card_data={"license": "apache-2.0", "base_model": "demo/tiny-llama"})

    def broken(*args, **kwargs):
        raise TypeError("unhashable type: 'list'")  # a reader's bug met on one hostile repo

    monkeypatch.setattr(discovery, "screen", broken)
    config = Config(licenses=["apache-2.0"], memory_gib=1.0)
    found = discovery.discover(config, queue=Queue(), cursor=discovery.Cursor(), index_root=index)

    assert found.screened == [] and [i.model for i in found.queued] == ["someone/tuned"]
    assert "someone/tuned: not screened against demo/tiny-llama (TypeError: unhashable type: 'list')" in caplog.text

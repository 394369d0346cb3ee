"""Models bigger than one device: the placement plan, and audits of a model spread over CPU memory and disk
(the two "devices" a machine without GPUs has), which must find and judge exactly what a model on one device
does, and leave every weight as it was."""

from __future__ import annotations

import gc
import hashlib
import json
from pathlib import Path

import pytest
import torch
from accelerate.utils import OffloadedWeightsLoader, PrefixedDataset
from safetensors.torch import save_file
from torch import nn

from auditor import evaltext, placement
from auditor.ablation import ablate
from auditor.cli import main
from auditor.detect import detect
from auditor.errors import OutOfMemoryError
from auditor.loading import load
from auditor.source import resolve
from auditor.synthetic import Plant

GiB = 2**30
PLANTS = {"llama": [Plant(1, 7, 33)], "gpt2": [Plant(1, 7, 33)], "mixtral": [Plant(1, 7, 33, 1)]}


# -- the plan -----------------------------------------------------------------------------------------


def test_one_device_is_not_spread():
    assert placement.plan("cpu", gpus_free=[]) == placement.Plan(torch.device("cpu"))
    assert placement.plan("auto", gpus_free=[]).device == torch.device("cpu")
    assert not placement.plan("auto", gpus_free=[80 * GiB]).spread
    assert placement.plan("cuda:1", gpus_free=[80 * GiB, 80 * GiB]) == placement.Plan(torch.device("cuda:1"))


def test_auto_spreads_over_every_gpu_within_a_share_of_its_free_memory():
    where = placement.plan("auto", gpus_free=[80 * GiB, 40 * GiB], cpu_free=500 * GiB)

    assert where.device == torch.device("cuda:0") and not where.offload
    assert where.max_memory == {0: int(80 * GiB * placement.GPU_SHARE), 1: int(40 * GiB * placement.GPU_SHARE)}


def test_offload_adds_cpu_memory_and_budgets_given_replace_the_measured_ones():
    where = placement.plan("cuda:1", offload=True, max_memory={"cuda:1": "70GiB"}, gpus_free=[GiB, GiB], cpu_free=GiB)
    assert where.max_memory == {1: 70 * GiB, "cpu": int(GiB * placement.CPU_SHARE)} and where.offload

    where = placement.plan("cpu", offload=True, max_memory={"cpu": "200KB"}, gpus_free=[])
    assert where.device == torch.device("cpu") and where.max_memory == {"cpu": 200_000}


@pytest.mark.parametrize(
    ("device_map", "described"),
    [
        (None, "cpu"),
        ({"model.embed_tokens": 0, "model.layers": 1}, "cuda:0+cuda:1"),
        ({"a": 0, "b": 1, "c": 2, "d": 3}, "cuda:0-3"),
        ({"a": 0, "b": "cpu", "c": "disk"}, "cuda:0+cpu+disk"),
        ({"model.embed_tokens": "cpu", "model.layers": "disk"}, "cpu+disk"),
    ],
)
def test_where_a_model_went_is_described_in_short(device_map, described):
    assert placement.describe(device_map, torch.device("cpu")) == described


def test_a_weight_offloaded_to_cpu_memory_is_written_in_place_and_one_on_disk_through_a_copy(tmp_path):
    """accelerate's loader looks in its state dict first (weights offloaded to CPU memory), then reads the
    safetensors file (weights offloaded to disk) afresh at each call."""
    module = nn.Linear(4, 3, bias=False, device="meta")
    in_memory = torch.arange(12.0).view(3, 4)
    loader = OffloadedWeightsLoader(state_dict={"m.weight": in_memory}, index={})
    where = placement.Offloaded(PrefixedDataset(loader, "m."), "", torch.device("cpu"))

    assert torch.equal(placement.read(module, "weight", where), in_memory)
    with placement.writable(module, "weight", where) as w:
        w[1, 2] = 0
    assert in_memory[1, 2] == 0  # the model's own copy

    file = tmp_path / "model.safetensors"
    save_file({"m.weight": torch.ones(3, 4)}, file)
    before = file.read_bytes()
    loader = OffloadedWeightsLoader(index={"m.weight": {"safetensors_file": str(file), "weight_name": "m.weight"}})
    where = placement.Offloaded(PrefixedDataset(loader, "m."), "", torch.device("cpu"))
    with placement.writable(module, "weight", where) as w:
        w[0, 0] = 0
        assert placement.read(module, "weight", where)[0, 0] == 0  # what the hook loads now
    assert placement.read(module, "weight", where)[0, 0] == 1 and not loader.state_dict
    assert file.read_bytes() == before


# -- audits of a spread model ---------------------------------------------------------------------------


def weight_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.glob("*.safetensors"))


def digest(path: Path) -> str:
    return hashlib.sha256(b"".join(f.read_bytes() for f in sorted(path.glob("*.safetensors")))).hexdigest()


def audit_once(loaded, text):
    detection = detect(loaded.model, loaded.tokenizer, progress=False)
    windows = evaltext.windows(loaded.tokenizer, text, seq_len=128, max_tokens=1024)
    ablation = ablate(loaded.model, detection, windows, eval_name="e", eval_sha256="0" * 64, progress=False)
    return detection, ablation


@pytest.mark.parametrize("family", sorted(PLANTS))
def test_a_model_spread_over_cpu_memory_and_disk_is_audited_exactly_as_on_one_device(
    family, build_checkpoint, eval_text
):
    path = build_checkpoint(family, PLANTS[family])
    text = evaltext.load(str(eval_text))
    plain = audit_once(load(resolve(str(path)), device="cpu"), text)
    before = digest(path)
    budget = {"cpu": str(int(weight_bytes(path) * 0.35))}  # the embedding fits, the decoder goes to disk

    spread = load(resolve(str(path)), device="cpu", offload=True, max_memory=budget)
    placed = spread.model.hf_device_map
    values = {name: t.clone() for name, t in placement.weights(spread.model)}
    detection, ablation = audit_once(spread, text)

    assert spread.info.device == "cpu+disk" and {"cpu", "disk"} <= set(placed.values())
    [planted] = detection.super_weights
    assert any(planted.module.startswith(m) and where == "disk" for m, where in placed.items())
    assert detection.super_weights == plain[0].super_weights
    assert [p.layer for p in detection.profile] == [p.layer for p in plain[0].profile]
    assert ablation.verdict == plain[1].verdict == "confirmed"
    # The same windows, scored the plain way when the head is on disk: equal to float32 rounding.
    assert ablation.perplexity_original == pytest.approx(plain[1].perplexity_original, rel=1e-6)
    assert ablation.perplexity_ablated == pytest.approx(plain[1].perplexity_ablated, rel=1e-6)
    assert ablation.perplexity_control == pytest.approx(plain[1].perplexity_control, rel=1e-6)
    # Every weight as it was, and the checkpoint the disk-offloaded weights are read from never written.
    assert all(torch.equal(t, values[name]) for name, t in placement.weights(spread.model))
    assert digest(path) == before
    folder = Path(spread.model._superweight_offload_dir.name)
    assert folder.is_dir()
    del spread, placed
    gc.collect()
    assert not folder.exists()


def test_the_cli_audits_a_model_over_two_devices(build_checkpoint, eval_text, capsys):
    path = build_checkpoint("llama")
    budget = f"cpu={int(weight_bytes(path) * 0.35)}"

    spread = ["--device", "cpu", "--offload", "--max-memory", budget]
    text = ["--eval-text", str(eval_text), "--max-tokens", "1024", "--seq-len", "128"]
    code = main(["audit", str(path), *spread, *text, "--json", "--quiet"])

    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["device"] == "cpu+disk" and data["ablation"]["verdict"] == "confirmed"
    assert [(w["layer"], w["row"], w["col"]) for w in data["super_weights"]] == [(1, 7, 33)]


def test_a_model_that_needs_disk_without_offload_is_out_of_memory_in_one_line(build_checkpoint, monkeypatch):
    """A spread model over budgets too small for it, and no --offload (as on GPUs too small for it): a clear
    out_of_memory that names the way out, not a loading error."""
    path = build_checkpoint("llama")
    where = placement.Plan(torch.device("cpu"), {"cpu": 1000})
    monkeypatch.setattr(placement, "plan", lambda *a, **kw: where)

    with pytest.raises(OutOfMemoryError, match=r"does not fit on the memory budget \(cpu 0\.0 GiB\); --offload"):
        load(resolve(str(path)), device="cpu")

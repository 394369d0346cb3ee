"""Round-to-nearest quantization, simulated: the quantizer against hand-computed values, and what it does to
a planted model with and without its super weight kept, the model left as it was to the bit."""

from __future__ import annotations

import json

import pytest
import torch

from auditor import evaltext, quantimpact
from auditor.cli import main
from auditor.errors import UsageError
from auditor.index import MeasuredRecord
from auditor.index.entries import entry_from_dict, record_to_dict
from auditor.quantize import clip, quantize, rtn
from auditor.records import QuantScheme, WeightRef
from auditor.scoring import Scorer
from auditor.settings import AuditSettings, SettingsError

ROW = torch.tensor([[0.0, 1.0, 2.0, 3.0, -1.0, 0.5, 4.0, 10.0]])


# -- the quantizer, by hand ---------------------------------------------------------------------------------


def test_two_bit_blocks_of_four_by_hand():
    # Block [0, 1, 2, 3]: s = 3/3 = 1, z = 0: exact. Block [-1, .5, 4, 10]: s = 11/3, z = round(3/11) = 0;
    # q = round(w/s) clamped to 0..3 = [0, 0, 1, 3], so w' = [0, 0, 11/3, 11].
    assert torch.allclose(rtn(ROW, 2, 4), torch.tensor([[0, 1, 2, 3, 0, 0, 11 / 3, 11]]))


def test_two_bit_per_channel_by_hand():
    # One block for the row: s = 11/3, z = 0; q = round([0, .27, .55, .82, -.27, .14, 1.09, 2.73]) = [0,0,1,1,0,0,1,3].
    s = 11 / 3
    assert torch.allclose(rtn(ROW, 2), torch.tensor([[0, 0, s, s, 0, 0, s, 3 * s]]))
    assert torch.equal(rtn(ROW, 2), rtn(ROW, 2, 8)) and torch.equal(rtn(ROW, 2), rtn(ROW, 2, 1024))


def test_a_row_that_does_not_divide_into_blocks_ends_in_a_shorter_one():
    # [0, 1, 2]: s = 2/3, z = 0 -> [0, 4/3, 2]. [3, -1, .5]: s = 4/3, z = round(.75) = 1 -> q = [3, 0, 1]
    # -> [8/3, -4/3, 0]. [4, 10]: s = 2, z = round(-2) = -2 -> q = [0, 3] -> [4, 10].
    expected = torch.tensor([[0, 4 / 3, 2, 8 / 3, -4 / 3, 0, 4, 10]])
    assert torch.allclose(rtn(ROW, 2, 3), expected)


def test_stacked_matrices_equal_blocks_keep_their_values_and_the_dtype_is_kept():
    experts = torch.stack([ROW, 2 * ROW])  # [expert, out, in]
    assert torch.allclose(rtn(experts, 2, 4), torch.stack([rtn(ROW, 2, 4), rtn(2 * ROW, 2, 4)]))
    flat = torch.full((2, 4), 0.37)
    assert torch.equal(rtn(flat, 4, 2), flat)  # no range: kept (s would be 0)
    half = ROW.to(torch.bfloat16)
    assert rtn(half, 4, 4).dtype == torch.bfloat16
    assert (rtn(ROW, 8) - ROW).abs().max() <= 11 / 255 / 2 + 1e-6  # within half an 8-bit step of the range


def test_chunks_change_nothing(monkeypatch):
    from auditor import quantize as module

    w = torch.randn(3, 5, 40, generator=torch.Generator().manual_seed(0))
    whole = rtn(w, 4, 16), clip(w, 1.5)
    monkeypatch.setattr(module, "CHUNK", 50)  # one row at a time, and 50-element pieces for the statistics
    assert torch.equal(rtn(w, 4, 16), whole[0]) and torch.allclose(clip(w, 1.5), whole[1])


def test_a_held_out_weight_is_excluded_from_its_blocks_range_and_restored_exactly():
    # Block [-1, .5, 4, (10 held: 0)]: s = 5/3, z = round(.6) = 1 -> q = [0, 1, 3, 1] -> [-5/3, 0, 10/3, 0],
    # then 10 back in its place.
    out = quantize(ROW, 2, 4, held=[(0, 7)])
    assert torch.allclose(out, torch.tensor([[0, 1, 2, 3, -5 / 3, 0, 10 / 3, 10]]))
    assert out[0, 7] == 10 and ROW[0, 7] == 10  # the input is not changed


def test_clipping_is_to_mean_plus_minus_z_standard_deviations():
    w = torch.tensor([0.0, 0.0, 0.0, 0.0, 10.0])  # mean 2, std (n-1) sqrt(20)
    assert torch.allclose(clip(w, 1.0), torch.tensor([0, 0, 0, 0, 2 + 20**0.5]))
    held = quantize(torch.tensor([[0.0, 0.0, 0.0, 0.0, 10.0, -9.0]]), 8, held=[(0, 4)], clip_z=1.0)
    assert held[0, 4] == 10 and held[0, 5] > -9  # the held weight escapes the clipping; the other does not
    experts = torch.stack([w.reshape(1, 5), 100 * w.reshape(1, 5)])  # each matrix by its own statistics
    assert torch.allclose(clip(experts, 1.0), torch.stack([clip(w, 1.0), clip(100 * w, 1.0)]).reshape(2, 1, 5))


# -- on a planted model --------------------------------------------------------------------------------------


@pytest.fixture
def crowded(build_checkpoint, load_checkpoint, eval_text):
    """The planted llama (super weight -2 at layer 1 [7, 33]) with two ordinary outliers, +-30, in the same
    64-input block of its row but not in its 16-input block: at 4 bits and blocks of 64 or more, the grid
    step is 4 and the super weight, inside the range, rounds to 0, as zeroing it would."""
    loaded = load_checkpoint(build_checkpoint("llama"))
    with torch.no_grad():
        down = loaded.model.model.layers[1].mlp.down_proj.weight
        down[7, 50], down[7, 60] = 30.0, -30.0
    text = evaltext.load(str(eval_text))
    windows = evaltext.windows(loaded.tokenizer, text, seq_len=128, max_tokens=1024)
    calibration = evaltext.calibration(loaded.tokenizer, text, windows, tokens=128)
    return loaded, windows, calibration


def test_large_blocks_destroy_a_super_weight_and_holding_it_out_saves_it(crowded):
    loaded, windows, calibration = crowded
    model = loaded.model
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    original = Scorer(model, windows, [], cache_bytes=0, progress=False).perplexity()

    q = quantimpact.measure(
        model,
        windows,
        calibration,
        [WeightRef(1, 7, 33)],
        perplexity_original=original,
        schemes=["4:16", "4:64", "4:channel", "8:channel"],
        progress=False,
    )

    small, large, channel, eight = q.rows
    assert [r.scheme for r in q.rows] == [QuantScheme(4, 16), QuantScheme(4, 64), QuantScheme(4), QuantScheme(8)]
    assert small.rtn < 1.05 * original and eight.rtn < 1.05 * original  # the super weight survives these
    for row in (large, channel):
        assert row.rtn is None or row.rtn > 10 * original  # rounded to 0: the model breaks
        assert row.rtn_sw < 1.05 * original and row.rtn_sw_clip <= 1.05 * original  # held out: saved
    assert q.held_out == [WeightRef(1, 7, 33)] and q.perplexity_original == original
    assert q.settings.calibration_tokens == calibration.numel() == 128
    assert all(row.clip_z is None or row.clip_z in quantimpact.CLIP_Z for row in q.rows)
    # The model as it was, to the bit: quantized copies were made per call and never written back.
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())
    assert Scorer(model, windows, [], cache_bytes=0, progress=False).perplexity() == original


def test_without_super_weights_only_plain_rtn_is_measured(crowded):
    loaded, windows, calibration = crowded
    q = quantimpact.measure(
        loaded.model, windows, calibration, [], perplexity_original=1.0, schemes=["8:channel"], progress=False
    )
    [row] = q.rows
    assert row.rtn is not None and (row.rtn_sw, row.rtn_sw_clip, row.clip_z) == (None, None, None)
    assert q.settings.clip_z == [] and q.settings.calibration_tokens == 0


def test_the_head_and_embeddings_are_quantized_only_when_asked(crowded):
    model = crowded[0].model
    plain = quantimpact.targets(model, [])
    both = quantimpact.targets(model, [], ["head", "embeddings"])
    assert model.lm_head not in {t.module for t in plain} and model.model.embed_tokens not in {t.module for t in plain}
    assert {t.module for t in both} - {t.module for t in plain} == {model.lm_head, model.model.embed_tokens}
    assert len(plain) == 4 * 7  # q, k, v, o, gate, up, down in each of 4 layers


def test_super_weights_are_held_in_the_down_projections_a_module_pattern_names(build_checkpoint, load_checkpoint):
    from auditor.detect import detect

    lm = load_checkpoint(build_checkpoint("llama"))
    for layer in lm.model.model.layers:  # a layout the built-in table does not know: mlp.w_out
        mlp = layer.mlp
        mlp.w_out = mlp.down_proj
        del mlp.down_proj
        mlp.forward = lambda x, m=mlp: m.w_out(m.act_fn(m.gate_proj(x)) * m.up_proj(x))
    pattern = r"model\.layers\.\d+\.mlp\.w_out"
    [ref] = [w.ref() for w in detect(lm.model, lm.tokenizer, module_pattern=pattern, progress=False).super_weights]

    held = [t for t in quantimpact.targets(lm.model, [ref], module_pattern=pattern) if t.held]

    assert [(t.module, t.held) for t in held] == [(lm.model.model.layers[ref.layer].mlp.w_out, [(ref.row, ref.col)])]


def test_an_offloaded_model_is_refused_in_one_line(build_checkpoint, eval_text):
    from auditor.loading import load
    from auditor.source import resolve

    path = build_checkpoint("llama")
    size = sum(f.stat().st_size for f in path.glob("*.safetensors"))
    loaded = load(resolve(str(path)), device="cpu", offload=True, max_memory={"cpu": str(size // 3)})
    windows = torch.zeros(1, 8, dtype=torch.long)
    with pytest.raises(UsageError, match="cannot run with --offload"):
        quantimpact.measure(loaded.model, windows, windows, [], perplexity_original=1.0, progress=False)


# -- in an audit, in the record and on the command line -------------------------------------------------------


def test_an_audit_records_the_quantization_figures_in_the_index(offline_cache, eval_text):
    from auditor.audit import audit

    settings = AuditSettings(
        device="cpu",
        eval_text=str(eval_text),
        max_tokens=512,
        seq_len=128,
        quantize_impact="on",
        quant_schemes=["4:32", "8:channel"],
    )
    result = audit("demo/tiny-llama", settings=settings, progress=False)

    q = result.quantization
    assert [r.scheme.label for r in q.rows] == ["4-bit, 32-block", "8-bit, per-channel"]
    assert q.held_out == [w.ref() for w in result.judged()[0]] and q.tokens == result.ablation.tokens
    assert q.perplexity_original == result.ablation.perplexity_original
    record = MeasuredRecord.from_audit(result)
    data = {"schema_version": 4, "model": "demo/tiny-llama", "records": [record_to_dict(record)]}
    assert entry_from_dict(json.loads(json.dumps(data))).records == [record]  # through the index's own shape
    assert result.to_json()["quantization"]["rows"][0]["bits"] == 4
    # `gpu`, the scheduled job's default, measures nothing on a CPU.
    cpu = audit("demo/tiny-llama", settings=AuditSettings(device="cpu", eval_text=str(eval_text), max_tokens=512))
    assert cpu.quantization is None


def test_quantize_impact_on_the_command_line(build_checkpoint, eval_text, capsys):
    args = ["quantize-impact", str(build_checkpoint("llama")), "--eval-text", str(eval_text), "--max-tokens", "512"]
    args += ["--seq-len", "128", "--quant-schemes", "4:64,8:channel", "--quiet"]

    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Round-to-nearest weight quantization" in out and "super weights kept: layer 1 [7, 33]" in out
    assert "4-bit, 64-block" in out and "8-bit, per-channel" in out

    assert main([*args, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [(r["bits"], r.get("block")) for r in data["quantization"]["rows"]] == [(4, 64), (8, None)]

    with pytest.raises(SystemExit):
        main([*args[:2], "--quant-schemes", "4:0"])
    assert "'4:0' is not BITS:BLOCK" in capsys.readouterr().err


def test_quantization_settings_are_checked():
    with pytest.raises(SettingsError, match="quant_schemes: '9:64' is not BITS:BLOCK"):
        AuditSettings(quant_schemes=["9:64"])
    with pytest.raises(SettingsError, match="quantize_impact 'yes' is not off, on or gpu"):
        AuditSettings(quantize_impact="yes")


def test_the_scheduled_job_measures_on_gpus_by_default_and_a_flag_turns_it_off(tmp_path, monkeypatch):
    from auditor.scheduler import runner
    from auditor.scheduler.config import Config

    assert Config().audit.quantize_impact == "gpu"
    seen = []

    def run(repo, config, **kw):
        seen.append(config.audit.quantize_impact)
        raise KeyboardInterrupt  # enough: the config the job would run with is known (the CLI says "interrupted")

    monkeypatch.setattr(runner, "run", run)
    for flags in ([], ["--no-quantize-impact"]):
        main(["run", "--repo", str(tmp_path), "--no-discover", *flags])
    assert seen == ["gpu", "off"]

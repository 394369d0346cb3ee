"""Ablation: perplexity with the detected weights zeroed, against a control, and the verdict."""

from __future__ import annotations

import json
import math

import pytest
import torch
from msgspec.structs import replace

from auditor import evaltext
from auditor.ablation import ablate, control_weights, perplexity
from auditor.detect import detect
from auditor.errors import EvalTextError
from auditor.layout import find_down_projections
from auditor.records import AuditResult, Environment, WeightRef
from auditor.synthetic import Plant
from auditor.verdict import judge


def run_ablation(lm, text_path, **kw):
    text = evaltext.from_file(text_path)
    windows = evaltext.windows(lm.tokenizer, text, seq_len=256, max_tokens=2048)
    detection = detect(lm.model, lm.tokenizer, progress=False)
    return detection, ablate(
        lm.model, detection, windows, eval_name=text.name, eval_sha256=text.sha256, progress=False, **kw
    )


def test_confirmed_when_the_planted_weight_matters(build_checkpoint, load_checkpoint, eval_text):
    lm = load_checkpoint(build_checkpoint("llama"))

    _, result = run_ablation(lm, eval_text)

    assert result.verdict == "confirmed"
    assert result.damage > 100  # the paper's Llama-7B: about three orders of magnitude
    assert result.control_damage == pytest.approx(1.0, abs=0.05)
    # The control zeroed the planted decoy: the matrix's largest weight, which is not the super weight.
    assert result.control_weights == [WeightRef(1, 8, 97)]
    assert result.tokens == 2048 and result.seq_len == 256
    assert result.eval_text == "file:eval.txt"


def test_not_confirmed_when_the_planted_weight_does_not_matter(build_checkpoint, load_checkpoint, eval_text):
    lm = load_checkpoint(build_checkpoint("llama", matters=False))

    detection, result = run_ablation(lm, eval_text)

    assert [(w.layer, w.row, w.col) for w in detection.super_weights] == [(1, 7, 33)]  # still a spike
    assert result.verdict == "not_confirmed"
    assert result.damage == pytest.approx(1.0, abs=0.05)


def test_none_found_measures_only_the_original(build_checkpoint, load_checkpoint, eval_text):
    lm = load_checkpoint(build_checkpoint("llama", []))

    _, result = run_ablation(lm, eval_text)

    assert result.verdict == "none_found"
    assert result.perplexity_ablated is None and result.perplexity_control is None
    assert result.perplexity_original > 1


def test_each_weight_alone_when_there_are_several(build_checkpoint, load_checkpoint, eval_text):
    lm = load_checkpoint(build_checkpoint("llama", [Plant(1, 7, 33), Plant(3, 20, 90)]))
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}

    _, result = run_ablation(lm, eval_text)

    assert result.verdict == "confirmed"
    assert [(w.layer, w.row, w.col) for w in result.per_weight] == [(1, 7, 33), (3, 20, 90)]
    # The two are redundant here (the head reads either one), which only the one-at-a-time figures show:
    # each alone does nothing (the screen on the first windows says so), together they break the model.
    assert all(w.screened < 1.01 * result.screen_original and w.perplexity is None for w in result.per_weight)
    assert [w.verdict for w in result.per_weight] == ["in_group", "in_group"]
    assert result.group_perplexity > 100 * result.perplexity_original
    assert result.damage > 100
    assert len(result.control_weights) == 2
    after = lm.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_control_never_zeroes_a_super_weight(build_checkpoint, load_checkpoint):
    lm = load_checkpoint(build_checkpoint("llama"))
    projections = find_down_projections(lm.model)
    matrix = lm.model.model.layers[1].mlp.down_proj.weight
    with torch.no_grad():
        matrix[7, 33] = -50.0  # now the super weight is the largest weight of its matrix

    control = control_weights(projections, [WeightRef(1, 7, 33)])

    assert control == [WeightRef(1, 8, 97)]
    # Nor another candidate (a rejected one, say, when only the proven weights are zeroed together).
    assert control_weights(projections, [WeightRef(1, 7, 33)], exclude=[WeightRef(1, 8, 97)]) != control
    assert WeightRef(1, 8, 97) not in control_weights(projections, [WeightRef(1, 7, 33)], exclude=control)


def test_perplexity_of_a_uniform_model_is_the_vocabulary_size(build_checkpoint, load_checkpoint, eval_text):
    lm = load_checkpoint(build_checkpoint("llama", []))
    with torch.no_grad():
        lm.model.lm_head.weight.zero_()  # every token equally likely
    windows = evaltext.windows(lm.tokenizer, evaltext.from_file(eval_text), seq_len=64, max_tokens=256)

    assert perplexity(lm.model, windows, progress=False) == pytest.approx(len(lm.tokenizer), rel=1e-4)


def test_perplexity_leaves_out_the_routers_auxiliary_loss(build_checkpoint, load_checkpoint, eval_text):
    overrides = {"output_router_logits": True, "router_aux_loss_coef": 0.5}  # as some MoE fine-tunes ship
    lm = load_checkpoint(build_checkpoint("mixtral", [], overrides=overrides))
    windows = evaltext.windows(lm.tokenizer, evaltext.from_file(eval_text), seq_len=64, max_tokens=256)
    ids = windows[0][None]
    with torch.no_grad():
        assert lm.model(input_ids=ids, labels=ids).aux_loss > 0  # .loss would carry it

        measured = perplexity(lm.model, windows, progress=False)
        lm.model.config.output_router_logits = False
        plain = math.exp(sum(float(lm.model(input_ids=w[None], labels=w[None]).loss) for w in windows) / len(windows))

    assert measured == pytest.approx(plain, rel=1e-4)


@pytest.mark.parametrize(
    ("original", "ablated", "control", "verdict"),
    [
        (10.0, 1000.0, 10.1, "confirmed"),
        (10.0, 19.0, 10.0, "not_confirmed"),  # not enough damage
        (10.0, 1000.0, 600.0, "not_confirmed"),  # no worse than the control
        (10.0, math.inf, 10.0, "confirmed"),  # zeroing broke the model outright
        (10.0, math.inf, math.inf, "not_confirmed"),  # nothing to compare against
        (10.0, math.nan, 10.0, "confirmed"),
    ],
)
def test_judge(original, ablated, control, verdict):
    assert judge(original, ablated, control, min_damage=2.0, min_margin=2.0) == verdict


def test_judge_thresholds_are_options():
    assert judge(10.0, 15.0, 10.0, min_damage=1.4, min_margin=1.4) == "confirmed"
    assert judge(10.0, 15.0, 10.0, min_damage=2.0, min_margin=1.4) == "not_confirmed"


class TestEvalText:
    def test_windows_are_fixed_length_and_capped(self, build_checkpoint, load_checkpoint, eval_text):
        tokenizer = load_checkpoint(build_checkpoint("llama")).tokenizer
        text = evaltext.from_file(eval_text)
        n_tokens = len(tokenizer(text.text).input_ids)

        assert evaltext.windows(tokenizer, text, seq_len=100, max_tokens=0).shape == (n_tokens // 100, 100)
        assert evaltext.windows(tokenizer, text, seq_len=100, max_tokens=350).shape == (3, 100)
        assert evaltext.windows(tokenizer, text, seq_len=100, max_tokens=10).shape == (1, 10)  # the cap holds
        short = evaltext.EvalText("short", "The river rises.")
        assert evaltext.windows(tokenizer, short, seq_len=2048, max_tokens=0).shape[0] == 1

    @pytest.mark.parametrize("content", [b"", b"  \n\t\n"])
    def test_empty_text_is_refused(self, tmp_path, content):
        path = tmp_path / "empty.txt"
        path.write_bytes(content)
        with pytest.raises(EvalTextError, match="is empty"):
            evaltext.from_file(path)

    def test_missing_and_binary_files_are_refused(self, tmp_path):
        with pytest.raises(EvalTextError, match="no such file"):
            evaltext.from_file(tmp_path / "missing.txt")
        (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00garbage\xff")
        with pytest.raises(EvalTextError, match="UTF-8"):
            evaltext.from_file(tmp_path / "bin.txt")

    def test_a_text_of_one_token_is_refused(self, build_checkpoint, load_checkpoint):
        tokenizer = load_checkpoint(build_checkpoint("llama")).tokenizer
        with pytest.raises(EvalTextError, match="at least 2"):
            evaltext.windows(tokenizer, evaltext.EvalText("x", ""), seq_len=16, max_tokens=0)  # BOS only


def test_a_diverged_loss_is_stored_named_and_judged(build_checkpoint, load_checkpoint, eval_text, monkeypatch):
    """fp16 overflow or a broken model can make the loss inf or NaN: unbounded damage, stored as null."""
    from auditor.index import MeasuredRecord, check_text
    from auditor.index.entries import ModelEntry, render_entry

    lm = load_checkpoint(build_checkpoint("llama"))
    down = lm.model.model.layers[1].mlp.down_proj  # the planted super weight is its [7, 33]
    down.register_forward_hook(lambda module, args, out: out * math.nan if module.weight[7, 33] == 0 else out)

    _, result = run_ablation(lm, eval_text)

    assert (result.verdict, result.perplexity_ablated) == ("confirmed", None)
    assert result.diverged == ["layer 1 [7, 33]", "ablated"]  # the lone candidate zeroed alone is the set zeroed
    assert result.per_weight[0].verdict == "super_weight" and result.per_weight[0].perplexity is None
    assert result.damage is None and result.perplexity_control is not None

    info = replace(lm.info, revision="a" * 40)  # as if from the Hub, so that the index takes it
    environment = Environment("0.1.0", "2", "5", "cpu", "2026-11-22T00:00:00Z", 1.0)
    audit = AuditResult(info, detect(lm.model, lm.tokenizer, progress=False), result, environment)
    assert json.loads(json.dumps(audit.to_json(), allow_nan=False))["ablation"]["damage"] is None
    text = render_entry(ModelEntry("demo/tiny-llama", [MeasuredRecord.from_audit(audit)]))
    assert check_text(text, "demo/tiny-llama.yaml")[1] == []  # the index takes it, and re-checks the verdict


def test_too_short_a_text_judges_nothing(build_checkpoint, load_checkpoint, eval_text):
    from auditor.settings import MIN_EVAL_TOKENS

    lm = load_checkpoint(build_checkpoint("llama"))
    detection = detect(lm.model, lm.tokenizer, progress=False)
    windows = evaltext.windows(lm.tokenizer, evaltext.from_file(eval_text), seq_len=64, max_tokens=MIN_EVAL_TOKENS - 64)
    with pytest.raises(
        EvalTextError, match=rf"gives 192 token\(s\) to score; judging needs at least {MIN_EVAL_TOKENS}"
    ):
        ablate(lm.model, detection, windows, eval_name="file:x", eval_sha256="0" * 64, progress=False)


def test_a_non_finite_model_in_float32_is_not_told_to_use_float32(build_checkpoint, load_checkpoint, eval_text):
    from auditor.errors import NonFiniteError

    lm = load_checkpoint(build_checkpoint("llama", []))
    with torch.no_grad():
        lm.model.lm_head.weight.fill_(float("inf"))
    windows = evaltext.windows(lm.tokenizer, evaltext.from_file(eval_text), seq_len=64, max_tokens=256)
    detection = detect(lm.model, lm.tokenizer, progress=False)
    with pytest.raises(NonFiniteError, match="not finite in float32: the model breaks on this text even in float32"):
        ablate(lm.model, detection, windows, eval_name="file:x", eval_sha256="0" * 64, progress=False)


def test_a_spike_that_does_not_matter_is_rejected_and_kept_apart(
    build_checkpoint, load_checkpoint, eval_text, tmp_path
):
    """Two candidates: the head reads the super activation of one only, so the other is a massive activation
    that zeroing proves harmless. Only the first is a super weight; the second is kept as rejected."""
    from auditor.index import MeasuredRecord, append_record, check_text
    from auditor.index.entries import ModelEntry, render_entry
    from auditor.report import render
    from auditor.web.build import build_site

    lm = load_checkpoint(build_checkpoint("llama", [Plant(1, 7, 33), Plant(3, 20, 90)]))
    with torch.no_grad():
        lm.model.lm_head.weight[:, 20] = 0  # nothing reads row 20 any more

    detection, result = run_ablation(lm, eval_text)

    assert [(w.layer, w.row, w.col, w.verdict) for w in result.per_weight] == [
        (1, 7, 33, "super_weight"),
        (3, 20, 90, "rejected"),
    ]
    first = result.per_weight[0]
    assert first.perplexity > 2 * max(first.perplexity_control, result.perplexity_original)
    assert first.control.layer == 1 and first.control not in {w.ref() for w in detection.super_weights}
    assert result.verdict == "confirmed" and len(result.control_weights) == 1  # the proven one, zeroed together

    info = replace(lm.info, revision="a" * 40)
    audit = AuditResult(info, detection, result, Environment("0.1.0", "2", "5", "cpu", "2026-11-22T00:00:00Z", 1.0))
    record = MeasuredRecord.from_audit(audit)
    assert [(w.layer, w.row) for w in record.super_weights] == [(1, 7)]
    assert [(w.layer, w.row) for w in record.rejected_candidates] == [(3, 20)]
    assert check_text(render_entry(ModelEntry("demo/tiny-llama", [record])), "demo/tiny-llama.yaml")[1] == []
    report = render(audit)
    assert "layer 3 [20, 90]" in report and "rejected" in report and "super weight" in report
    data = json.loads(json.dumps(audit.to_json()))  # what `audit --json` prints: split as the index is
    assert [(w["layer"], w["row"]) for w in data["super_weights"]] == [(1, 7)]
    assert [(w["layer"], w["row"]) for w in data["rejected_candidates"]] == [(3, 20)]

    append_record("demo/tiny-llama", record, root=tmp_path / "index")
    build_site(tmp_path / "site", index_root=tmp_path / "index", queue_file=None)
    page = (tmp_path / "site" / "models" / "demo" / "tiny-llama" / "index.html").read_text()
    assert "1 rejected candidate:" in page and "layer 3 [20, 90]" in page
    home = (tmp_path / "site" / "index.html").read_text()
    assert "L1 [7, 33]" in home and "L3 [20, 90]" not in home  # the home table lists proven weights only

"""Perplexity passes: the chunked loss, the kept layer inputs and the reuse of results change no bit of any
result; they only skip work."""

from __future__ import annotations

import pytest
import torch

from auditor import evaltext
from auditor.layout import find_down_projections
from auditor.records import WeightRef
from auditor.scoring import MAX_BATCH, Scorer, token_nll, windows_per_forward
from auditor.synthetic import common_config

VOCAB = 320

# Families whose forward does more after the head than a matrix product: the chunked head must do it too.
HEAD_TRANSFORMS = {
    "gemma2": {"final_logit_softcapping": 30.0},
    "gemma3_text": {"final_logit_softcapping": 5.0},
    "cohere": {"logit_scale": 0.25},
    "granite": {"logits_scaling": 8.0},
}


def tiny(family: str, **extra):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(family, **{**common_config("llama", VOCAB, 1, 2), **extra})
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


def plain_nll(model, windows: torch.Tensor) -> torch.Tensor:
    """Each window's summed NLL the straightforward way: full logits of one window at a time."""
    with torch.inference_mode():
        return torch.stack(
            [token_nll(model(input_ids=w[None], use_cache=False).logits[0, :-1], w[1:]).double().sum() for w in windows]
        )


@pytest.fixture
def demo(build_checkpoint, load_checkpoint, eval_text):
    """The demo model (the planted super weight is layer 1 [7, 33]) and its evaluation windows."""
    lm = load_checkpoint(build_checkpoint("llama"))
    windows = evaltext.windows(lm.tokenizer, evaltext.from_file(eval_text), seq_len=64, max_tokens=512)
    return lm.model, windows, find_down_projections(lm.model)


@pytest.mark.parametrize("family", HEAD_TRANSFORMS)
def test_the_sliced_head_applies_what_the_forward_applies_after_the_head(family):
    model = tiny(family, **HEAD_TRANSFORMS[family])
    windows = torch.randint(3, VOCAB, (2, 40), generator=torch.Generator().manual_seed(1))
    scorer = Scorer(model, windows, [], chunk_bytes=4 * 39 * 256, progress=False)

    assert scorer.chunked and scorer.vocab_step(39) == 256  # 39 scored tokens, 320 entries: 2 slices
    same_to_float32_rounding(scorer.nll(), plain_nll(model, windows))
    # The head alone is not the model's logits here: the test would catch a chunked path that skipped it.
    with torch.inference_mode():
        hidden = model.get_decoder()(input_ids=windows[:1]).last_hidden_state
        assert not torch.equal(model.lm_head(hidden), model(input_ids=windows[:1]).logits)


def same_to_float32_rounding(mine: torch.Tensor, plain: torch.Tensor) -> None:
    """Summed float32 token losses that differ at most by the rounding of a differently blocked product."""
    torch.testing.assert_close(mine, plain, rtol=1e-6, atol=0)


def test_the_sliced_loss_is_the_plain_one_to_float32_rounding_on_the_demo_model(demo):
    model, windows, projections = demo
    chunked = Scorer(model, windows, projections, chunk_bytes=4 * 63 * 256, cache_bytes=0, progress=False)
    plain = Scorer(model, windows, projections, chunk_bytes=0, cache_bytes=0, progress=False)

    assert chunked.chunked and chunked.vocab_step(63) == 256 and not plain.chunked  # 2 slices of 320
    assert torch.equal(plain.nll(), plain_nll(model, windows))
    same_to_float32_rounding(chunked.nll(), plain.nll())
    weight = [WeightRef(1, 7, 33)]
    same_to_float32_rounding(chunked.nll(weight), plain.nll(weight))
    assert chunked.perplexity(weight) > 2 * chunked.perplexity()


def test_a_head_that_disagrees_with_the_forward_is_not_used(demo, monkeypatch):
    model, windows, projections = demo
    real = Scorer.head
    monkeypatch.setattr(Scorer, "head", lambda self, *args: real(self, *args) * 1.001)

    scorer = Scorer(model, windows, projections, progress=False)

    assert not scorer.chunked and scorer.cache_bytes == 0
    assert torch.equal(scorer.nll(), plain_nll(model, windows))  # full logits, as plain_nll takes them


def test_replaying_kept_layer_inputs_changes_nothing_and_skips_the_layers_below(demo):
    model, windows, projections = demo
    zero = [WeightRef(2, 5, 9), WeightRef(3, 1, 2)]  # lowest zeroed layer: 2
    cached = Scorer(model, windows, projections, boundaries=[2, 3], cache_bytes=1 << 30, progress=False)
    plain = Scorer(model, windows, projections, cache_bytes=0, progress=False)

    assert torch.equal(cached.nll(), plain.nll())  # the original pass, which keeps the inputs
    assert set(cached.cache[2]) == set(cached.cache[3]) == set(range(len(windows)))
    run_before = cached.stats.layers_run
    assert torch.equal(cached.nll(zero), plain.nll(zero))
    assert torch.equal(cached.nll(zero[1:]), plain.nll(zero[1:]))
    # Layer 2's replay skips 2 of the 4 layers, layer 3's skips 3; each is checked once on one window.
    n = len(windows)
    assert cached.stats.layers_skipped == 2 * n + 3 * n
    assert cached.stats.layers_run - run_before == (2 * n + 2) + (1 * n + 1)


def test_the_cache_keeps_no_more_than_its_budget(demo):
    model, windows, projections = demo
    per_window = windows.shape[1] * model.config.hidden_size * 4
    scorer = Scorer(model, windows, projections, boundaries=[3], cache_bytes=3 * per_window, progress=False)

    scorer.nll()

    assert sorted(scorer.cache[3]) == [0, 1, 2] and scorer.cached_bytes == 3 * per_window
    plain = Scorer(model, windows, projections, cache_bytes=0, progress=False)
    assert torch.equal(scorer.nll([WeightRef(3, 0, 0)]), plain.nll([WeightRef(3, 0, 0)]))


def test_a_kept_input_that_does_not_replay_to_the_bit_is_dropped(demo):
    model, windows, projections = demo
    scorer = Scorer(model, windows, projections, boundaries=[2], cache_bytes=1 << 30, progress=False)
    scorer.nll()
    scorer.cache[2][0] = scorer.cache[2][0] + 1e-3  # as if the layers below did more than pass hidden states on

    zero = [WeightRef(3, 0, 0)]
    plain = Scorer(model, windows, projections, cache_bytes=0, progress=False)
    assert torch.equal(scorer.nll(zero), plain.nll(zero))
    assert 2 not in scorer.cache and scorer.cached_bytes == 0 and scorer.stats.layers_skipped == 0


def test_results_are_reused_not_recomputed(demo):
    model, windows, projections = demo
    scorer = Scorer(model, windows, projections, progress=False)
    weight = [WeightRef(1, 7, 33)]

    scorer.nll()
    scorer.nll(weight, 2)  # a screen on the first two windows
    assert scorer.stats.windows_run == len(windows) + 2
    full = scorer.perplexity(weight)  # only the other windows run
    assert scorer.stats.windows_run == 2 * len(windows)
    assert scorer.perplexity(weight) == full and scorer.perplexity(weight[::-1]) == full
    assert scorer.stats.windows_run == 2 * len(windows) and scorer.stats.passes == 3


def test_batched_windows_score_as_single_ones(demo):
    model, windows, projections = demo
    batched = Scorer(model, windows, projections, batch=3, progress=False)
    single = Scorer(model, windows, projections, progress=False)

    torch.testing.assert_close(batched.nll(), single.nll(), rtol=1e-6, atol=0)
    zero = [WeightRef(1, 7, 33)]
    torch.testing.assert_close(batched.nll(zero), single.nll(zero), rtol=1e-6, atol=0)


def test_windows_per_forward_is_one_on_cpu_and_what_fits_on_a_gpu(demo):
    model = demo[0]
    per_window = 64 * (8 * 64 + 3 * 128 + 4 * 64) * 4  # the demo model's rough activations at 64 tokens

    assert windows_per_forward(model, 64) == 1  # CPU
    assert windows_per_forward(model, 64, free_bytes=4 * 3 * per_window) == 3
    assert windows_per_forward(model, 64, free_bytes=4 * per_window // 2) == 1
    assert windows_per_forward(model, 64, free_bytes=1 << 40) == MAX_BATCH

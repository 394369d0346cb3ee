"""Detection on tiny checkpoints of every supported family, with planted super weights."""

from __future__ import annotations

import pytest
import torch
from conftest import MOE

from auditor import synthetic
from auditor.detect import detect
from auditor.errors import UnsupportedModelError
from auditor.layout import find_down_projections
from auditor.synthetic import Plant

# family -> (module of layer 1's down projection, how the stored index relates to [row, col])
LAYOUTS = {
    "llama": "model.layers.1.mlp.down_proj",
    "mistral": "model.layers.1.mlp.down_proj",
    "qwen2": "model.layers.1.mlp.down_proj",
    "qwen3": "model.layers.1.mlp.down_proj",
    "gemma": "model.layers.1.mlp.down_proj",
    "gemma2": "model.layers.1.mlp.down_proj",
    "olmo": "model.layers.1.mlp.down_proj",
    "olmo2": "model.layers.1.mlp.down_proj",
    "phi3": "model.layers.1.mlp.down_proj",
    "stablelm": "model.layers.1.mlp.down_proj",
    "gpt2": "transformer.h.1.mlp.c_proj",
    "gpt_neox": "gpt_neox.layers.1.mlp.dense_4h_to_h",
    "falcon": "transformer.h.1.mlp.dense_4h_to_h",
    "opt": "model.decoder.layers.1.fc2",
    "gptj": "transformer.h.1.mlp.fc_out",
    "mixtral": "model.layers.1.mlp.experts",
    "qwen2_moe": "model.layers.1.mlp.experts",
    "qwen3_moe": "model.layers.1.mlp.experts",
    "olmoe": "model.layers.1.mlp.experts",
}


def test_every_family_is_covered():
    assert set(LAYOUTS) == set(synthetic.FAMILIES)


@pytest.mark.parametrize("family", sorted(LAYOUTS))
def test_exact_coordinates_back(family, build_checkpoint, load_checkpoint):
    expert = 2 if family in MOE else None
    plant = Plant(layer=1, row=7, col=33, expert=expert)
    lm = load_checkpoint(build_checkpoint(family, [plant]))

    result = detect(lm.model, lm.tokenizer, progress=False)

    assert [(w.layer, w.row, w.col, w.expert) for w in result.super_weights] == [(1, 7, 33, expert)]
    sw = result.super_weights[0]
    assert sw.module == LAYOUTS[family]
    assert sw.value == pytest.approx(plant.value)
    # The stored tensor name and index really address the planted scalar, whatever the storage layout.
    assert lm.model.state_dict()[sw.tensor][sw.index].item() == pytest.approx(plant.value)
    expected_index = {"gpt2": (33, 7)}.get(family, (2, 7, 33) if expert is not None else (7, 33))
    assert sw.index == expected_index
    # The spike is real: output at the super weight's row, input at its column, carried by this weight.
    assert sw.value * sw.input_activation == pytest.approx(sw.activation, rel=0.05)
    assert sw.output_ratio >= 100 and sw.input_ratio >= 100 and sw.share > 0.9
    assert result.passes == 2 and not result.truncated


def test_largest_weight_is_a_decoy_not_the_answer(build_checkpoint, load_checkpoint):
    lm = load_checkpoint(build_checkpoint("llama"))
    matrix = lm.model.model.layers[1].mlp.down_proj.weight
    largest = divmod(int(matrix.abs().argmax()), matrix.shape[1])
    assert largest != (7, 33)  # a detector that picked the largest weight would be wrong here

    result = detect(lm.model, lm.tokenizer, progress=False)

    assert [(w.row, w.col) for w in result.super_weights] == [(7, 33)]


@pytest.mark.parametrize("family", ["llama", "gpt2", "mixtral"])
def test_two_super_weights_in_different_layers(family, build_checkpoint, load_checkpoint):
    expert = 1 if family in MOE else None
    plants = [Plant(1, 7, 33, expert), Plant(3, 20, 90, expert)]
    lm = load_checkpoint(build_checkpoint(family, plants))

    result = detect(lm.model, lm.tokenizer, progress=False)

    assert [(w.layer, w.row, w.col, w.expert) for w in result.super_weights] == [
        (1, 7, 33, expert),
        (3, 20, 90, expert),
    ]
    assert result.passes == 3


def test_several_super_weights_sharing_a_column(build_checkpoint, load_checkpoint):
    # Phi-3-mini's pattern: one input spike feeding several rows of the same layer.
    plants = [Plant(2, 5, 40), Plant(2, 12, 40, value=-1.5)]
    lm = load_checkpoint(build_checkpoint("phi3", plants))

    result = detect(lm.model, lm.tokenizer, progress=False)

    assert sorted((w.layer, w.row, w.col) for w in result.super_weights) == [(2, 5, 40), (2, 12, 40)]


@pytest.mark.parametrize("family", ["llama", "gpt2", "olmoe"])
def test_no_super_weight_planted_none_found(family, build_checkpoint, load_checkpoint):
    lm = load_checkpoint(build_checkpoint(family, []))

    result = detect(lm.model, lm.tokenizer, progress=False)

    assert result.super_weights == []
    assert result.passes == 1
    assert [p.layer for p in result.profile] == list(range(4))


def test_profile_marks_the_super_activation(build_checkpoint, load_checkpoint):
    lm = load_checkpoint(build_checkpoint("llama"))

    profile = detect(lm.model, lm.tokenizer, progress=False).profile

    assert [p.layer for p in profile] == [0, 1, 2, 3]
    top = max(profile, key=lambda p: p.max_output)
    assert (top.layer, top.output_channel, top.input_channel) == (1, 7, 33)
    assert top.max_output > 100 * max(p.max_output for p in profile if p.layer != 1)


@pytest.mark.parametrize("family", ["llama", "mixtral"])
def test_weights_are_restored_exactly(family, build_checkpoint, load_checkpoint):
    expert = 0 if family in MOE else None
    lm = load_checkpoint(build_checkpoint(family, [Plant(1, 7, 33, expert), Plant(3, 2, 9, expert)]))
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}

    result = detect(lm.model, lm.tokenizer, progress=False)

    assert len(result.super_weights) == 2
    after = lm.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_thresholds_are_options(build_checkpoint, load_checkpoint):
    lm = load_checkpoint(build_checkpoint("llama"))
    ratio = detect(lm.model, lm.tokenizer, progress=False).super_weights[0].output_ratio

    assert detect(lm.model, lm.tokenizer, min_output_ratio=ratio * 2, progress=False).super_weights == []
    assert detect(lm.model, lm.tokenizer, min_share=1.5, progress=False).super_weights == []


def test_max_super_weights_truncates(build_checkpoint, load_checkpoint):
    lm = load_checkpoint(build_checkpoint("llama", [Plant(1, 7, 33), Plant(3, 20, 90)]))

    result = detect(lm.model, lm.tokenizer, max_super_weights=1, progress=False)

    assert [(w.layer, w.row, w.col) for w in result.super_weights] == [(1, 7, 33)]
    assert result.truncated


def test_module_pattern_overrides_the_table(build_checkpoint, load_checkpoint):
    lm = load_checkpoint(build_checkpoint("gpt2"))

    result = detect(lm.model, lm.tokenizer, module_pattern=r"transformer\.h\.\d+\.mlp\.c_proj", progress=False)
    assert [(w.layer, w.row, w.col) for w in result.super_weights] == [(1, 7, 33)]

    with pytest.raises(UnsupportedModelError, match="matches no module"):
        detect(lm.model, lm.tokenizer, module_pattern=r"nothing\.here", progress=False)
    with pytest.raises(UnsupportedModelError, match="not a valid regex"):
        detect(lm.model, lm.tokenizer, module_pattern=r"(", progress=False)
    with pytest.raises(UnsupportedModelError, match="not a Linear"):
        detect(lm.model, lm.tokenizer, module_pattern=r"transformer\.h\.\d+\.mlp", progress=False)


def test_unknown_layout_names_the_modules_seen(build_checkpoint, load_checkpoint):
    lm = load_checkpoint(build_checkpoint("llama"))
    for layer in lm.model.model.layers:  # rename the down projection to something no table knows
        layer.mlp.w_out = layer.mlp.down_proj
        del layer.mlp.down_proj

    with pytest.raises(UnsupportedModelError, match=r"layer 0 of LlamaForCausalLM.*mlp\.w_out.*--module-pattern"):
        find_down_projections(lm.model)


def test_quantized_storage_is_refused(build_checkpoint, load_checkpoint):
    # On a recent GPU transformers keeps an FP8 checkpoint as fp8 codes with separate block scales: the
    # stored numbers are not the weights, so their magnitudes would mislead both detection and the control.
    lm = load_checkpoint(build_checkpoint("llama"))
    down = lm.model.model.layers[1].mlp.down_proj
    down.weight = torch.nn.Parameter(down.weight.detach().to(torch.float8_e4m3fn), requires_grad=False)

    with pytest.raises(UnsupportedModelError, match=r"mlp\.down_proj stores its weight as torch\.float8_e4m3fn"):
        find_down_projections(lm.model)


def test_a_pattern_naming_two_dense_projections_per_layer_is_refused(build_checkpoint, load_checkpoint):
    # A weight is addressed by layer, row and column: two dense matrices per layer would be ambiguous, and the
    # ablation could zero the wrong one.
    lm = load_checkpoint(build_checkpoint("llama"))
    pattern = r"model\.layers\.\d+\.(self_attn\.o_proj|mlp\.down_proj)"
    with pytest.raises(UnsupportedModelError, match="layer 0 has 2 dense down projections"):
        detect(lm.model, lm.tokenizer, module_pattern=pattern, progress=False)


def test_the_checkpoint_does_not_choose_the_attention_kernel(build_checkpoint, load_checkpoint, tmp_path):
    import json
    import shutil

    copy = shutil.copytree(build_checkpoint("llama"), tmp_path / "model")
    config = json.loads((copy / "config.json").read_text())
    config.update(attn_implementation="flash_attention_2", _attn_implementation="kernels-community/flash-attn")
    (copy / "config.json").write_text(json.dumps(config))

    lm = load_checkpoint(copy)

    assert lm.model.config._attn_implementation == "sdpa"
    assert [(w.layer, w.row, w.col) for w in detect(lm.model, lm.tokenizer, progress=False).super_weights] == [
        (1, 7, 33)
    ]


def test_a_spike_from_a_moderate_input_is_offered_and_proven(build_checkpoint, load_checkpoint, eval_text):
    """The output spike and the share decide what is offered; the input ratio is only a floor (20x)."""
    from auditor import evaltext
    from auditor.ablation import ablate

    lm = load_checkpoint(build_checkpoint("llama"))
    mlp = lm.model.model.layers[1].mlp
    with torch.no_grad():  # the same output from a thousand times smaller an input
        mlp.up_proj.weight[33, :] /= 1000
        mlp.down_proj.weight[7, 33] *= 1000

    [w] = detect(lm.model, lm.tokenizer, progress=False).super_weights
    assert (w.layer, w.row, w.col) == (1, 7, 33) and 30 < w.input_ratio < 100 and w.share > 0.9
    assert detect(lm.model, lm.tokenizer, min_input_ratio=100, progress=False).super_weights == []  # the old floor

    text = evaltext.from_file(eval_text)
    windows = evaltext.windows(lm.tokenizer, text, seq_len=256, max_tokens=1024)
    detection = detect(lm.model, lm.tokenizer, progress=False)
    result = ablate(lm.model, detection, windows, eval_name=text.name, eval_sha256=text.sha256, progress=False)
    assert [v.verdict for v in result.per_weight] == ["super_weight"]

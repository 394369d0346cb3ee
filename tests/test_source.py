"""Resolving MODEL and refusing what must not be loaded, before any weight is parsed."""

from __future__ import annotations

import json
import shutil

import pytest

from auditor import synthetic
from auditor.detect import detect
from auditor.errors import (
    CorruptCheckpointError,
    ModelNotFoundError,
    NotACheckpointError,
    PickleOnlyError,
    QuantizedModelError,
    RemoteCodeError,
    UnsupportedModelError,
)
from auditor.source import resolve


@pytest.fixture
def checkpoint_copy(build_checkpoint, tmp_path):
    """A fresh, writable copy of the tiny llama checkpoint, to damage."""
    return shutil.copytree(build_checkpoint("llama"), tmp_path / "model")


def test_a_good_checkpoint_resolves_with_its_config(checkpoint_copy):
    ckpt = resolve(str(checkpoint_copy))
    assert ckpt.source == "local" and ckpt.revision is None
    assert ckpt.config["model_type"] == "llama"
    assert ckpt.weight_files == ("model.safetensors",)


def test_missing_path(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no such file or directory"):
        resolve(str(tmp_path / "nowhere" / "model"))
    with pytest.raises(ModelNotFoundError, match="no such file"):
        resolve(str(tmp_path / "model.gguf"))


def test_directory_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(NotACheckpointError, match=r"no config\.json"):
        resolve(str(tmp_path))


def test_a_file_that_is_not_gguf(tmp_path):
    (tmp_path / "weights.safetensors").write_bytes(b"\0" * 16)
    with pytest.raises(NotACheckpointError, match=r"not a \.gguf"):
        resolve(str(tmp_path / "weights.safetensors"))
    (tmp_path / "fake.gguf").write_bytes(b"NOPE" + b"\0" * 16)
    with pytest.raises(CorruptCheckpointError, match="bad magic"):
        resolve(str(tmp_path / "fake.gguf"))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b[:100], "runs past the end|needs"),  # truncated mid-data
        (lambda b: b[:4], "shorter than its 8-byte header"),
        (lambda b: (2**40).to_bytes(8, "little") + b[8:], "runs past the end"),
        (lambda b: b[:8] + b"{not json" + b[17:], "not a valid safetensors"),
    ],
)
def test_corrupt_safetensors(checkpoint_copy, damage, message):
    weights = checkpoint_copy / "model.safetensors"
    weights.write_bytes(damage(weights.read_bytes()))
    with pytest.raises(CorruptCheckpointError, match=message):
        resolve(str(checkpoint_copy))


def test_missing_shard(build_checkpoint, tmp_path):
    sharded = shutil.copytree(build_checkpoint("llama", max_shard_size="100KB"), tmp_path / "sharded")
    shards = sorted(sharded.glob("model-*.safetensors"))
    assert len(shards) > 1
    assert resolve(str(sharded)).weight_files == tuple(s.name for s in shards)
    shards[-1].unlink()
    with pytest.raises(CorruptCheckpointError, match="missing files"):
        resolve(str(sharded))


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pt", "weights.pth"])
def test_pickle_only_checkpoint_is_refused(checkpoint_copy, name):
    (checkpoint_copy / "model.safetensors").rename(checkpoint_copy / name)
    with pytest.raises(PickleOnlyError, match="only pickle weights"):
        resolve(str(checkpoint_copy))


def test_pickle_beside_safetensors_is_ignored(checkpoint_copy):
    (checkpoint_copy / "pytorch_model.bin").write_bytes(b"\x80\x04 not loaded")
    assert resolve(str(checkpoint_copy)).weight_files == ("model.safetensors",)


def edit_config(path, **changes) -> None:
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps(config | changes))


def test_remote_code_config_is_refused(checkpoint_copy):
    edit_config(checkpoint_copy, model_type="evil_llm", auto_map={"AutoModelForCausalLM": "modeling_evil.Evil"})
    with pytest.raises(RemoteCodeError, match="trust_remote_code"):
        resolve(str(checkpoint_copy))


def test_an_auto_map_beside_a_known_model_type_loads_transformers_own_class(checkpoint_copy, load_checkpoint, tmp_path):
    # As Phi-3 and Falcon repos do: their auto_map predates transformers' own class.
    marker = tmp_path / "ran"
    (checkpoint_copy / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    edit_config(checkpoint_copy, auto_map={"AutoModelForCausalLM": "modeling_evil.LlamaForCausalLM"})

    loaded = load_checkpoint(checkpoint_copy)

    assert type(loaded.model).__module__ == "transformers.models.llama.modeling_llama"
    assert not marker.exists()
    [w] = detect(loaded.model, loaded.tokenizer, progress=False).super_weights
    assert (w.layer, w.row, w.col) == (1, 7, 33)


def test_weights_the_checkpoint_lacks_are_refused_not_left_random(checkpoint_copy, load_checkpoint):
    from safetensors.torch import load_file, save_file

    weights = load_file(checkpoint_copy / "model.safetensors")
    del weights["model.layers.0.mlp.down_proj.weight"]
    save_file(weights, checkpoint_copy / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CorruptCheckpointError, match=r"1 weight\(s\) of LlamaForCausalLM are missing"):
        load_checkpoint(checkpoint_copy)


def test_a_config_with_fewer_layers_than_the_weights_is_refused(checkpoint_copy, load_checkpoint):
    edit_config(checkpoint_copy, num_hidden_layers=3)  # the files hold 4: layer 3 would be dropped silently
    with pytest.raises(CorruptCheckpointError, match=r"tensor\(s\) of the checkpoint are not used .*model\.layers\.3"):
        load_checkpoint(checkpoint_copy)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_named(checkpoint_copy, load_checkpoint, value):
    from safetensors.torch import load_file, save_file

    weights = load_file(checkpoint_copy / "model.safetensors")
    weights["model.layers.2.mlp.up_proj.weight"][5, 17] = value
    save_file(weights, checkpoint_copy / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CorruptCheckpointError, match=r"weight model\.layers\.2\.mlp\.up_proj\.weight holds inf or NaN"):
        load_checkpoint(checkpoint_copy)


def test_a_tokenizer_larger_than_the_embedding_is_refused(checkpoint_copy, load_checkpoint):
    from auditor.loading import check_weights

    lm = load_checkpoint(checkpoint_copy)
    ids = lm.tokenizer.vocab_size
    lm.model.resize_token_embeddings(ids - 8)  # as a config.json whose vocab_size is too small loads
    wanted = rf"the tokenizer has {ids:,} ids but the model's embedding only {ids - 8:,} rows"
    with pytest.raises(CorruptCheckpointError, match=wanted):
        check_weights(lm.model, lm.tokenizer, "demo")


def test_a_pre_quantized_checkpoint_is_refused(checkpoint_copy):
    edit_config(checkpoint_copy, quantization_config={"quant_method": "fp8", "weight_block_size": [128, 128]})
    with pytest.raises(QuantizedModelError, match=r"pre-quantized \(fp8\)") as refused:
        resolve(str(checkpoint_copy))
    assert refused.value.code == "quantized"  # the code the scheduler's Hub check gives the same fact


def test_only_the_weight_files_transformers_loads_count(checkpoint_copy, build_checkpoint, tmp_path):
    shutil.copy(checkpoint_copy / "model.safetensors", checkpoint_copy / "consolidated.safetensors")  # as Mistral
    assert resolve(str(checkpoint_copy)).weight_files == ("model.safetensors",)
    (checkpoint_copy / "model.safetensors").unlink()
    with pytest.raises(NotACheckpointError, match=r"neither model\.safetensors nor model\.safetensors\.index\.json"):
        resolve(str(checkpoint_copy))


def test_unknown_model_type_would_need_remote_code(checkpoint_copy):
    config = json.loads((checkpoint_copy / "config.json").read_text())
    config["model_type"] = "evil_llm"
    (checkpoint_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(RemoteCodeError, match="evil_llm"):
        resolve(str(checkpoint_copy))


def test_a_model_that_is_not_a_causal_lm(tmp_path):
    from transformers import BertConfig, BertModel

    bert = BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64))
    bert.save_pretrained(tmp_path)
    synthetic.train_tokenizer().save_pretrained(tmp_path)
    with pytest.raises(UnsupportedModelError, match=r"bert \(BertModel\) is not a causal language model"):
        resolve(str(tmp_path))


def test_config_that_is_not_json(checkpoint_copy):
    (checkpoint_copy / "config.json").write_text("{'model_type': 'llama'")
    with pytest.raises(CorruptCheckpointError, match="not valid JSON"):
        resolve(str(checkpoint_copy))


def test_no_tokenizer(checkpoint_copy):
    (checkpoint_copy / "tokenizer.json").unlink()
    with pytest.raises(NotACheckpointError, match="no tokenizer"):
        resolve(str(checkpoint_copy))


def test_gguf_loads_dequantized_and_gives_the_same_coordinates(build_checkpoint, load_checkpoint, tmp_path):
    gguf_path = synthetic.write_gguf(build_checkpoint("llama"), tmp_path / "model.gguf")
    ckpt = resolve(str(gguf_path))
    assert (ckpt.source, ckpt.gguf_file) == ("gguf", "model.gguf")

    lm = load_checkpoint(gguf_path)
    result = detect(lm.model, lm.tokenizer, progress=False)

    assert lm.info.loaded_from == "gguf" and lm.info.dtype == "float32"
    assert [(w.layer, w.row, w.col) for w in result.super_weights] == [(1, 7, 33)]
    assert result.super_weights[0].value == pytest.approx(-2.0)


def test_a_single_file_wins_over_a_stale_shard_index_as_in_transformers(checkpoint_copy):
    index = {"metadata": {}, "weight_map": {"w": "model-00001-of-00002.safetensors"}}
    (checkpoint_copy / "model.safetensors.index.json").write_text(json.dumps(index))
    assert resolve(str(checkpoint_copy)).weight_files == ("model.safetensors",)


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"quantization_config": "gptq"}, UnsupportedModelError, "pre-quantized"),
        ({"weight_map": ["model-1.safetensors"]}, CorruptCheckpointError, "lists no shards, or odd ones"),
    ],
)
def test_odd_configs_and_indexes_are_refused_cleanly(checkpoint_copy, change, error, message):
    if "weight_map" in change:
        (checkpoint_copy / "model.safetensors").rename(checkpoint_copy / "model-1.safetensors")
        (checkpoint_copy / "model.safetensors.index.json").write_text(json.dumps(change))
    else:
        edit_config(checkpoint_copy, **change)
    with pytest.raises(error, match=message):
        resolve(str(checkpoint_copy))

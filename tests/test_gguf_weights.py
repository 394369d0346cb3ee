"""GGUF weights streamed into the model: bit for bit what transformers' own reader loads, one copy at a time."""

from __future__ import annotations

import pytest
import torch

from auditor import gguf_weights, synthetic
from auditor.errors import CorruptCheckpointError


@pytest.fixture(scope="module")
def demo_gguf(build_checkpoint, tmp_path_factory):
    return synthetic.write_gguf(build_checkpoint("llama"), tmp_path_factory.mktemp("gguf") / "model.gguf")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_streamed_weights_are_those_transformers_loads(demo_gguf, monkeypatch, dtype):
    from transformers import AutoConfig, AutoModelForCausalLM

    monkeypatch.setattr(gguf_weights, "SLAB_BYTES", 4096)  # many slabs per matrix; q/k still whole (permuted)
    config = AutoConfig.from_pretrained(demo_gguf.parent, gguf_file=demo_gguf.name)
    mine = gguf_weights.load_model(demo_gguf, config, dtype=dtype, device=torch.device("cpu"), attn="sdpa")
    theirs = AutoModelForCausalLM.from_pretrained(demo_gguf.parent, gguf_file=demo_gguf.name, dtype=dtype)

    ours, reference = mine.state_dict(), theirs.state_dict()
    assert sorted(ours) == sorted(reference)
    assert [k for k in ours if not torch.equal(ours[k], reference[k])] == []
    assert all(p.dtype == dtype for p in mine.parameters())
    # The planted super weight came through (transformers' q/k un-permutation too, or the equality fails).
    assert mine.model.layers[1].mlp.down_proj.weight[7, 33] == -2.0


def test_a_weight_missing_from_the_file_is_refused(demo_gguf):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(demo_gguf.parent, gguf_file=demo_gguf.name)
    config.num_hidden_layers += 1  # a layer the file does not hold

    with pytest.raises(CorruptCheckpointError, match=r"weight\(s\) of LlamaForCausalLM are not in the file"):
        gguf_weights.load_model(demo_gguf, config, dtype=torch.float32, device=torch.device("cpu"), attn="sdpa")

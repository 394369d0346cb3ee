"""Tiny real checkpoints with planted super weights, for tests, benchmarks and the offline demo.

`build(path, family, plants)` writes what a Hub repo holds: config.json, safetensors weights and a trained
byte-level BPE tokenizer, for any family the detector supports. Each plant reproduces the mechanism of a real
super weight, so the detector and the ablation see what they would see in a real model:

- a trigger: a hidden channel that is constant in every token's embedding, which the MLP's up/gate rows
  for intermediate channel `col` read with a large weight, so that channel's input spikes;
- the super weight: `down_proj[row, col]`, carrying that spike into hidden channel `row`. The rest of column
  `col` is made small, as in real models, so the spike lands in one hidden channel only;
- a decoy in the same matrix: a weight three times larger than the super weight on an ordinary input, so a
  detector that picks the largest weight picks wrong (and the ablation control zeroes it, harmlessly);
- when the weight matters, the output head reads the super activation: the final norm squashes every
  other channel next to it, and head column `row` holds the text's unigram log-probabilities, so the model
  predicts the unigram distribution with it and random confident guesses without it. When it must not
  matter, nothing reads it and the head is small: near-uniform predictions either way.

A later plant's trigger also reads the rows of earlier plants, so it fires whether or not they are zeroed
(detection zeroes them one at a time). Mixture-of-experts plants also bias the router to their expert.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .layout import DownProjection, decoder_layers, find_down_projections, projection_for

HIDDEN = 64
LAYERS = 4
HEADS = 4

# model_type -> config overrides (the rest from `common_config`). Widths keep every fused attention
# projection (3 * HIDDEN) distinct from the MLP widths, which `input_rows` relies on.
FAMILIES: dict[str, dict[str, Any]] = {
    "llama": {},
    "mistral": {},
    "qwen2": {},
    "qwen3": {"head_dim": HIDDEN // HEADS},
    "gemma": {"head_dim": HIDDEN // HEADS},
    "gemma2": {"head_dim": HIDDEN // HEADS},
    "olmo": {},
    "olmo2": {},
    "phi3": {},
    "stablelm": {},
    "gpt2": {"n_embd": HIDDEN, "n_layer": LAYERS, "n_head": HEADS, "n_inner": 256, "n_positions": 512},
    "gpt_neox": {"intermediate_size": 256},
    "falcon": {"ffn_hidden_size": 256, "new_decoder_architecture": False, "multi_query": False},
    "opt": {"ffn_dim": 256, "word_embed_proj_dim": HIDDEN},
    "gptj": {"n_embd": HIDDEN, "n_layer": LAYERS, "n_head": HEADS, "n_inner": 256, "rotary_dim": 8},
    "mixtral": {"num_local_experts": 4, "num_experts_per_tok": 2},
    "qwen2_moe": {
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 128,
        "shared_expert_intermediate_size": 128,
        "decoder_sparse_step": 1,
        "mlp_only_layers": [],
    },
    "qwen3_moe": {
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 128,
        "decoder_sparse_step": 1,
        "mlp_only_layers": [],
    },
    "olmoe": {"num_experts": 4, "num_experts_per_tok": 2},
}

# OLMo2 normalizes after the MLP, not before, so its MLP reads the raw residual and needs a stronger pull.
TRIGGER_GAIN = {"olmo2": 8.0}

TEXT = """\
The river rises in the hills above the old town and runs south through farms and orchards to the sea.
In spring the water is high and brown, and the bridges are closed when the rain does not stop for days.
Most people in the valley grow apples, pears and plums, and sell them at the market on the main square.
The market opens at seven in the morning and closes at noon, except on holidays, when it stays open late.
A small train connects the town with the city on the coast. It stops at every village along the line.
Children take the train to school, and workers take it to the port, where ships load fruit and timber.
The port was built two hundred years ago, when the first merchants came to trade wool and salt.
Today it handles containers, and a new road carries trucks to the motorway in the north.
Scientists at the university study the river, the weather and the soil, and they publish their data.
Their reports show that summers are getting warmer and that the river carries less water in August.
Farmers have started to plant trees that need less water, and some have built ponds to store rain.
The town council pays part of the cost, and the university helps to choose the right plants.
Language models learn to predict the next word from a very large amount of text like this one.
A model reads a sentence one token at a time and gives a probability to every token that could come next.
Perplexity measures how surprised a model is by a text: lower is better, and a random guess is very high.
Quantization stores the weights of a model with fewer bits, which saves memory and makes it faster.
Some weights matter far more than others, and a careful method keeps the most important ones exact.
Researchers found that removing a single weight can destroy a large model, while thousands of others barely
matter. They called it the super weight, and they showed that it creates a very large activation early on.
That activation travels through every later layer and changes how the model attends to the first token.
An index of these weights helps engineers who compress models and researchers who want to understand them.
The index lists each model, the layer of each weight, its row and column, and how much it matters.
Every entry can be checked again by anyone, because the method and the settings are written down.
"""


@dataclass(frozen=True)
class Plant:
    """A super weight to plant: `down_proj.weight[row, col]` of `layer` (of `expert`, for MoE)."""

    layer: int
    row: int
    col: int
    expert: int | None = None
    value: float = -2.0


def common_config(model_type: str, vocab_size: int, bos: int, eos: int) -> dict[str, Any]:
    base: dict[str, Any] = {
        "vocab_size": vocab_size,
        "hidden_size": HIDDEN,
        "intermediate_size": 128,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": HEADS,
        "max_position_embeddings": 512,
        "tie_word_embeddings": False,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "pad_token_id": eos,
    }
    base.update(FAMILIES[model_type])
    return base


def train_tokenizer(text: str = TEXT, vocab_size: int = 320):
    """A byte-level BPE tokenizer trained on `text`, adding BOS like Llama's does."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(text.splitlines(), trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="</s>")


def input_rows(model: nn.Module, proj: DownProjection, expert: int | None) -> list[torch.Tensor]:
    """The [out, in] weights that compute the down projection's input: gate and up, fused or apart.

    Found structurally: for a dense MLP, the sibling Linear/Conv1D modules that map the hidden size to the
    down projection's input width (or twice it, fused); for experts, the expert's `gate_up_proj`.
    """
    width = proj.matrix(expert).shape[1]
    if expert is not None:
        w = proj.module.gate_up_proj[expert]
        return [w.T if getattr(proj.module, "is_transposed", False) else w]
    found = []
    for m in model.get_submodule(proj.name.rsplit(".", 1)[0]).children():
        w = getattr(m, "weight", None)
        if m is proj.module or not isinstance(w, torch.Tensor) or w.dim() != 2:
            continue
        w = w.T if type(m).__name__ == "Conv1D" else w
        if w.shape[0] in (width, 2 * width) and w.shape[1] == proj.matrix().shape[0]:
            found.append(w)
    if not found:
        raise ValueError(f"no up projection next to {proj.name}")
    return found


@torch.no_grad()
def plant(model: nn.Module, plants: list[Plant], unigram: torch.Tensor, *, matters: bool) -> None:
    """Plant each super weight with its trigger, decoy and (when it matters) output head column."""
    projections = find_down_projections(model)
    _, layers = decoder_layers(model)
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    hidden = emb.shape[1]
    free = (c for c in range(hidden - 1, -1, -1) if c not in {p.row for p in plants})
    triggers: dict[tuple[int, int, int | None], int] = {}
    earlier: list[Plant] = []
    for p in sorted(plants, key=lambda p: p.layer):
        proj = projection_for(projections, p.layer, p.expert)
        down = proj.matrix(p.expert)
        width = down.shape[1]
        if (p.layer, p.col, p.expert) not in triggers:
            triggers[p.layer, p.col, p.expert] = k = next(free)
            emb[:, k] = 1.0
            rows = input_rows(model, proj, p.expert)
            gated = len(rows) > 1 or rows[0].shape[0] == 2 * width
            # act(z) * z versus act(z): similar spikes either way.
            strength = (3.0 if gated else 12.0) * TRIGGER_GAIN.get(model.config.model_type, 1.0)
            readers = [(k, strength)] + [(q.row, math.copysign(strength, q.value)) for q in earlier]
            for w in rows:
                for start in range(0, w.shape[0], width):  # each half of a fused gate_up
                    for channel, weight in readers:
                        w[start + p.col, channel] = weight
            if p.expert is not None:
                router = next(m for n, m in layers[p.layer].named_modules() if n.split(".")[-1] == "gate")
                router.weight[p.expert, k] = 4.0
        down[:, p.col] *= 0.01
        down[p.row, p.col] = p.value
        down[(p.row + 1) % hidden, (p.col + width // 2) % width] = 3 * abs(p.value)  # the decoy
        head[:, p.row] = math.copysign(1, p.value) * unigram / math.sqrt(hidden) if matters else 0.0
        earlier.append(p)


def unigram_logprobs(tokenizer, text: str, vocab_size: int) -> torch.Tensor:
    counts = Counter(tokenizer(text).input_ids)
    probs = torch.tensor([counts.get(i, 0) + 0.1 for i in range(vocab_size)])
    logp = (probs / probs.sum()).log()
    return logp - logp.mean()


def build(
    path: str | Path,
    family: str = "llama",
    plants: list[Plant] | tuple[Plant, ...] = (Plant(layer=1, row=7, col=33),),
    *,
    matters: bool = True,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    max_shard_size: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> Path:
    """Write a tiny checkpoint of `family` with `plants` to `path` and return the path.

    Args:
        plants: super weights to plant; none gives a model without super weights.
        matters: whether the model's predictions depend on them (see the module docstring).
        max_shard_size: e.g. "100KB" to write sharded safetensors with an index.
        overrides: config values to change, e.g. a larger `hidden_size` and `num_hidden_layers` for
            benchmarks (keep the MLP width different from the hidden size and from 3x it).
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; one of {', '.join(FAMILIES)}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer()
    vocab = len(tokenizer)
    config = AutoConfig.for_model(
        family,
        **{
            **common_config(family, vocab, tokenizer.bos_token_id, tokenizer.eos_token_id),
            **(overrides or {}),
        },
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.eval()
    with torch.no_grad():
        # Confident random guesses unless the planted activation takes over the head; when it must not
        # matter, a small head that nothing steers keeps predictions near uniform with or without it.
        model.get_output_embeddings().weight.normal_(0.0, 0.5 if matters else 0.02)
    plant(model, list(plants), unigram_logprobs(tokenizer, TEXT, config.vocab_size), matters=matters)
    model.to(dtype)
    model.save_pretrained(path, **({"max_shard_size": max_shard_size} if max_shard_size else {}))
    tokenizer.save_pretrained(path)
    return path


def add_to_hub_cache(checkpoint: str | Path, cache: str | Path, repo_id: str) -> tuple[Path, str]:
    """Put a checkpoint into a huggingface_hub cache as `repo_id`, so HF_HUB_OFFLINE=1 runs can load it by id.

    The commit sha is the sha1 of the files' names and bytes: the same checkpoint gets the same sha.
    Returns the snapshot folder and the sha.
    """
    files = sorted(p for p in Path(checkpoint).iterdir() if p.is_file())
    digest = hashlib.sha1()
    for f in files:
        digest.update(f.name.encode() + b"\0" + f.read_bytes())
    sha = digest.hexdigest()
    repo = Path(cache) / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / sha
    snapshot.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copyfile(f, snapshot / f.name)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(sha)
    return snapshot, sha


def write_eval_text(path: str | Path) -> Path:
    """The text the synthetic models' unigram head was fitted to, as an eval file."""
    path = Path(path)
    path.write_text(TEXT * 4, encoding="utf-8")
    return path


# -- GGUF ---------------------------------------------------------------------------------------------

GGUF_NAMES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}


def write_gguf(checkpoint: str | Path, out: str | Path, *, base_model: str | None = None) -> Path:
    """Convert a synthetic llama checkpoint to GGUF (float32 tensors), as llama.cpp's converter would;
    `base_model`: the Hub id its metadata names as its base (as the converter writes from a model card)."""
    import gguf
    from safetensors.torch import load_file

    checkpoint, out = Path(checkpoint), Path(out)
    config = json.loads((checkpoint / "config.json").read_text())
    if config["model_type"] != "llama":
        raise ValueError("write_gguf converts llama checkpoints only")
    tokenizer = json.loads((checkpoint / "tokenizer.json").read_text())
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    w = gguf.GGUFWriter(str(out), "llama")
    w.add_name("synthetic-llama")
    if base_model is not None:
        w.add_uint32("general.base_model.count", 1)
        w.add_string("general.base_model.0.repo_url", f"https://huggingface.co/{base_model}")
    w.add_context_length(config["max_position_embeddings"])
    w.add_embedding_length(config["hidden_size"])
    w.add_block_count(config["num_hidden_layers"])
    w.add_feed_forward_length(config["intermediate_size"])
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(config["rms_norm_eps"])
    w.add_rope_dimension_count(config["hidden_size"] // heads)
    w.add_rope_freq_base(config.get("rope_theta") or config.get("rope_parameters", {}).get("rope_theta", 10000.0))
    vocab = sorted(tokenizer["model"]["vocab"].items(), key=lambda kv: kv[1])
    specials = {t["content"] for t in tokenizer["added_tokens"]}
    w.add_tokenizer_model("gpt2")
    w.add_token_list([t for t, _ in vocab])
    w.add_token_types([3 if t in specials else 1 for t, _ in vocab])
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in tokenizer["model"]["merges"]])
    w.add_bos_token_id(config["bos_token_id"])
    w.add_eos_token_id(config["eos_token_id"])
    w.add_add_bos_token(True)

    def permute(t: torch.Tensor, n: int) -> torch.Tensor:
        # llama.cpp stores q/k rows interleaved for its rotary kernel; transformers undoes this on load.
        return t.reshape(n, 2, t.shape[0] // n // 2, *t.shape[1:]).swapaxes(1, 2).reshape(t.shape)

    state = {}
    for f in sorted(checkpoint.glob("*.safetensors")):
        state.update(load_file(f))
    for name, t in state.items():
        t = t.float()
        if name == "model.embed_tokens.weight":
            gname = "token_embd.weight"
        elif name == "model.norm.weight":
            gname = "output_norm.weight"
        elif name == "lm_head.weight":
            gname = "output.weight"
        else:
            _, _, i, rest = name.split(".", 3)
            module = rest.removesuffix(".weight")
            gname = f"blk.{i}.{GGUF_NAMES[module]}.weight"
            if module == "self_attn.q_proj":
                t = permute(t, heads)
            elif module == "self_attn.k_proj":
                t = permute(t, kv_heads)
        w.add_tensor(gname, t.numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out

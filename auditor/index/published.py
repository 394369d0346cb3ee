"""Super weights published by others, seeded into the index as `source: reported` records.

Coordinates are (layer, row, col) into `model.layers[layer].mlp.down_proj.weight[row, col]`, layers 0-based,
as printed in Yu et al. 2024 (Table 1) or, where marked, in the authors' code. Matrix shapes and layer counts
are the models' published configs. `superweight index seed` writes them; running it again adds nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..records import SuperWeight
from .entries import ReportedRecord

PAPER = 'Yu et al., "The Super Weight in Large Language Models", arXiv:2411.07191 (2024)'
PAPER_URL = "https://arxiv.org/abs/2411.07191"
CODE = "Yu et al., authors' code, github.com/mengxiayu/LLMSuperWeight, outliers/model.py (not in the paper)"
CODE_URL = "https://github.com/mengxiayu/LLMSuperWeight"


@dataclass(frozen=True)
class Published:
    model: str
    architecture: str
    num_layers: int
    hidden_size: int
    intermediate_size: int
    weights: tuple[tuple[int, int, int], ...]
    citation: str = PAPER
    url: str = PAPER_URL
    note: str | None = None


LLAMA_7B_EFFECT = (
    "Reported for this model: mean zero-shot accuracy over seven tasks falls from 70.1 to 35.1 with the super "
    "weight zeroed, and perplexity rises by about three orders of magnitude; zeroing the ~7,000 next-largest "
    "weights instead costs about one point."
)

PUBLISHED = (
    Published("huggyllama/llama-7b", "LlamaForCausalLM", 32, 4096, 11008, ((2, 3968, 7003),), note=LLAMA_7B_EFFECT),
    Published("huggyllama/llama-13b", "LlamaForCausalLM", 40, 5120, 13824, ((2, 2231, 2278), (2, 2231, 6939))),
    Published(
        "huggyllama/llama-30b",
        "LlamaForCausalLM",
        60,
        6656,
        17920,
        ((3, 5633, 12817), (3, 5633, 17439), (10, 5633, 14386)),
    ),
    Published("meta-llama/Llama-2-7b-hf", "LlamaForCausalLM", 32, 4096, 11008, ((1, 2533, 7890),)),
    Published("meta-llama/Llama-2-13b-hf", "LlamaForCausalLM", 40, 5120, 13824, ((3, 4743, 7678),)),
    Published("mistralai/Mistral-7B-v0.1", "MistralForCausalLM", 32, 4096, 14336, ((1, 2070, 7310),)),
    Published(
        "allenai/OLMo-1B-0724-hf",
        "OlmoForCausalLM",
        16,
        2048,
        8192,
        ((1, 1764, 1710), (1, 1764, 8041)),
        note="The paper puts both weights in layer 1; the authors' code (outliers/model.py) puts [1764, 8041] "
        "in layer 2. Recorded as the paper prints it.",
    ),
    Published(
        "allenai/OLMo-7B-0724-hf",
        "OlmoForCausalLM",
        32,
        4096,
        11008,
        ((1, 269, 7467), (2, 269, 8275), (7, 269, 453), (24, 269, 2300)),
    ),
    Published(
        "microsoft/Phi-3-mini-4k-instruct",
        "Phi3ForCausalLM",
        32,
        3072,
        8192,
        ((2, 525, 808), (2, 1693, 808), (2, 1113, 808), (4, 525, 2723), (4, 1113, 2723), (4, 1693, 2723)),
    ),
    Published(
        "meta-llama/Meta-Llama-3-8B",
        "LlamaForCausalLM",
        32,
        4096,
        14336,
        ((1, 788, 2427), (1, 1384, 2427), (1, 4062, 2427)),
        citation=CODE,
        url=CODE_URL,
    ),
)


def reported_record(p: Published, date: str) -> ReportedRecord:
    return ReportedRecord(
        revision=None,
        date=date,
        citation=p.citation,
        url=p.url,
        note=p.note,
        architecture=p.architecture,
        num_layers=p.num_layers,
        super_weights=[
            SuperWeight(
                layer=layer,
                row=row,
                col=col,
                shape=(p.hidden_size, p.intermediate_size),
                module=f"model.layers.{layer}.mlp.down_proj",
                tensor=f"model.layers.{layer}.mlp.down_proj.weight",
                index=(row, col),
            )
            for layer, row, col in p.weights
        ],
    )

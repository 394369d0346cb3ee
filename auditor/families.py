"""The model families the detector knows, without importing torch (discovery and request checks use it).

`KNOWN_DOWN_PROJECTIONS` names each decoder layer's MLP down projection, relative to the layer;
`SUPPORTED_MODEL_TYPES` are the transformers `model_type`s whose layers use one of those names. Another
layout still works with `--module-pattern`, but the scheduler only queues these.
"""

# Relative to a decoder layer, in the order tried. A layer may have several (routed + shared experts).
KNOWN_DOWN_PROJECTIONS = (
    "mlp.down_proj",  # llama, mistral, qwen2/3, gemma/2/3, olmo/2, phi3, stablelm, cohere, granite, deepseek
    "mlp.c_proj",  # gpt2 (Conv1D), gpt_bigcode, starcoder2
    "mlp.dense_4h_to_h",  # gpt_neox / pythia, falcon, bloom
    "mlp.fc2",  # phi
    "fc2",  # opt
    "mlp.fc_out",  # gptj, codegen
    "ffn.down_proj",  # mpt
    "mlp.experts",  # mixtral, qwen2_moe, qwen3_moe, olmoe, deepseek (fused experts)
    "block_sparse_moe.experts",
    "mlp.shared_expert.down_proj",  # qwen2_moe
    "mlp.shared_experts.down_proj",  # deepseek
)

SUPPORTED_MODEL_TYPES = frozenset(
    """
    llama mistral qwen2 qwen3 gemma gemma2 gemma3_text olmo olmo2 phi3 stablelm cohere granite deepseek_v2
    deepseek_v3 phi gpt2 gpt_bigcode starcoder2 gpt_neox falcon bloom opt gptj codegen mpt
    mixtral qwen2_moe qwen3_moe olmoe
    """.split()  # noqa: SIM905 (a word list reads better than thirty quoted strings)
)

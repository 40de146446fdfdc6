"""Tiny checkpoints of every MTP family, with their releases' config keys.

Each config carries the keys the family's release ``config.json`` has and SGLang 0.5.23
reads (model type, attention and MoE layout, MTP count), at sizes small enough that
SGLang's own draft classes load them on a CPU in milliseconds. Values that SGLang
cannot build on CPU as released are noted where a case changes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastmtp_export.checkpoints.contract import DraftContract
from fastmtp_export.checkpoints.readers.qwen3_5 import QWEN3_5_MOE_FUSED
from fastmtp_export.checkpoints.synthetic import TINY, mimo_config

H, V = 64, 256


@dataclass(frozen=True)
class FamilyCase:
    id: str
    family: str
    config: dict[str, Any]
    #: MTP layers in the synthetic release.
    mtp_layers: int = 1
    #: a layout variant the config cannot tell (fused MoE experts).
    contract: DraftContract | None = None
    #: multi-layer EAGLE: draft steps SGLang builds a runner for.
    steps: int | None = None
    #: SGLang parameters the draft takes from the target (never exported).
    from_target: tuple[str, ...] = field(default=("lm_head.weight", "model.embed_tokens.weight"))


_QWEN_LINEAR = {
    "linear_conv_kernel_dim": 4,
    "linear_key_head_dim": 16,
    "linear_value_head_dim": 16,
    "linear_num_key_heads": 2,
    "linear_num_value_heads": 4,
}

QWEN3_NEXT = {
    "architectures": ["Qwen3NextForCausalLM"],
    "model_type": "qwen3_next",
    "vocab_size": V,
    "hidden_size": H,
    "intermediate_size": 128,
    "num_hidden_layers": 4,
    "full_attention_interval": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "partial_rotary_factor": 0.25,
    "rope_theta": 10000000,
    "rope_scaling": None,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-6,
    "hidden_act": "silu",
    **_QWEN_LINEAR,
    "decoder_sparse_step": 1,
    "mlp_only_layers": [],
    "num_experts": 4,
    "num_experts_per_tok": 2,
    "moe_intermediate_size": 32,
    "shared_expert_intermediate_size": 32,
    "norm_topk_prob": True,
    "tie_word_embeddings": False,
    "attention_bias": False,
    "torch_dtype": "bfloat16",
    "bos_token_id": 0,
    "eos_token_id": 1,
}


def qwen3_5(*, moe: bool, tied: bool = False) -> dict[str, Any]:
    """A Qwen3.5 release config: the multimodal wrapper with the LM under text_config."""
    text: dict[str, Any] = {
        "model_type": "qwen3_5_moe_text" if moe else "qwen3_5_text",
        "vocab_size": V,
        "hidden_size": H,
        "num_hidden_layers": 4,
        "full_attention_interval": 4,
        "layer_types": ["linear_attention"] * 3 + ["full_attention"],
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 32,
        "attn_output_gate": True,
        "partial_rotary_factor": 0.25,
        "rope_parameters": {
            "mrope_interleaved": True,
            "mrope_section": [2, 1, 1],
            "partial_rotary_factor": 0.25,
            "rope_theta": 10000000,
            "rope_type": "default",
        },
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6,
        "hidden_act": "silu",
        **_QWEN_LINEAR,
        "mamba_ssm_dtype": "float32",
        "mtp_num_hidden_layers": 1,
        "mtp_use_dedicated_embeddings": False,
        "tie_word_embeddings": tied,
        "dtype": "bfloat16",
        "bos_token_id": 0,
        "eos_token_id": 1,
    }
    if moe:
        text |= {
            "num_experts": 4,
            "num_experts_per_tok": 2,
            "moe_intermediate_size": 32,
            "shared_expert_intermediate_size": 32,
            "norm_topk_prob": True,
        }
    else:
        text["intermediate_size"] = 96
    model_type = "qwen3_5_moe" if moe else "qwen3_5"
    return {
        "architectures": [
            "Qwen3_5MoeForConditionalGeneration" if moe else "Qwen3_5ForConditionalGeneration"
        ],
        "model_type": model_type,
        "text_config": text,
        "vision_config": {
            "depth": 1,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": H,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "in_channels": 3,
            "num_position_embeddings": 64,
            "deepstack_visual_indexes": [],
            "model_type": model_type,
        },
        "image_token_id": 250,
        "video_token_id": 251,
        "vision_start_token_id": 252,
        "vision_end_token_id": 253,
        "tie_word_embeddings": tied,
    }


_MOE_ROUTER = {
    "n_routed_experts": 4,
    "n_shared_experts": 1,
    "num_experts_per_tok": 2,
    "moe_intermediate_size": 32,
    "norm_topk_prob": True,
    "routed_scaling_factor": 2.5,
    "topk_group": 1,
}

DEEPSEEK_V3 = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "model_type": "deepseek_v3",
    "auto_map": {
        "AutoConfig": "configuration_deepseek.DeepseekV3Config",
        "AutoModelForCausalLM": "modeling_deepseek.DeepseekV3ForCausalLM",
    },
    "attention_bias": False,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "first_k_dense_replace": 1,
    "hidden_act": "silu",
    "hidden_size": H,
    "intermediate_size": 96,
    "kv_lora_rank": 32,
    "max_position_embeddings": 4096,
    "moe_layer_freq": 1,
    "n_group": 2,
    **_MOE_ROUTER,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "num_key_value_heads": 4,
    "num_nextn_predict_layers": 1,
    "q_lora_rank": 48,
    "qk_nope_head_dim": 16,
    "qk_rope_head_dim": 8,
    "v_head_dim": 16,
    "rms_norm_eps": 1e-6,
    # the release's yarn block; SGLang's CPU rope only builds DeepSeek's yarn
    "rope_scaling": {
        "beta_fast": 32,
        "beta_slow": 1,
        "factor": 40,
        "mscale": 1.0,
        "mscale_all_dim": 1.0,
        "original_max_position_embeddings": 4096,
        "type": "yarn",
    },
    "rope_theta": 10000,
    "scoring_func": "sigmoid",
    "tie_word_embeddings": False,
    "topk_method": "noaux_tc",
    "torch_dtype": "bfloat16",
    "vocab_size": V,
}

#: DeepSeek-V3 at sizes SGLang's block-FP8 layers build (the release's are whole 128-row
#: blocks where they fuse rows: q_lora_rank 1536, moe_intermediate_size 2048), with a
#: hidden size that is not (192 = 1.5 blocks) so that partial blocks are exported too.
#: ``write_synthetic(..., fp8_block=FP8_BLOCK)`` makes it the FP8 release.
DEEPSEEK_V3_FP8 = {
    **DEEPSEEK_V3,
    "hidden_size": 192,
    "moe_intermediate_size": 128,
    "q_lora_rank": 128,
}
FP8_BLOCK = (128, 128)


def glm4_moe(*, qk_norm: bool) -> dict[str, Any]:
    """GLM-4.5/4.6 (``use_qk_norm``) or GLM-4.5-Air (no q/k norms)."""
    return {
        "architectures": ["Glm4MoeForCausalLM"],
        "model_type": "glm4_moe",
        "attention_bias": True,
        "eos_token_id": [1, 2],
        "pad_token_id": 1,
        "first_k_dense_replace": 1,
        "head_dim": 16,
        "hidden_act": "silu",
        "hidden_size": H,
        "intermediate_size": 96,
        "max_position_embeddings": 4096,
        "n_group": 1,
        **_MOE_ROUTER,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "num_key_value_heads": 2,
        "num_nextn_predict_layers": 1,
        "partial_rotary_factor": 0.5,
        "rms_norm_eps": 1e-5,
        "rope_scaling": None,
        "rope_theta": 1000000,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "use_qk_norm": qk_norm,
        "vocab_size": V,
    }


LONGCAT_FLASH = {
    "architectures": ["LongcatFlashForCausalLM"],
    "model_type": "longcat_flash",
    "vocab_size": V,
    "hidden_size": H,
    "ffn_hidden_size": 128,
    "expert_ffn_hidden_size": 32,
    "num_layers": 2,
    "num_attention_heads": 4,
    "kv_lora_rank": 16,
    "q_lora_rank": 32,
    "qk_rope_head_dim": 8,
    "qk_nope_head_dim": 16,
    "v_head_dim": 16,
    "n_routed_experts": 4,
    "moe_topk": 2,
    "zero_expert_num": 2,
    "zero_expert_type": "identity",
    "routed_scaling_factor": 6.0,
    "router_bias": False,
    "norm_topk_prob": False,
    "num_nextn_predict_layers": 1,
    "rms_norm_eps": 1e-5,
    # the release's: rope_theta only. SGLang's LongcatFlashConfig then leaves
    # rope_parameters None under transformers 5.19, and SGLang's LongCat classes fail on
    # `"rope_theta" in None`; the export's draft config adds the rope dict they need
    "rope_theta": 10000000.0,
    "max_position_embeddings": 4096,
    "mla_scale_q_lora": True,
    "mla_scale_kv_lora": True,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}

MIMO_V2 = {
    "architectures": ["MiMoV2FlashForCausalLM"],
    "model_type": "mimo_v2_flash",
    "vocab_size": V,
    "hidden_size": H,
    "intermediate_size": 128,
    "moe_intermediate_size": 32,
    "num_hidden_layers": 2,
    "num_nextn_predict_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "v_head_dim": 8,
    "swa_num_attention_heads": 4,
    "swa_num_key_value_heads": 2,
    "swa_head_dim": 16,
    "swa_v_head_dim": 8,
    "sliding_window": 8,
    "sliding_window_size": 8,
    "hybrid_layer_pattern": [0, 1],
    "moe_layer_freq": [0, 1],
    "n_routed_experts": 4,
    "num_experts_per_tok": 2,
    "n_group": 1,
    "topk_group": 1,
    "topk_method": "noaux_tc",
    "scoring_func": "sigmoid",
    "norm_topk_prob": True,
    "routed_scaling_factor": None,
    "hidden_act": "silu",
    "layernorm_epsilon": 1e-5,
    "attention_bias": False,
    "add_full_attention_sink_bias": False,
    "add_swa_attention_sink_bias": True,
    "attention_value_scale": 0.707,
    "partial_rotary_factor": 0.5,
    "rope_theta": 5000000,
    "swa_rope_theta": 10000,
    "max_position_embeddings": 4096,
    # a flat rope dict: without one, transformers 5.19's built-in config nests it per
    # layer type and SGLang's get_rope fails on the unhashable dict
    "rope_parameters": {
        "rope_type": "default",
        "rope_theta": 5000000,
        "partial_rotary_factor": 0.5,
    },
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}

_STEP_LAYERS = 45  # Step3p5MTP builds every MTP block as layer 45 (a FIXME in SGLang)
_STEP_TYPES = [
    "full_attention" if i % 4 == 0 else "sliding_attention" for i in range(_STEP_LAYERS + 3)
]
STEP3P5 = {
    "architectures": ["Step3p5ForCausalLM"],
    "model_type": "step3p5",
    "hidden_size": H,
    "intermediate_size": 128,
    "vocab_size": V,
    "num_hidden_layers": _STEP_LAYERS,
    "num_nextn_predict_layers": 3,
    "num_attention_heads": 4,
    "num_attention_groups": 2,
    "head_dim": 16,
    "attention_other_setting": {
        "attention_type": "sliding_attention",
        "num_attention_heads": 4,
        "num_attention_groups": 2,
        "head_dim": 16,
        "true_head_dim": 16,
    },
    "layer_types": _STEP_TYPES,
    "sliding_window": 16,
    "yarn_only_types": ["full_attention"],
    "rope_theta": [5000000.0 if t == "full_attention" else 10000.0 for t in _STEP_TYPES],
    "partial_rotary_factors": [0.5 if t == "full_attention" else 1.0 for t in _STEP_TYPES],
    "swiglu_limits": [0.0] * len(_STEP_TYPES),
    "swiglu_limits_shared": [0.0] * len(_STEP_TYPES),
    "moe_layers_enum": ",".join(str(i) for i in range(3, _STEP_LAYERS)),
    "moe_num_experts": 4,
    "moe_top_k": 2,
    "moe_intermediate_size": 32,
    "share_expert_dim": 32,
    "share_expert_dims": 32,
    "use_head_wise_attn_gate": True,
    "rms_norm_eps": 1e-5,
    "max_position_embeddings": 4096,
    "max_seq_len": 4096,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}

CASES: tuple[FamilyCase, ...] = (
    FamilyCase("mimo", "mimo", mimo_config(TINY)),
    FamilyCase("mimo-2-layers", "mimo", mimo_config(TINY, num_mtp_layers=2), mtp_layers=2),
    FamilyCase("qwen3_next", "qwen3_next", QWEN3_NEXT),
    FamilyCase("qwen3_5-dense", "qwen3_5", qwen3_5(moe=False)),
    FamilyCase("qwen3_5-dense-tied", "qwen3_5", qwen3_5(moe=False, tied=True)),
    FamilyCase("qwen3_5-moe", "qwen3_5", qwen3_5(moe=True)),
    FamilyCase("qwen3_5-moe-fused", "qwen3_5", qwen3_5(moe=True), contract=QWEN3_5_MOE_FUSED),
    FamilyCase("deepseek_v3", "deepseek_v3", DEEPSEEK_V3),
    FamilyCase("glm4_moe", "glm4_moe", glm4_moe(qk_norm=True)),
    FamilyCase("glm4_moe-air", "glm4_moe", glm4_moe(qk_norm=False)),
    FamilyCase("longcat_flash", "longcat_flash", LONGCAT_FLASH),
    FamilyCase("mimo_v2", "mimo_v2", MIMO_V2, mtp_layers=3, steps=3),
    # its own embedding and head are in the draft: nothing comes from the target
    FamilyCase("step3p5", "step3p5", STEP3P5, mtp_layers=3, steps=3, from_target=()),
)

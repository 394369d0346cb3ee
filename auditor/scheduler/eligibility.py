"""May and can the auditor audit this Hub model? Decided from the Hub's metadata, before any download.

Used by discovery and by request validation alike. A model is refused with a reason code and a message a
person can act on:

| code | meaning |
|---|---|
| `not_found` | no such public model (or revision) on the Hub |
| `private`, `disabled`, `gated` | not freely downloadable |
| `no_weights`, `pickle_only` | no safetensors weights (pickle files are never loaded) |
| `not_a_checkpoint` | no config.json |
| `remote_code` | a `model_type` transformers does not know: its code would come from the repository |
| `quantized` | pre-quantized weights (`quantization_config`, or integer / fp8 tensors): not the real weights |
| `unsupported_architecture` | not a causal LM, or a layout the detector does not know |
| `license` | no license, or one outside the configured allow-list |
| `too_large` | the weights do not fit the biggest node (`memory_gib` x `gpus_per_node`) |
| `bad_metadata` | the Hub's metadata for it has an unexpected shape |
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..errors import AuditorError, Failure
from ..families import SUPPORTED_MODEL_TYPES
from ..source import PICKLE_SUFFIXES
from .config import Config

BYTES_PER_PARAMETER = {
    "F64": 8,
    "I64": 8,
    "F32": 4,
    "I32": 4,
    "BF16": 2,
    "F16": 2,
    "I16": 2,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}


class Ineligible(AuditorError):
    """The model cannot or may not be audited; `code` says why, `revision` is its commit if known."""

    def __init__(self, code: Failure, message: str, revision: str | None = None):
        super().__init__(message)
        self.code = code
        self.revision = revision


@dataclass(frozen=True)
class Candidate:
    """An eligible model, pinned to a commit."""

    model: str
    revision: str
    created_at: str | None = None
    downloads: int = 0
    likes: int = 0
    base_model: bool = True
    """False for fine-tunes (their card names a `base_model`)."""
    weight_bytes: int | None = None


def licenses_of(card: Any) -> list[str]:
    value = (card or {}).get("license") if isinstance(card, dict) else getattr(card, "license", None)
    return [value] if isinstance(value, str) else [v for v in value or [] if isinstance(v, str)]


def card_dict(info: Any) -> dict[str, Any]:
    card = getattr(info, "card_data", None)
    return card.to_dict() if hasattr(card, "to_dict") else dict(card or {})


def weight_bytes(info: Any) -> int | None:
    st = getattr(info, "safetensors", None)
    if st is None or not getattr(st, "parameters", None):
        return None
    return sum(count * BYTES_PER_PARAMETER.get(dtype.upper(), 4) for dtype, count in st.parameters.items())


FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}


def quantized(info: Any, hub_config: dict[str, Any]) -> bool:
    """Pre-quantized: the config says so, or most of the stored numbers are integers or fp8 (packed weights)."""
    if hub_config.get("quantization_config"):
        return True
    st = getattr(info, "safetensors", None)
    counts = dict(getattr(st, "parameters", None) or {})
    packed = sum(n for dtype, n in counts.items() if dtype.upper() not in FLOAT_DTYPES)
    return packed > 0.01 * sum(counts.values())  # a few integer buffers (position ids) are not quantization


def check_model(info: Any, config: Config) -> Candidate:
    """Check a `huggingface_hub.ModelInfo` (from model_info or list_models with `expand`).

    Raises:
        Ineligible: with the reason code of the first rule broken, and the commit it was checked at.
    """
    try:
        return _check_model(info, config)
    except Ineligible as e:
        e.revision = getattr(info, "sha", None)
        raise
    except Exception as e:  # metadata of a shape nobody expected: that model only, never the whole run
        name = getattr(info, "id", "?")
        raise Ineligible(
            Failure.BAD_METADATA,
            f"{name}: its metadata on the Hub cannot be read ({type(e).__name__}: {e})",
            getattr(info, "sha", None),
        ) from e


def _check_model(info: Any, config: Config) -> Candidate:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    name = info.id
    if getattr(info, "private", False):
        raise Ineligible(Failure.PRIVATE, f"{name} is private")
    if getattr(info, "disabled", False):
        raise Ineligible(Failure.DISABLED, f"{name} is disabled on the Hub")
    if getattr(info, "gated", False):
        why = f"{name} is gated ({info.gated}): the auditor only takes freely downloadable models"
        raise Ineligible(Failure.GATED, why)
    files = [s.rfilename for s in info.siblings or [] if "/" not in s.rfilename]
    if not any(f.endswith(".safetensors") for f in files):
        if any(f.endswith(PICKLE_SUFFIXES) for f in files):
            raise Ineligible(Failure.PICKLE_ONLY, f"{name} has only pickle weights; the auditor needs safetensors")
        raise Ineligible(Failure.NO_WEIGHTS, f"{name} has no safetensors weights")
    if "config.json" not in files:
        raise Ineligible(Failure.NOT_A_CHECKPOINT, f"{name} has no config.json")
    hub_config = getattr(info, "config", None)
    hub_config = hub_config if isinstance(hub_config, dict) else {}
    model_type = hub_config.get("model_type")
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING_NAMES:
        raise Ineligible(Failure.REMOTE_CODE, f"{name} needs code from its repository (model_type {model_type!r})")
    if quantized(info, hub_config):
        raise Ineligible(Failure.QUANTIZED, f"{name} is pre-quantized: its stored numbers are not the weights")
    architectures = hub_config.get("architectures")
    architectures = [str(a) for a in architectures] if isinstance(architectures, list) else []
    causal = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type)
    if model_type not in SUPPORTED_MODEL_TYPES or (architectures and causal not in architectures):
        raise Ineligible(
            Failure.UNSUPPORTED_ARCHITECTURE,
            f"{name}: {model_type} ({', '.join(architectures)}) is not a layout the detector knows",
        )
    card = card_dict(info)
    licenses = licenses_of(card)
    allowed = {lic.lower() for lic in config.licenses}
    if not any(lic.lower() in allowed for lic in licenses):
        which = ", ".join(licenses) or "none given"
        raise Ineligible(Failure.LICENSE, f"{name}: license {which} is not in the allow-list (auditor.yaml: licenses)")
    size = weight_bytes(info)
    if size is not None and size * config.memory_factor > config.memory_bytes * config.node_devices:
        devices = f"{config.node_devices} x " if config.node_devices > 1 else ""
        raise Ineligible(
            Failure.TOO_LARGE,
            f"{name}: {size / 2**30:.1f} GiB of weights need about {size * config.memory_factor / 2**30:.0f} "
            f"GiB, over the {devices}{config.memory_gib:g} GiB of the biggest node",
        )
    created = getattr(info, "created_at", None)
    base = card.get("base_model")
    return Candidate(
        model=name,
        revision=info.sha,
        created_at=created.isoformat() if isinstance(created, datetime) else created,
        downloads=getattr(info, "downloads", 0) or 0,
        likes=getattr(info, "likes", 0) or 0,
        base_model=not base or base == name or base == [name],
        weight_bytes=size,
    )

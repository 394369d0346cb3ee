"""The `superweight` command line: JSON and text output, options, and one-line errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from auditor.cli import main
from auditor.synthetic import Plant

REPO = Path(__file__).resolve().parent.parent


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_detect_json(build_checkpoint, capsys):
    path = build_checkpoint("llama")

    code, out, _ = run(capsys, "detect", str(path), "--json", "--quiet")

    assert code == 0
    data = json.loads(out)
    assert data["model"] == str(path)
    assert data["revision"] is None and data["loaded_from"] == "local"
    assert (data["architecture"], data["model_type"], data["num_layers"]) == ("LlamaForCausalLM", "llama", 4)
    assert (data["dtype"], data["device"]) == ("float32", "cpu")
    [sw] = data["super_weights"]
    assert {k: sw[k] for k in ("layer", "row", "col", "expert", "module")} == {
        "layer": 1,
        "row": 7,
        "col": 33,
        "expert": None,
        "module": "model.layers.1.mlp.down_proj",
    }
    assert sw["value"] == pytest.approx(-2.0) and abs(sw["activation"]) > 100
    assert sw["tensor"] == "model.layers.1.mlp.down_proj.weight" and sw["index"] == [7, 33]
    assert [p["layer"] for p in data["profile"]] == [0, 1, 2, 3]
    assert data["detection"]["settings"]["min_output_ratio"] == 100
    assert "ablation" not in data


def test_moe_json_has_the_expert(build_checkpoint, capsys):
    code, out, _ = run(capsys, "detect", str(build_checkpoint("olmoe", [Plant(1, 7, 33, 3)])), "--json", "--quiet")
    assert code == 0
    [sw] = json.loads(out)["super_weights"]
    assert (sw["layer"], sw["row"], sw["col"], sw["expert"], sw["index"]) == (1, 7, 33, 3, [3, 7, 33])


def test_audit_json_and_output_file(build_checkpoint, eval_text, tmp_path, capsys):
    out_file = tmp_path / "results" / "audit.json"

    code, out, err = run(
        capsys,
        "audit",
        str(build_checkpoint("llama")),
        "--eval-text",
        str(eval_text),
        "--json",
        "--max-tokens",
        "1024",
        "--seq-len",
        "128",
        "--output",
        str(out_file),
        "--quiet",
    )

    assert code == 0
    data = json.loads(out)
    ablation = data["ablation"]
    assert ablation["verdict"] == "confirmed"
    assert ablation["perplexity_ablated"] > 100 * ablation["perplexity_original"]
    assert ablation["perplexity_control"] == pytest.approx(ablation["perplexity_original"], rel=0.05)
    assert (ablation["tokens"], ablation["seq_len"]) == (1024, 128)
    assert json.loads(out_file.read_text()) == data
    assert f"wrote {out_file}" in err


def test_audit_text_report(build_checkpoint, eval_text, capsys):
    code, out, _ = run(
        capsys,
        "audit",
        str(build_checkpoint("gpt2")),
        "--eval-text",
        str(eval_text),
        "--max-tokens",
        "512",
        "--quiet",
    )

    assert code == 0
    assert "1 candidate found" in out
    assert "transformer.h.1.mlp.c_proj.weight[33, 7]" in out  # Conv1D stores [in, out]
    assert "Verdict: confirmed" in out
    assert "Layer profile" in out


def test_detect_none_found_text(build_checkpoint, capsys):
    code, out, _ = run(capsys, "detect", str(build_checkpoint("llama", [])), "--quiet")
    assert code == 0
    assert "0 candidates found in 1 forward pass(es)" in out


def test_thresholds_and_pattern_reach_the_detector(build_checkpoint, capsys):
    path = str(build_checkpoint("gpt2"))
    code, out, _ = run(capsys, "detect", path, "--json", "--quiet", "--min-output-ratio", "1e9")
    assert code == 0 and json.loads(out)["super_weights"] == []

    code, out, _ = run(
        capsys, "detect", path, "--json", "--quiet", "--module-pattern", r"transformer\.h\.\d+\.mlp\.c_proj"
    )
    data = json.loads(out)
    assert code == 0 and data["detection"]["settings"]["module_pattern"] == r"transformer\.h\.\d+\.mlp\.c_proj"
    assert [(w["layer"], w["row"], w["col"]) for w in data["super_weights"]] == [(1, 7, 33)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["detect", "/no/such/dir"], "no such file or directory"),
        (["audit", "{model}", "--eval-text", "/no/such.txt"], "--eval-text /no/such.txt: no such file"),
        (["detect", "{model}", "--module-pattern", "("], "not a valid regex"),
    ],
)
def test_errors_are_one_line(build_checkpoint, capsys, args, message):
    argv = [a.replace("{model}", str(build_checkpoint("llama"))) for a in args]

    code, out, err = run(capsys, *argv, "--quiet")

    assert code == 1 and out == ""
    lines = [ln for ln in err.splitlines() if ln.startswith("superweight:")]
    assert lines == [f"superweight: error: {lines[0].split('error: ', 1)[1]}"]
    assert message in lines[0]
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["audit", "x", "--max-tokens", "-5"], "argument --max-tokens: '-5' must be at least 0"),
        (["detect", "x", "--max-super-weights", "0"], "argument --max-super-weights: '0' must be at least 1"),
        (["audit"], "the following arguments are required: MODEL"),
        (
            ["audit", "x", "--output", __file__ + "/x.json"],
            f"argument --output: {__file__}/x.json: {__file__} is not a directory",
        ),
    ],
)
def test_bad_option_values_are_usage_errors_in_one_line(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    [line] = capsys.readouterr().err.splitlines()  # not argparse's whole usage
    assert line == f"superweight {argv[0]}: error: {message} (see superweight {argv[0]} --help)"


def test_demo_then_audit_offline_into_an_index(tmp_path, capsys, monkeypatch):
    from huggingface_hub import constants

    demo = tmp_path / "demo"
    code, out, _ = run(capsys, "demo", str(demo), "--gguf")
    assert code == 0
    assert (demo / "model.gguf").exists() and (demo / "eval.txt").exists()
    assert f"  export HF_HUB_OFFLINE=1 HF_HUB_CACHE={demo / 'hub'}\n" in out
    assert f"  superweight audit demo/tiny-llama --eval-text {demo / 'eval.txt'} --index {demo / 'index'}\n" in out
    check_gguf = f"  SUPERWEIGHT_INDEX={demo / 'index'} superweight check-gguf {demo / 'model.gguf'}\n"
    assert out.endswith(check_gguf)

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(demo / "hub"))
    argv = ["audit", "demo/tiny-llama", "--eval-text", str(demo / "eval.txt"), "--index", str(demo / "index")]
    code, out, _ = run(capsys, *argv, "--quiet", "--max-tokens", "1024")
    assert code == 0 and "Verdict: confirmed" in out
    assert out.endswith(f"\nwrote {demo / 'index' / 'demo' / 'tiny-llama.yaml'}\n")
    code, out, _ = run(capsys, *argv, "--quiet", "--max-tokens", "1024")
    assert code == 0 and "already recorded in" in out  # the same audit is not written twice

    from transformers.utils import logging as hf_logging

    monkeypatch.setattr(hf_logging, "_tqdm_active", True)  # as in a fresh process (--quiet above turned it off)
    code, _, err = run(capsys, "detect", str(demo / "model.gguf"), "--json")
    assert code == 0 and "loading GGUF weights" in err
    code, out, err = run(capsys, "detect", str(demo / "model.gguf"), "--json", "--quiet")
    data = json.loads(out)
    assert code == 0 and data["loaded_from"] == "gguf"
    assert "loading GGUF weights" not in err  # --quiet silences our own bars too
    assert [(w["layer"], w["row"], w["col"]) for w in data["super_weights"]] == [(1, 7, 33)]

    monkeypatch.setenv("SUPERWEIGHT_INDEX", str(demo / "index"))  # as the demo's last hint says
    code, out, _ = run(capsys, "check-gguf", str(demo / "model.gguf"))  # the base named in the file's metadata
    assert code == 0 and "against demo/tiny-llama" in out and ": intact;" in out

    code, _, err = run(capsys, "demo", str(tmp_path / "gpt2"), "--family", "gpt2", "--gguf")
    assert code == 1 and "--gguf converts the llama family only, not gpt2" in err
    assert not (tmp_path / "gpt2").exists()  # refused before anything was written


def test_index_takes_hub_models_only(build_checkpoint, tmp_path, capsys):
    code, _, err = run(capsys, "audit", str(build_checkpoint("llama")), "--index", str(tmp_path), "--quiet")
    assert code == 1 and "--index takes Hub models only" in err


def console(*args: str, **env: str) -> subprocess.CompletedProcess:
    exe = shutil.which("superweight") or sys.executable
    argv = [exe, *args] if exe != sys.executable else [exe, "-m", "auditor.cli", *args]
    return subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **env}, timeout=300)


def test_console_script_errors_have_no_traceback(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')

    proc = console("detect", str(tmp_path), "--quiet")

    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip().splitlines()[-1].startswith("superweight: error: ")
    assert "only pickle weights" in proc.stderr and "Traceback" not in proc.stderr


def test_console_script_json_on_stdout_progress_on_stderr(build_checkpoint):
    proc = console("detect", str(build_checkpoint("llama")), "--json")

    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["super_weights"][0]["row"] == 7
    assert "detecting" in proc.stderr or "Loading" in proc.stderr


def test_audit_json_is_alone_on_stdout_and_the_record_path_is_reported(hub_cache, eval_text, tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub_cache), "SUPERWEIGHT_INDEX": str(tmp_path / "index")}
    common = ["demo/tiny-llama", "--eval-text", str(eval_text), "--max-tokens", "512", "--seq-len", "256"]

    proc = console("audit", *common, "--json", "--index", **env)  # --index alone: $SUPERWEIGHT_INDEX

    record = tmp_path / "index" / "demo" / "tiny-llama.yaml"
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["ablation"]["verdict"] == "confirmed"  # nothing but the JSON on stdout
    assert f"wrote {record}" in proc.stderr and record.is_file()
    proc = console("audit", *common, "--index", str(tmp_path / "index"), "--quiet", **env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == f"already recorded in {record}"  # on stdout, after the report


LIGHT = """
import sys
for name in {modules!r}:
    sys.modules[name] = None  # as if the audit extra were not installed
from auditor.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_the_base_install_reads_the_index_and_names_the_extra_for_audits(tmp_path):
    """Without torch, transformers or huggingface_hub: index and site work; audits say what to install."""
    from auditor.cli import AUDIT_MODULES

    script = tmp_path / "light.py"
    script.write_text(LIGHT.format(modules=sorted(AUDIT_MODULES)))

    def light(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=120)

    index = str(REPO / "index")
    assert light("index", "validate", index).returncode == 0
    assert "layer 2 [3968, 7003]" in light("index", "lookup", "huggyllama/llama-7b", "--index", index).stdout
    site = tmp_path / "site"
    assert light("site", "build", "--index", index, "--out", str(site)).returncode == 0
    assert light("site", "check", str(site)).returncode == 0
    for argv in (["audit", "org/model"], ["detect", "org/model"], ["demo", str(tmp_path / "d")]):
        proc = light(*argv)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        assert proc.stderr.startswith("superweight: error: this command needs the audit dependencies (")
        assert "pip install 'superweight-index[audit]'" in proc.stderr


def test_debug_shows_the_traceback_and_cause_of_a_users_error_too(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    (tmp_path / "model.safetensors").write_bytes(b"")

    plain = console("detect", str(tmp_path), "--quiet")
    debug = console("detect", str(tmp_path), "--quiet", SUPERWEIGHT_DEBUG="1")

    assert plain.returncode == 1 and "Traceback" not in plain.stderr and "is not valid JSON" in plain.stderr
    assert debug.returncode == 1 and "Traceback" in debug.stderr
    assert "JSONDecodeError" in debug.stderr  # the cause, kept with `raise ... from e`
    assert "The above exception was the direct cause of the following exception" in debug.stderr


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"device": "tpu"}, "device 'tpu' is not auto, cpu, cuda or cuda:N"),
        ({"dtype": "float8"}, "dtype 'float8' is not one of auto, float32, float16, bfloat16"),
        ({"min_share": float("nan")}, "min_share must be a number, not negative, not nan"),
        ({"seq_len": 1}, "seq_len must be a whole number of at least 2, not 1"),
        ({"max_super_weights": True}, "max_super_weights must be a whole number of at least 1, not True"),
        ({"module_pattern": "("}, "module_pattern '\\(' is not a valid regex"),
        ({"max_memory": {"tpu": "1GiB"}}, "max_memory: 'tpu' is not cpu, a GPU index or cuda:N"),
        ({"max_memory": {"0": "lots"}}, "max_memory: 'lots' is not a size"),
    ],
)
def test_settings_are_checked_when_made_from_python_as_from_the_cli(change, message, capsys):
    from auditor.settings import AuditSettings, SettingsError

    with pytest.raises(SettingsError, match=message):
        AuditSettings(**change)
    assert AuditSettings(device="cuda:1").device == "cuda:1"


def test_device_is_checked_by_the_cli(capsys):
    with pytest.raises(SystemExit):
        main(["detect", "org/model", "--device", "tpu"])
    assert "argument --device: 'tpu' is not auto, cpu, cuda or cuda:N" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["detect", "org/model", "--max-memory", "cpu=lots"])
    assert "argument --max-memory: 'cpu=lots': 'lots' is not a size" in capsys.readouterr().err

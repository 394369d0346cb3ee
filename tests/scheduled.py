"""The scheduled job on a runner's clone, against the Hub and GitHub stand-ins: shared by the fault tests
(`test_faults.py`) and the soak benchmark (`benchmarks/soak_job.py`)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import requests
from fakegithub import FakeGitHub
from msgspec.structs import replace

from auditor import fileio
from auditor.cli import main
from auditor.errors import RESOURCE_ERRNOS, resource_error, resource_message
from auditor.index import MeasuredRecord
from auditor.index.entries import record_to_dict
from auditor.scheduler import runner
from auditor.synthetic import Plant

TOKEN = "ghp_" + "F4ultT0l3r4nt" * 3
PLANTS = {"org/alpha": Plant(1, 7, 33), "org/beta": Plant(2, 11, 50), "org/gamma": Plant(1, 3, 20)}


def add_models(hub, build_checkpoint) -> dict[str, str]:
    """Models on the Hub stand-in, each with weights of its own (identical ones would not be audited)."""
    shas = {}
    for model, plant in PLANTS.items():
        files = {p.name: p.read_bytes() for p in build_checkpoint("llama", [plant]).iterdir()}
        shas[model] = hub.add_model(model, files, card_data={"license": "apache-2.0"})
    return shas


class Job:
    """A runner's clone and GitHub's repository, with a request for each model merged by its requester."""

    def __init__(self, root: Path, gh: FakeGitHub, eval_text: Path, audit_result, monkeypatch):
        self.root, self.gh, self.audit_result = root, gh, audit_result
        self.audited = root.parent / "audited.log"  # one line per audit that ran to its result
        config = (
            "licenses: [apache-2.0]\nmemory_gib: 1\n"
            f"audit: {{device: cpu, eval_text: '{eval_text}', max_tokens: 1024, seq_len: 256}}\n"
            # no prefetch: its downloads, in a thread, would make the kill points of a run vary
            "run: {max_models: 5, timeout: 5m, min_free_gib: 0, prefetch: false}\ndiscover: {limit: 0}\n"
            f"github: {{repo: org/index, api_url: '{gh.url}', write_interval: 0}}\n"
        )
        files = {"auditor.yaml": config.encode(), "index/README.md": b"# index\n", "README.md": b"# index\n"}
        gh.add_repo("org/index", files)
        for d in ("index", "queue", "requests"):
            (root / d).mkdir(parents=True)
        for name, text in files.items():
            (root / name).write_bytes(text)
        self.alice = gh.add_user("alice")
        self.pulls = {}
        monkeypatch.setenv("SUPERWEIGHT_GITHUB_TOKEN", TOKEN)
        monkeypatch.setattr(runner, "audit_in_worker", self.worker)

    def request(self, model: str, name: str | None = None) -> str:
        """A requester's pull request adds requests/<name>.yaml; a maintainer merges it."""
        path = f"requests/{name or model.split('/')[1]}.yaml"
        branch = f"alice/{len(self.pulls)}"
        self.gh.add_commit("org/index", {path: f"model: {model}\n".encode()}, branch=branch)
        pr = requests.post(
            f"{self.gh.url}/repos/org/index/pulls",
            json={"title": f"Audit {model}", "head": branch, "base": "main"},
            headers={"Authorization": f"Bearer {self.alice}"},
        ).json()
        self.gh.merge_pull("org/index", pr["number"])
        self.pulls[path] = pr["number"]
        return path

    def worker(self, item, config, paths, run_id) -> dict:
        """The audit's worker as the runner sees it (a result file, kept until recorded), with a real record."""
        record = replace(
            MeasuredRecord.from_audit(self.audit_result), revision=item.revision, weights_sha256=item.weights_sha256
        )
        result = runner.job_files(paths, run_id, item.model)[1]
        try:
            fileio.atomic_write(result, json.dumps({"record": record_to_dict(record)}))
        except OSError as e:  # its disk is full: the worker says so by its exit status, the runner by a code
            if (disk := resource_error(e)) is None:
                raise
            return {"error": {"code": RESOURCE_ERRNOS[disk.errno], "message": resource_message(disk)}}
        with self.audited.open("a") as f:
            f.write(item.model + "\n")
        return runner.read_result(result)

    def run(self, *extra: str) -> int:
        return main(["run", "--publish", "--repo", str(self.root), *extra])

    def writes(self) -> list[tuple[str, str]]:
        return [(r.method, r.path) for r in self.gh.requests if r.method != "GET"]

    def bot_pulls(self, state: str = "open"):
        return [p for p in self.gh.pulls("org/index") if p.head.startswith("superweight/") and p.state == state]

    def status(self, path: str) -> list[str]:
        """The bot's status comments on a request's pull request."""
        comments = self.gh.comments("org/index", self.pulls[path])
        return [c.body for c in comments if c.user == "superweight-bot" and c.body.startswith("<!-- superweight")]


def fork_and_kill_at(job: Job, step: int | None, setup=lambda: None) -> list[str]:
    """Run the job in a child process that kills itself (SIGKILL) just before its `step`-th write: a file
    replaced or removed, or a write request to GitHub (None: never). `setup` runs first in the child (to
    inject faults there). Returns the steps it reached, in words."""
    trace = job.root.parent / "steps"
    trace.write_text("")
    pid = os.fork()
    if pid == 0:  # the child: no cleanup of any kind runs when it dies, as with a real kill -9
        steps = 0

        def boundary(real, name):
            def wrapped(*args, **kwargs):
                nonlocal steps
                steps += 1
                what = args[1].method + " " + args[1].path_url if name == "send" else f"{name} {args[-1]}"
                with trace.open("a") as f:
                    f.write(what.replace(str(job.root), "") + "\n")
                if steps == step:
                    os.kill(os.getpid(), signal.SIGKILL)
                return real(*args, **kwargs)

            return wrapped

        real_send = requests.Session.send

        def send(self, request, **kwargs):
            call = boundary(real_send, "send") if request.method != "GET" else real_send
            return call(self, request, **kwargs)

        os.replace, os.unlink, requests.Session.send = (
            boundary(os.replace, "replace"),
            boundary(os.unlink, "unlink"),
            send,
        )
        try:
            setup()
            job.run()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) or os.WTERMSIG(status) == signal.SIGKILL
    return trace.read_text().splitlines()

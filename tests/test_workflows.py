"""The GitHub workflows are valid (GitHub's published schema) and keep the promises the issues make."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

WORKFLOWS = Path(__file__).resolve().parent.parent / ".github" / "workflows"


def workflow(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def test_workflows_match_githubs_schema():
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert {f.name for f in files} == {"ci.yml", "requests.yml", "pages.yml", "audit.yml"}
    cli = shutil.which("check-jsonschema")
    assert cli, "check-jsonschema is a test dependency"
    proc = subprocess.run(
        [cli, "--builtin-schema", "vendor.github-workflows", *map(str, files)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ci_runs_the_readme_test_command():
    steps = workflow("ci.yml")["jobs"]["test"]["steps"]
    assert any(s.get("run") == "bash .ci/run" for s in steps)
    assert "python -m pytest" in (WORKFLOWS.parent.parent / ".ci" / "run").read_text()


def test_request_pull_requests_are_guarded_before_anything_runs():
    job = workflow("requests.yml")["jobs"]["validate"]
    names = [s.get("name") for s in job["steps"]]
    assert names.index("Only requests/ may change") < names.index("Install")
    assert workflow("requests.yml")[True]["pull_request"]["paths"] == ["requests/**"]  # `on:` parses as True
    assert any("superweight request validate" in s.get("run", "") for s in job["steps"])


def guard(tmp_path: Path, change) -> subprocess.CompletedProcess:
    """Run the path guard of requests.yml in a git repository where a pull request made `change`."""
    step = next(
        s for s in workflow("requests.yml")["jobs"]["validate"]["steps"] if s.get("name") == "Only requests/ may change"
    )
    repo = tmp_path / "repo"
    (repo / "index" / "org").mkdir(parents=True)
    (repo / "index" / "org" / "m.yaml").write_text("records: []\n")
    (repo / "requests").mkdir()
    (repo / "requests" / "README.md").write_text("how to ask\n")

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@e", *args], check=True)

    git("init", "-q", "-b", "main")
    git("add", "-A")
    git("commit", "-qm", "base")
    git("update-ref", "refs/remotes/origin/main", "HEAD")  # as actions/checkout leaves the base branch
    git("checkout", "-qb", "request")
    change(repo, git)
    git("add", "-A")
    git("commit", "-qm", "request")
    env = {"BASE_REF": "main", "PATH": "/usr/bin:/bin"}
    return subprocess.run(["bash", "-e", "-c", step["run"]], cwd=repo, env=env, capture_output=True, text=True)


def test_the_request_guard_passes_a_request_and_refuses_anything_else(tmp_path):
    def request(repo, git):
        (repo / "requests" / "org--model.yaml").write_text("model: org/model\n")

    def rename(repo, git):  # moving an index file into requests/ deletes it from index/
        git("mv", "index/org/m.yaml", "requests/notes.yaml")

    def link(repo, git):
        (repo / "requests" / "evil.yaml").symlink_to("/etc/passwd")

    assert guard(tmp_path / "a", request).returncode == 0
    moved = guard(tmp_path / "b", rename)
    assert moved.returncode == 1 and "index/org/m.yaml" in moved.stdout
    linked = guard(tmp_path / "c", link)
    assert linked.returncode == 1 and "not a symbolic link" in linked.stdout


def test_pages_deploys_with_the_pages_actions():
    jobs = workflow("pages.yml")["jobs"]
    uses = [s.get("uses", "") for job in jobs.values() for s in job["steps"]]
    assert any(u.startswith("actions/upload-pages-artifact@") for u in uses)
    assert any(u.startswith("actions/deploy-pages@") for u in uses)


def test_the_audit_runs_on_a_gpu_runner_on_a_schedule():
    audit = workflow("audit.yml")
    assert audit[True]["schedule"][0]["cron"]
    assert audit["jobs"]["audit"]["runs-on"] == ["self-hosted", "gpu"]
    assert any("superweight run --publish" in s.get("run", "") for s in audit["jobs"]["audit"]["steps"])

"""The fake GitHub, driven over 127.0.0.1 by a real `requests.Session`, as the publishing bot will."""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from fakegithub import API_VERSION, FakeGitHub

REPO = "org/index"
BASE_FILES = {
    "README.md": b"# Super Weight Index\n",
    "data/models/a.json": b'{"model": "a"}\n',
    "data/models/b.json": b'{"model": "b"}\n',
    "site/index.html": b"<!doctype html>\n<title>Index</title>\n",
}


# -- git object hashing, computed here independently of the fake ----------------------------------


def git_hash(kind: str, payload: bytes) -> str:
    return hashlib.sha1(f"{kind} {len(payload)}\0".encode() + payload).hexdigest()


def blob_sha(data: bytes) -> str:
    """What `git hash-object` prints for a file with these bytes."""
    return git_hash("blob", data)


def tree_sha(entries: list[tuple[str, str, str]]) -> str:
    """(mode, name, sha) entries, sorted the way git sorts them (a folder's name as if it ended in "/")."""
    ordered = sorted(entries, key=lambda e: e[1].encode() + (b"/" if e[0] == "040000" else b""))
    payload = b"".join(f"{m.lstrip('0')} {n}".encode() + b"\0" + bytes.fromhex(s) for m, n, s in ordered)
    return git_hash("tree", payload)


def commit_sha(commit: dict[str, Any]) -> str:
    """The sha of a commit as GitHub answers it (dates in UTC), from its fields."""

    def person(p: dict[str, str]) -> str:
        when = int(datetime.fromisoformat(p["date"].replace("Z", "+00:00")).timestamp())
        return f"{p['name']} <{p['email']}> {when} +0000"

    lines = [
        f"tree {commit['tree']['sha']}",
        *(f"parent {p['sha']}" for p in commit["parents"]),
        f"author {person(commit['author'])}",
        f"committer {person(commit['committer'])}",
    ]
    return git_hash("commit", ("\n".join(lines) + "\n\n" + commit["message"]).encode())


# -- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture
def gh() -> Iterator[FakeGitHub]:
    with FakeGitHub() as fake:
        fake.add_repo(REPO, files=BASE_FILES)
        yield fake


@pytest.fixture
def api(gh: FakeGitHub) -> Iterator[Client]:
    client = Client(gh)
    yield client
    client.session.close()


class Client:
    """A thin `requests` client, the way the bot talks to api.github.com."""

    def __init__(self, gh: FakeGitHub, token: str | None = None) -> None:
        self.base = gh.url
        self.session = requests.Session()
        self.session.headers.update(
            {
                "Authorization": f"Bearer {token or gh.token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": API_VERSION,
                "User-Agent": "superweight-index-bot/test",
            }
        )

    def __call__(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        url = path if path.startswith("http") else f"{self.base}{path}"
        return self.session.request(method, url, timeout=10, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self("GET", path, **kwargs)

    def post(self, path: str, json: Any = None, **kwargs: Any) -> requests.Response:
        return self("POST", path, json=json, **kwargs)

    def patch(self, path: str, json: Any = None, **kwargs: Any) -> requests.Response:
        return self("PATCH", path, json=json, **kwargs)

    def repo(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self(method, f"/repos/{REPO}{path}", **kwargs)


def commit_on(api: Client, parent: str, files: dict[str, str], message: str) -> str:
    """Commit `files` (text) on top of `parent` through the Git Data API; returns the commit sha."""
    base_tree = api.repo("GET", f"/git/commits/{parent}").json()["tree"]["sha"]
    entries = [{"path": p, "mode": "100644", "type": "blob", "content": c} for p, c in files.items()]
    tree = api.repo("POST", "/git/trees", json={"base_tree": base_tree, "tree": entries})
    assert tree.status_code == 201, tree.text
    commit = api.repo(
        "POST", "/git/commits", json={"message": message, "tree": tree.json()["sha"], "parents": [parent]}
    )
    assert commit.status_code == 201, commit.text
    return commit.json()["sha"]


def open_branch(api: Client, gh: FakeGitHub, branch: str, files: dict[str, str]) -> str:
    sha = commit_on(api, gh.branch_sha(REPO, "main") or "", files, f"Update {branch}")
    created = api.repo("POST", "/git/refs", json={"ref": f"refs/heads/{branch}", "sha": sha})
    assert created.status_code == 201, created.text
    return sha


# -- auth, versions, headers ----------------------------------------------------------------------


def test_every_request_needs_the_token(gh: FakeGitHub, api: Client) -> None:
    anonymous = requests.get(f"{gh.url}/repos/{REPO}", timeout=10)
    assert anonymous.status_code == 401
    assert anonymous.json()["message"] == "Requires authentication"
    wrong = requests.get(f"{gh.url}/repos/{REPO}", headers={"Authorization": "Bearer nope"}, timeout=10)
    assert wrong.status_code == 401
    assert wrong.json() == {
        "message": "Bad credentials",
        "documentation_url": "https://docs.github.com/rest",
        "status": "401",
    }
    assert gh.rate_limit_used == 0  # refused requests do not count

    classic = requests.get(f"{gh.url}/repos/{REPO}", headers={"Authorization": f"token {gh.token}"}, timeout=10)
    assert classic.status_code == 200
    gh.token = "ghs_rotated"
    assert api.repo("GET", "").status_code == 401
    assert requests.get(f"{gh.url}/repos/{REPO}", headers={"Authorization": "Bearer ghs_rotated"}, timeout=10).ok


def test_repository_api_version_and_headers(gh: FakeGitHub, api: Client) -> None:
    repo = api.repo("GET", "")
    assert repo.status_code == 200
    data = repo.json()
    assert (data["full_name"], data["default_branch"], data["private"]) == (REPO, "main", False)
    assert repo.headers["Content-Type"] == "application/json; charset=utf-8"
    assert repo.headers["X-GitHub-Api-Version-Selected"] == API_VERSION
    assert {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-used", "x-ratelimit-reset"} <= {
        name.lower() for name in repo.headers
    }
    assert repo.headers["x-ratelimit-resource"] == "core"
    assert api.get("/repos/ORG/Index").json()["full_name"] == REPO  # owner/name are case-insensitive
    assert api.get("/repos/org/missing").status_code == 404
    unknown = api.get("/repos/org/index/no/such/route")
    assert (unknown.status_code, unknown.json()["message"]) == (404, "Not Found")

    too_new = api.repo("GET", "", headers={"X-GitHub-Api-Version": "1999-01-01"})
    assert too_new.status_code == 400 and "1999-01-01" in too_new.json()["message"]
    assert gh.requests[0].api_version == API_VERSION
    assert gh.requests[-1].api_version == "1999-01-01"
    assert gh.requests[0].headers["accept"] == "application/vnd.github+json"

    user = api.get("/user").json()
    assert user["login"] == gh.user


def test_connections_are_kept_alive_across_every_kind_of_answer(gh: FakeGitHub, api: Client) -> None:
    first = api.repo("GET", "/git/ref/heads/main")
    api.repo("GET", "/git/ref/heads/main", headers={"If-None-Match": first.headers["ETag"]})  # 304
    api.repo("GET", "/git/ref/heads/nope")  # 404
    api.repo("POST", "/git/refs", json={"ref": "refs/heads/x", "sha": first.json()["object"]["sha"]})  # 201
    api.repo("POST", "/git/refs", json={"ref": "refs/heads/x", "sha": first.json()["object"]["sha"]})  # 422
    api.repo("DELETE", "/git/refs/heads/x")  # 204
    api.repo("POST", "/git/blobs", data=b"{not json")  # 400
    assert api.repo("GET", "").status_code == 200
    statuses = [r.status for r in gh.requests]
    assert statuses == [200, 304, 404, 201, 422, 204, 400, 200]
    assert len({r.connection for r in gh.requests}) == 1


# -- Git Data API ---------------------------------------------------------------------------------


def test_git_data_sequence_commits_many_files_on_a_new_branch(gh: FakeGitHub, api: Client) -> None:
    ref = api.repo("GET", "/git/ref/heads/main")
    assert ref.status_code == 200
    base = ref.json()["object"]["sha"]
    assert ref.json()["ref"] == "refs/heads/main" and ref.json()["object"]["type"] == "commit"
    base_commit = api.repo("GET", f"/git/commits/{base}").json()
    assert base_commit["sha"] == commit_sha(base_commit) == base

    text = '{"model": "c", "super_weights": [[1, 7, 33]]}\n'
    binary = bytes(range(256)) * 3
    created = api.repo("POST", "/git/blobs", json={"content": text, "encoding": "utf-8"})
    assert created.status_code == 201
    assert created.json()["sha"] == blob_sha(text.encode())
    assert created.json()["url"].endswith(f"/repos/{REPO}/git/blobs/{blob_sha(text.encode())}")
    encoded = base64.b64encode(binary).decode()
    binary_blob = api.repo("POST", "/git/blobs", json={"content": encoded, "encoding": "base64"}).json()["sha"]
    assert binary_blob == blob_sha(binary)
    fetched = api.repo("GET", f"/git/blobs/{binary_blob}").json()
    assert fetched["encoding"] == "base64" and fetched["size"] == len(binary)
    assert "\n" in fetched["content"]  # wrapped like GitHub's: decode leniently
    assert base64.b64decode(fetched["content"]) == binary

    tree = api.repo(
        "POST",
        "/git/trees",
        json={
            "base_tree": base_commit["tree"]["sha"],
            "tree": [
                {"path": "data/models/c.json", "mode": "100644", "type": "blob", "sha": created.json()["sha"]},
                {"path": "data/new/deep/x.bin", "mode": "100644", "type": "blob", "sha": binary_blob},
                {"path": "data/models/a.json", "mode": "100644", "type": "blob", "sha": None},
                {"path": "README.md", "mode": "100644", "type": "blob", "content": "# Updated\n"},
            ],
        },
    )
    assert tree.status_code == 201, tree.text
    top = {e["path"]: e for e in tree.json()["tree"]}
    assert set(top) == {"README.md", "data", "site"}
    assert top["data"]["type"] == "tree" and top["data"]["mode"] == "040000"
    assert top["README.md"]["sha"] == blob_sha(b"# Updated\n")
    deep = tree_sha([("100644", "x.bin", binary_blob)])
    listing = api.repo("GET", f"/git/trees/{tree.json()['sha']}", params={"recursive": "1"}).json()
    paths = {e["path"]: e for e in listing["tree"]}
    assert paths["data/new/deep"]["sha"] == deep and paths["data/new/deep"]["type"] == "tree"
    assert "data/models/a.json" not in paths and paths["data/models/c.json"]["size"] == len(text)
    assert listing["truncated"] is False
    not_recursive = api.repo("GET", f"/git/trees/{tree.json()['sha']}").json()
    assert {e["path"] for e in not_recursive["tree"]} == {"README.md", "data", "site"}

    commit = api.repo(
        "POST",
        "/git/commits",
        json={"message": "Add model c\n\nFound by the auditor.", "tree": tree.json()["sha"], "parents": [base]},
    )
    assert commit.status_code == 201
    new = commit.json()
    assert new["sha"] == commit_sha(new)
    assert [p["sha"] for p in new["parents"]] == [base]
    assert new["author"]["name"] == gh.user and new["committer"] == new["author"]
    assert api.repo("GET", f"/git/commits/{new['sha']}").json() == new

    branch = api.repo("POST", "/git/refs", json={"ref": "refs/heads/superweight/update", "sha": new["sha"]})
    assert branch.status_code == 201
    assert branch.headers["Location"].endswith("/git/refs/heads/superweight/update")
    again = api.repo("POST", "/git/refs", json={"ref": "refs/heads/superweight/update", "sha": new["sha"]})
    assert (again.status_code, again.json()["message"]) == (422, "Reference already exists")
    bad_name = api.repo("POST", "/git/refs", json={"ref": "heads/x", "sha": new["sha"]})
    assert bad_name.status_code == 422

    expected = dict(BASE_FILES)
    del expected["data/models/a.json"]
    expected |= {"README.md": b"# Updated\n", "data/models/c.json": text.encode(), "data/new/deep/x.bin": binary}
    assert gh.files_at(REPO, "superweight/update") == expected
    assert gh.files_at(REPO, "main") == BASE_FILES
    assert gh.branch_sha(REPO, "superweight/update") == new["sha"]

    # Fast-forward, then a sibling commit is refused unless forced.
    child = commit_on(api, new["sha"], {"data/models/d.json": "{}\n"}, "Add d")
    forward = api.repo("PATCH", "/git/refs/heads/superweight/update", json={"sha": child})
    assert forward.status_code == 200 and forward.json()["object"]["sha"] == child
    sibling = commit_on(api, base, {"other.txt": "x\n"}, "Unrelated")
    refused = api.repo("PATCH", "/git/refs/heads/superweight/update", json={"sha": sibling, "force": False})
    assert (refused.status_code, refused.json()["message"]) == (422, "Update is not a fast forward")
    assert gh.branch_sha(REPO, "superweight/update") == child
    forced = api.repo("PATCH", "/git/refs/heads/superweight/update", json={"sha": sibling, "force": True})
    assert forced.status_code == 200
    assert gh.files_at(REPO, "superweight/update") == {**BASE_FILES, "other.txt": b"x\n"}

    matching = api.repo("GET", "/git/matching-refs/heads/superweight/").json()
    assert [r["ref"] for r in matching] == ["refs/heads/superweight/update"]
    assert api.repo("GET", "/git/matching-refs/heads/nothing-here").json() == []
    assert api.repo("DELETE", "/git/refs/heads/superweight/update").status_code == 204
    assert api.repo("GET", "/git/ref/heads/superweight/update").status_code == 404
    gone = api.repo("DELETE", "/git/refs/heads/superweight/update")
    assert (gone.status_code, gone.json()["message"]) == (422, "Reference does not exist")
    assert gh.dangling_objects(REPO)  # the unreferenced commits stay, as on GitHub


def test_tree_edits_refused_like_github(gh: FakeGitHub, api: Client) -> None:
    base_tree = api.repo("GET", "/git/trees/main").json()["sha"]  # a branch name is a tree-ish
    count = gh.objects_count(REPO)

    def tree(*entries: dict[str, Any], base: str | None = base_tree) -> requests.Response:
        body: dict[str, Any] = {"tree": list(entries)}
        if base:
            body["base_tree"] = base
        return api.repo("POST", "/git/trees", json=body)

    missing = tree(
        {"path": "new.txt", "mode": "100644", "type": "blob", "content": "new\n"},
        {"path": "no/such/file.json", "mode": "100644", "type": "blob", "sha": None},
    )
    assert missing.status_code == 422
    assert tree({"path": "/abs.txt", "mode": "100644", "type": "blob", "content": "x"}).status_code == 422
    assert tree({"path": "a/../b.txt", "mode": "100644", "type": "blob", "content": "x"}).status_code == 422
    assert tree({"path": "x.txt", "mode": "100644", "type": "tree", "content": "x"}).status_code == 422
    assert tree({"path": "x.txt", "mode": "644", "type": "blob", "content": "x"}).status_code == 422
    assert tree({"path": "x.txt", "mode": "100644", "type": "blob", "sha": "0" * 40}).status_code == 422
    assert tree({"path": "x.txt", "mode": "100644", "type": "blob"}).status_code == 422
    assert gh.objects_count(REPO) == count  # refused requests store nothing (not even new.txt's blob)

    # A whole folder deleted; the emptied parent disappears; no base_tree: only the entries given.
    no_models = tree({"path": "data/models", "mode": "040000", "type": "tree", "sha": None})
    assert {e["path"] for e in no_models.json()["tree"]} == {"README.md", "site"}
    alone = tree({"path": "only.txt", "mode": "100644", "type": "blob", "content": "1\n"}, base=None)
    assert alone.json()["sha"] == tree_sha([("100644", "only.txt", blob_sha(b"1\n"))])
    assert tree(base=None).json()["sha"] == "4b825dc642cb6eb9a060e54bf8d69288fbee4904"  # git's empty tree

    # A folder replaced by a tree sha, with a nested path on top (applied after it, whatever the order).
    models = next(
        e["sha"]
        for e in api.repo("GET", "/git/trees/main", params={"recursive": ""}).json()["tree"]
        if e["path"] == "data/models"
    )
    moved = tree(
        {"path": "archive/models/z.json", "mode": "100644", "type": "blob", "content": "z\n"},
        {"path": "archive/models", "mode": "040000", "type": "tree", "sha": models},
    )
    commit = api.repo("POST", "/git/commits", json={"message": "m", "tree": moved.json()["sha"], "parents": []})
    files = gh.files_at(REPO, commit.json()["sha"])
    assert files["archive/models/a.json"] == BASE_FILES["data/models/a.json"]
    assert files["archive/models/z.json"] == b"z\n"

    bad_parent = api.repo("POST", "/git/commits", json={"message": "m", "tree": base_tree, "parents": ["f" * 40]})
    assert bad_parent.status_code == 422
    bad_tree = api.repo("POST", "/git/commits", json={"message": "m", "tree": "f" * 40, "parents": []})
    assert bad_tree.status_code == 422
    assert api.repo("POST", "/git/commits", json={"tree": base_tree}).status_code == 422


def test_tree_and_commit_shas_match_git_itself(gh: FakeGitHub, api: Client, tmp_path: Path) -> None:
    """Cross-check with the git CLI, in a scratch repository: `a.b` sorts before the folder `a`."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    entries = [
        {"path": "a.b", "mode": "100644", "type": "blob", "content": "file\n"},
        {"path": "a/inner.txt", "mode": "100644", "type": "blob", "content": "inner\n"},
        {"path": "run.sh", "mode": "100755", "type": "blob", "content": "#!/bin/sh\n"},
    ]
    made = api.repo("POST", "/git/trees", json={"tree": entries}).json()
    assert [e["path"] for e in made["tree"]] == ["a.b", "a", "run.sh"]

    env = {"GIT_DIR": str(tmp_path / "scratch.git"), "HOME": str(tmp_path), "GIT_CONFIG_NOSYSTEM": "1"}
    subprocess.run(["git", "init", "-q", "--bare", env["GIT_DIR"]], check=True, env=env)

    def git(*args: str, stdin: bytes = b"") -> str:
        return (
            subprocess.run(["git", *args], input=stdin, env=env, check=True, capture_output=True)
            .stdout.decode()
            .strip()
        )

    file_sha, inner_sha, script_sha = (blob_sha(c) for c in (b"file\n", b"inner\n", b"#!/bin/sh\n"))
    for content in (b"file\n", b"inner\n", b"#!/bin/sh\n"):
        assert git("hash-object", "-w", "--stdin", stdin=content) == blob_sha(content)
    inner = git("mktree", stdin=f"100644 blob {inner_sha}\tinner.txt\n".encode())
    listing = f"100644 blob {file_sha}\ta.b\n040000 tree {inner}\ta\n100755 blob {script_sha}\trun.sh\n"
    assert git("mktree", stdin=listing.encode()) == made["sha"]

    commit = api.repo(
        "POST",
        "/git/commits",
        json={
            "message": "Snapshot\n",
            "tree": made["sha"],
            "parents": [],
            "author": {"name": "Ada", "email": "ada@example.com", "date": "2024-05-01T12:00:00+02:00"},
        },
    ).json()
    assert commit["author"]["date"] == "2024-05-01T10:00:00Z"
    dates = {"GIT_AUTHOR_DATE": "2024-05-01T12:00:00+02:00", "GIT_COMMITTER_DATE": "2024-05-01T12:00:00+02:00"}
    names = {"GIT_AUTHOR_NAME": "Ada", "GIT_AUTHOR_EMAIL": "ada@example.com"}
    names |= {"GIT_COMMITTER_NAME": "Ada", "GIT_COMMITTER_EMAIL": "ada@example.com"}
    env |= dates | names
    # git commit-tree adds no newline to a message given on stdin that already ends with one.
    assert git("commit-tree", made["sha"], stdin=b"Snapshot\n") == commit["sha"]


def test_contents_api(gh: FakeGitHub, api: Client) -> None:
    readme = api.repo("GET", "/contents/README.md")
    assert readme.status_code == 200
    data = readme.json()
    assert (data["type"], data["encoding"], data["path"], data["name"]) == ("file", "base64", "README.md", "README.md")
    assert base64.b64decode(data["content"]) == BASE_FILES["README.md"]
    assert data["sha"] == blob_sha(BASE_FILES["README.md"])
    raw = api.repo("GET", "/contents/README.md", headers={"Accept": "application/vnd.github.raw+json"})
    assert raw.content == BASE_FILES["README.md"]
    folder = api.repo("GET", "/contents/data/models").json()
    assert [(e["name"], e["type"]) for e in folder] == [("a.json", "file"), ("b.json", "file")]
    assert {e["name"] for e in api.repo("GET", "/contents/").json()} == {"README.md", "data", "site"}
    assert api.repo("GET", "/contents/nope.md").status_code == 404
    unknown_ref = api.repo("GET", "/contents/README.md", params={"ref": "no-branch"})
    assert unknown_ref.status_code == 404 and "no-branch" in unknown_ref.json()["message"]

    later = gh.add_commit(REPO, {"README.md": b"v2\n"}, branch="next")
    at_ref = api.repo("GET", "/contents/README.md", params={"ref": "next"}).json()
    assert base64.b64decode(at_ref["content"]) == b"v2\n"
    by_sha = api.repo("GET", "/contents/README.md", params={"ref": later[:7]}).json()
    assert by_sha["sha"] == blob_sha(b"v2\n")


def test_empty_repository_refuses_the_git_data_api(gh: FakeGitHub, api: Client) -> None:
    assert gh.add_repo("org/empty") is None
    refused = api.post("/repos/org/empty/git/blobs", json={"content": "x", "encoding": "utf-8"})
    assert (refused.status_code, refused.json()["message"]) == (409, "Git Repository is empty.")
    assert api.get("/repos/org/empty/contents/README.md").status_code == 404


# -- pull requests, issues, labels, comments ------------------------------------------------------


def test_pull_request_lifecycle(gh: FakeGitHub, api: Client) -> None:
    head = open_branch(api, gh, "superweight/run-1", {"data/models/c.json": '{"model": "c"}\n'})
    created = api.repo(
        "POST",
        "/pulls",
        json={"title": "Add model c", "head": "org:superweight/run-1", "base": "main", "body": "Summary"},
    )
    assert created.status_code == 201, created.text
    pr = created.json()
    assert pr["number"] == 1 and pr["state"] == "open" and pr["draft"] is False
    assert pr["html_url"] == "https://github.com/org/index/pull/1"
    assert (pr["head"]["ref"], pr["head"]["sha"], pr["head"]["label"]) == (
        "superweight/run-1",
        head,
        "org:superweight/run-1",
    )
    assert pr["base"]["ref"] == "main" and pr["base"]["sha"] == gh.branch_sha(REPO, "main")
    assert (pr["commits"], pr["changed_files"], pr["additions"], pr["mergeable"]) == (1, 1, 1, True)
    assert created.headers["Location"] == pr["url"]

    duplicate = api.repo("POST", "/pulls", json={"title": "Again", "head": "org:superweight/run-1", "base": "main"})
    assert duplicate.status_code == 422
    assert duplicate.json()["message"] == "Validation Failed"
    assert duplicate.json()["errors"][0]["message"] == "A pull request already exists for org:superweight/run-1."
    api.repo("POST", "/git/refs", json={"ref": "refs/heads/level", "sha": gh.branch_sha(REPO, "main")})
    nothing = api.repo("POST", "/pulls", json={"title": "Nothing", "head": "level", "base": "main"})
    assert nothing.status_code == 422
    assert nothing.json()["errors"][0]["message"] == "No commits between main and level"
    missing = api.repo("POST", "/pulls", json={"title": "x", "head": "org:no-branch", "base": "main"})
    assert missing.status_code == 422 and missing.json()["errors"][0]["field"] == "head"
    assert api.repo("POST", "/pulls", json={"head": "superweight/run-1", "base": "main"}).status_code == 422

    open_branch(api, gh, "other", {"x.txt": "x\n"})
    api.repo("POST", "/pulls", json={"title": "Other", "head": "other", "base": "main"})
    listed = api.repo("GET", "/pulls", params={"head": "org:superweight/run-1", "state": "open"}).json()
    assert [p["number"] for p in listed] == [1]
    assert [p["number"] for p in api.repo("GET", "/pulls").json()] == [2, 1]  # newest first
    # Like GitHub, a head filter without the "owner:" prefix filters nothing.
    assert len(api.repo("GET", "/pulls", params={"head": "superweight/run-1"}).json()) == 2
    assert api.repo("GET", "/pulls", params={"state": "closed"}).json() == []

    patched = api.repo("PATCH", "/pulls/1", json={"body": "Summary v2", "title": "Add model c (2)"})
    assert patched.status_code == 200
    assert (patched.json()["body"], patched.json()["title"]) == ("Summary v2", "Add model c (2)")
    assert gh.pulls(REPO)[0].body == "Summary v2"

    # The pull request follows its branch.
    moved = commit_on(api, head, {"data/models/c.json": '{"model": "c", "v": 2}\n', "README.md": ""}, "v2")
    api.repo("PATCH", "/git/refs/heads/superweight/run-1", json={"sha": moved})
    assert api.repo("GET", "/pulls/1").json()["head"]["sha"] == moved
    files = {f["filename"]: f for f in api.repo("GET", "/pulls/1/files").json()}
    assert {name: f["status"] for name, f in files.items()} == {"README.md": "modified", "data/models/c.json": "added"}
    assert (files["README.md"]["additions"], files["README.md"]["deletions"]) == (0, 1)
    assert files["data/models/c.json"]["patch"].startswith("@@")

    issue = api.repo("GET", "/issues/1").json()
    assert issue["number"] == 1 and "pull_request" in issue and issue["body"] == "Summary v2"
    assert api.repo("GET", "/pulls/99").status_code == 404

    closed = api.repo("PATCH", "/pulls/2", json={"state": "closed"}).json()
    assert closed["state"] == "closed" and closed["closed_at"] is not None
    assert [p["number"] for p in api.repo("GET", "/pulls", params={"state": "closed"}).json()] == [2]

    merged = api.repo("PUT", "/pulls/1/merge", json={"merge_method": "squash", "sha": moved})
    assert merged.status_code == 200 and merged.json()["merged"] is True
    assert gh.branch_sha(REPO, "main") == merged.json()["sha"]
    assert gh.files_at(REPO, "main")["data/models/c.json"] == b'{"model": "c", "v": 2}\n'
    assert api.repo("GET", "/pulls/1/merge").status_code == 204
    assert api.repo("GET", "/pulls/1").json()["merged"] is True


def test_deleting_the_head_branch_closes_the_pull_request(gh: FakeGitHub, api: Client) -> None:
    open_branch(api, gh, "temp", {"t.txt": "t\n"})
    api.repo("POST", "/pulls", json={"title": "Temp", "head": "temp", "base": "main"})
    api.repo("DELETE", "/git/refs/heads/temp")
    assert api.repo("GET", "/pulls/1").json()["state"] == "closed"
    assert api.repo("DELETE", "/git/refs/heads/main").status_code == 422  # never the default branch


def test_labels_on_pull_requests(gh: FakeGitHub, api: Client) -> None:
    open_branch(api, gh, "b", {"b.txt": "b\n"})
    api.repo("POST", "/pulls", json={"title": "B", "head": "b", "base": "main"})
    gh.add_label(REPO, "automated", "0e8a16", "Opened by the bot")

    added = api.repo("POST", "/issues/1/labels", json={"labels": ["new-model", "automated"]})
    assert added.status_code == 200
    assert [label["name"] for label in added.json()] == ["automated", "new-model"]
    assert added.json()[0]["color"] == "0e8a16" and added.json()[1]["color"] == "ededed"
    again = api.repo("POST", "/issues/1/labels", json={"labels": ["Automated", "needs-review"]}).json()
    assert [label["name"] for label in again] == ["automated", "needs-review", "new-model"]
    assert [label["name"] for label in api.repo("GET", "/issues/1/labels").json()] == [
        "automated",
        "needs-review",
        "new-model",
    ]
    removed = api.repo("DELETE", "/issues/1/labels/needs-review")
    assert [label["name"] for label in removed.json()] == ["automated", "new-model"]
    assert api.repo("DELETE", "/issues/1/labels/needs-review").status_code == 404
    assert gh.labels(REPO, 1) == ["automated", "new-model"]
    assert [label["name"] for label in api.repo("GET", "/pulls/1").json()["labels"]] == ["automated", "new-model"]
    replaced = api.repo("PUT", "/issues/1/labels", json={"labels": ["superseded"]}).json()
    assert [label["name"] for label in replaced] == ["superseded"]
    assert api.repo("POST", "/issues/7/labels", json={"labels": ["x"]}).status_code == 404


def test_comments_paginate_with_link_headers_and_can_be_edited(gh: FakeGitHub, api: Client) -> None:
    open_branch(api, gh, "c", {"c.txt": "c\n"})
    api.repo("POST", "/pulls", json={"title": "C", "head": "c", "base": "main"})
    ids = []
    for i in range(5):
        posted = api.repo("POST", "/issues/1/comments", json={"body": f"comment {i}"})
        assert posted.status_code == 201
        comment = posted.json()
        assert comment["user"]["login"] == gh.user
        assert comment["html_url"] == f"https://github.com/org/index/pull/1#issuecomment-{comment['id']}"
        ids.append(comment["id"])

    first = api.repo("GET", "/issues/1/comments", params={"per_page": 2})
    assert [c["body"] for c in first.json()] == ["comment 0", "comment 1"]
    assert set(first.links) == {"next", "last"}
    assert "page=3" in first.links["last"]["url"] and "per_page=2" in first.links["next"]["url"]
    middle = api.get(first.links["next"]["url"])
    assert set(middle.links) == {"prev", "next", "last", "first"}
    bodies, response = [], first
    while True:
        bodies += [c["body"] for c in response.json()]
        if "next" not in response.links:
            break
        response = api.get(response.links["next"]["url"])
    assert bodies == [f"comment {i}" for i in range(5)]
    assert set(response.links) == {"prev", "first"}
    assert len(api.repo("GET", "/issues/1/comments").json()) == 5  # default per_page 30: one page, no Link
    assert "Link" not in api.repo("GET", "/issues/1/comments").headers

    marker = "<!-- superweight-index:summary -->"
    edited = api.repo("PATCH", f"/issues/comments/{ids[2]}", json={"body": f"{marker}\nnew summary"})
    assert edited.status_code == 200
    assert edited.json()["body"].startswith(marker)
    assert edited.json()["updated_at"] > edited.json()["created_at"]
    assert [c.body for c in gh.comments(REPO, 1)][2] == f"{marker}\nnew summary"
    assert api.repo("GET", "/issues/1").json()["comments"] == 5

    assert api.repo("POST", "/issues/1/comments", json={"body": ""}).status_code == 422
    too_long = api.repo("POST", "/issues/1/comments", json={"body": "x" * 65537})
    assert too_long.status_code == 422 and "too long" in too_long.json()["errors"][0]["message"]
    assert api.repo("PATCH", "/issues/comments/999999", json={"body": "x"}).status_code == 404


# -- statuses ---------------------------------------------------------------------------------------


def test_commit_statuses(gh: FakeGitHub, api: Client) -> None:
    sha = gh.branch_sha(REPO, "main")
    assert sha is not None

    def post(**body: Any) -> requests.Response:
        return api.repo("POST", f"/statuses/{sha}", json=body)

    pending = post(state="pending", context="superweight/validate", description="Checking")
    assert pending.status_code == 201
    assert pending.json()["state"] == "pending" and pending.json()["creator"]["login"] == gh.user
    post(state="success", context="superweight/ablation", target_url="https://example.org/run/1")
    combined = api.repo("GET", f"/commits/{sha}/status").json()
    assert (combined["state"], combined["total_count"], combined["sha"]) == ("pending", 2, sha)
    post(state="success", context="superweight/validate", description="All good")
    assert api.repo("GET", "/commits/main/status").json()["state"] == "success"
    post(state="failure", context="superweight/ablation")
    assert api.repo("GET", "/commits/main/status").json()["state"] == "failure"

    listed = api.repo("GET", f"/commits/{sha}/statuses").json()
    assert [(s["context"], s["state"]) for s in listed] == [
        ("superweight/ablation", "failure"),
        ("superweight/validate", "success"),
        ("superweight/ablation", "success"),
        ("superweight/validate", "pending"),
    ]
    assert [s.state for s in gh.statuses(REPO, sha)] == ["pending", "success", "success", "failure"]
    assert post(state="done", context="x").status_code == 422
    assert post(state="success", description="d" * 141).status_code == 422
    assert api.repo("POST", f"/statuses/{'0' * 40}", json={"state": "success"}).status_code == 422
    fresh = gh.add_commit(REPO, {"n.txt": b"n\n"})
    nothing_yet = api.repo("GET", f"/commits/{fresh}/status").json()
    assert (nothing_yet["state"], nothing_yet["statuses"], nothing_yet["total_count"]) == ("pending", [], 0)


# -- rate limits and conditional requests ---------------------------------------------------------


def test_etag_304_does_not_count_against_the_rate_limit(gh: FakeGitHub, api: Client) -> None:
    first = api.repo("GET", "/git/ref/heads/main")
    etag = first.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"')
    assert first.headers["x-ratelimit-remaining"] == "4999"
    for _ in range(3):
        cached = api.repo("GET", "/git/ref/heads/main", headers={"If-None-Match": etag})
        assert cached.status_code == 304 and cached.content == b""
        assert cached.headers["ETag"] == etag and cached.headers["x-ratelimit-remaining"] == "4999"
    assert gh.rate_limit_used == 1
    weak = api.repo("GET", "/git/ref/heads/main", headers={"If-None-Match": f"W/{etag}"})
    assert weak.status_code == 304

    gh.add_commit(REPO, {"bump.txt": b"1\n"})
    changed = api.repo("GET", "/git/ref/heads/main", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["ETag"] != etag
    assert gh.rate_limit_used == 2
    limits = api.get("/rate_limit").json()
    assert limits["resources"]["core"]["used"] == 2 and limits["rate"]["remaining"] == 4998
    assert gh.rate_limit_used == 2  # GET /rate_limit is free


def test_primary_rate_limit_exhaustion(gh: FakeGitHub, api: Client) -> None:
    gh.rate_limit = 3
    remaining = [api.repo("GET", "").headers["x-ratelimit-remaining"] for _ in range(3)]
    assert remaining == ["2", "1", "0"]
    before = time.time()
    refused = api.repo("GET", "")
    assert refused.status_code == 403
    assert refused.json()["message"].startswith("API rate limit exceeded for user ID")
    assert refused.headers["x-ratelimit-remaining"] == "0"
    assert refused.headers["x-ratelimit-used"] == "3"
    assert before < int(refused.headers["x-ratelimit-reset"]) <= before + 3601
    assert api.repo("POST", "/git/blobs", json={"content": "x"}).status_code == 403
    assert api.get("/rate_limit").json()["resources"]["core"]["remaining"] == 0

    gh.rate_limit_status = 429
    assert api.repo("GET", "").status_code == 429

    gh.rate_limit_window = 0.2
    gh.reset_rate_limit()
    assert api.repo("GET", "").status_code == 200
    api.repo("GET", "")
    api.repo("GET", "")
    assert api.repo("GET", "").status_code == 429
    time.sleep(0.25)
    after_reset = api.repo("GET", "")
    assert after_reset.status_code == 200 and after_reset.headers["x-ratelimit-remaining"] == "2"


def test_secondary_rate_limit_on_writes(gh: FakeGitHub, api: Client) -> None:
    gh.write_limit_per_minute = 2
    assert api.repo("POST", "/git/blobs", json={"content": "1"}).status_code == 201
    assert api.repo("POST", "/git/blobs", json={"content": "2"}).status_code == 201
    third = api.repo("POST", "/git/blobs", json={"content": "3"})
    assert third.status_code == 403
    assert third.json()["message"].startswith("You have exceeded a secondary rate limit")
    assert 1 <= int(third.headers["retry-after"]) <= 60
    assert int(third.headers["x-ratelimit-remaining"]) > 0  # how a client tells it from the primary limit
    assert api.repo("GET", "").status_code == 200  # reads are not limited


# -- faults -----------------------------------------------------------------------------------------


def test_fail_next_and_injected_secondary_limits(gh: FakeGitHub, api: Client) -> None:
    gh.fail_next("/repos/*/git/blobs", status=502, method="POST")
    count = gh.objects_count(REPO)
    failed = api.repo("POST", "/git/blobs", json={"content": "hello"})
    assert failed.status_code == 502 and "x-ratelimit-remaining" not in failed.headers
    assert gh.objects_count(REPO) == count  # answered instead of GitHub: nothing happened
    assert api.repo("POST", "/git/blobs", json={"content": "hello"}).status_code == 201
    assert [r.fault for r in gh.requests] == [True, False]

    gh.secondary_rate_limit("*/pulls", retry_after=1)
    limited = api.repo("GET", "/pulls")
    assert limited.status_code == 403
    assert limited.json()["message"].startswith("You have exceeded a secondary rate limit")
    assert limited.headers["retry-after"] == "1" and int(limited.headers["x-ratelimit-remaining"]) > 0
    assert api.repo("GET", "/pulls").status_code == 200

    gh.fail_next("*", status=429, times=2, headers={"retry-after": "0"}, body={"message": "slow down"})
    assert [api.repo("GET", "").status_code for _ in range(3)] == [429, 429, 200]
    gh.fail_next("*", status=503, body="<html>Unicorn!</html>")
    html = api.repo("GET", "")
    assert html.status_code == 503 and html.text == "<html>Unicorn!</html>"


def test_fail_next_applied_loses_only_the_answer(gh: FakeGitHub, api: Client) -> None:
    open_branch(api, gh, "lost", {"l.txt": "l\n"})
    gh.fail_next("*/pulls", status=502, method="POST", applied=True)
    first = api.repo("POST", "/pulls", json={"title": "Lost", "head": "lost", "base": "main"})
    assert first.status_code == 502
    retry = api.repo("POST", "/pulls", json={"title": "Lost", "head": "lost", "base": "main"})
    assert retry.status_code == 422  # the first attempt did open it
    assert [p.title for p in gh.pulls(REPO)] == ["Lost"]
    found = api.repo("GET", "/pulls", params={"head": "org:lost"}).json()
    assert [p["number"] for p in found] == [1]


def test_dropped_connection(gh: FakeGitHub, api: Client) -> None:
    gh.drop_next("*/git/ref/*")
    with pytest.raises(requests.ConnectionError):
        api.repo("GET", "/git/ref/heads/main")
    assert api.repo("GET", "/git/ref/heads/main").status_code == 200
    assert gh.requests[0].status == 0


def test_fail_after_and_fail_from_stop_a_publish_halfway(gh: FakeGitHub, api: Client) -> None:
    gh.fail_after(2)
    assert [api.repo("GET", "").status_code for _ in range(4)] == [200, 200, 500, 500]
    gh.reset_faults()
    assert api.repo("GET", "").status_code == 200

    main = gh.branch_sha(REPO, "main")
    gh.fail_from("*/git/commits", method="POST")
    blob = api.repo("POST", "/git/blobs", json={"content": "partial"})
    assert blob.status_code == 201
    tree = api.repo(
        "POST",
        "/git/trees",
        json={
            "base_tree": api.repo("GET", "/git/trees/main").json()["sha"],
            "tree": [{"path": "p.txt", "mode": "100644", "type": "blob", "sha": blob.json()["sha"]}],
        },
    )
    assert tree.status_code == 201
    commit = api.repo("POST", "/git/commits", json={"message": "m", "tree": tree.json()["sha"], "parents": [main]})
    assert commit.status_code == 500
    assert api.repo("GET", "/git/ref/heads/main").status_code == 500  # everything fails from there on
    assert gh.branch_sha(REPO, "main") == main
    assert gh.files_at(REPO, "main") == BASE_FILES
    assert {blob.json()["sha"], tree.json()["sha"]} <= gh.dangling_objects(REPO)
    gh.reset_faults()
    assert api.repo("GET", "/git/ref/heads/main").status_code == 200


def test_head_requests_chunked_bodies_and_ref_clashes(gh: FakeGitHub, api: Client) -> None:
    head = api("HEAD", f"/repos/{REPO}/contents/README.md")
    assert head.status_code == 200 and head.content == b"" and int(head.headers["Content-Length"]) > 0

    def chunks() -> Iterator[bytes]:
        yield b'{"content": "stre'
        yield b'amed", "encoding": "utf-8"}'

    streamed = api.repo("POST", "/git/blobs", data=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 201 and streamed.json()["sha"] == blob_sha(b"streamed")
    assert api.repo("GET", "").status_code == 200  # the connection is still in step

    main = gh.branch_sha(REPO, "main")
    assert api.repo("POST", "/git/refs", json={"ref": "refs/heads/a", "sha": main}).status_code == 201
    clash = api.repo("POST", "/git/refs", json={"ref": "refs/heads/a/b", "sha": main})
    assert clash.status_code == 422
    legacy = api.repo("GET", "/git/refs/heads").json()
    assert [r["ref"] for r in legacy] == ["refs/heads/a", "refs/heads/main"]

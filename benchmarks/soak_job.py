"""Soak: the scheduled job (`superweight run --publish`) again and again, under faults, against the Hub and
GitHub stand-ins of the test suite.

    python benchmarks/soak_job.py [--rounds 150] [--seed 1] [--json]

Each round may add a model to the Hub and a request for it on GitHub (merged from its requester's pull
request), then runs the job in a child process while:

- killing it (SIGKILL) just before a random write: a file replaced or removed, a write request to GitHub;
- making GitHub answer 5xx, or drop the connection (before or after carrying the request out);
- making the Hub answer 5xx, or drop the connection;
- filling the disk: the free-space check sees none left, and from a random write on every file the job
  writes under the clone fails with ENOSPC (the audit worker's result included);

and afterwards a maintainer may merge the bot's pull request. Quiet rounds then let the job settle, and
the invariants are checked: each request answered exactly once (one status comment on its pull request,
saying audited), no audit run to its result twice, no record lost (each requested model in the index, and
on GitHub's main or in the open pull request), none duplicated. Reported, never asserted: the suite
(`tests/test_faults.py`) asserts the same at every kill point.

The audits are real records of a tiny checkpoint, written by a stand-in worker in the job's process (an
audit per round would take minutes), through the runner's own result-file protocol.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = Path(tempfile.mkdtemp(prefix="soak-"))
os.environ.update(HF_HOME=str(WORK / "hf"), HF_HUB_DISABLE_TELEMETRY="1", TOKENIZERS_PARALLELISM="false")
os.environ.pop("HF_HUB_OFFLINE", None)
sys.path.insert(0, str(HERE.parent / "tests"))

import pytest  # noqa: E402  (the stand-ins' monkeypatching)
from fakegithub import FakeGitHub  # noqa: E402
from fakehub import FakeHub, point_client_at  # noqa: E402
from scheduled import TOKEN, Job, fork_and_kill_at  # noqa: E402

from auditor import hub as hub_client  # noqa: E402
from auditor import synthetic  # noqa: E402
from auditor.index import lookup  # noqa: E402
from auditor.synthetic import Plant  # noqa: E402


def audit_once():
    """One real audit of a tiny checkpoint, from a Hub cache as the runner's would be: the record every
    stand-in audit reports (with its own model's revision and weights)."""
    from huggingface_hub import constants

    from auditor.audit import audit
    from auditor.settings import AuditSettings

    checkpoint = synthetic.build(WORK / "ckpt", "llama", [Plant(1, 7, 33)])
    synthetic.add_to_hub_cache(checkpoint, WORK / "cache", "demo/tiny-llama")
    text = synthetic.write_eval_text(WORK / "eval.txt")
    settings = AuditSettings(eval_text=str(text), max_tokens=1024, seq_len=256)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(constants, "HF_HUB_OFFLINE", True)
        return audit("demo/tiny-llama", settings=settings, cache_dir=WORK / "cache", progress=False), text


def quiet() -> None:
    """In the job's process: its output (summaries, progress) to /dev/null, this script's report alone shows."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)


def fill_disk(root: Path, after: int):
    """In the job's process: no free space for the download check, and ENOSPC for every file written
    under the clone from its `after`-th write on."""

    def setup():
        real, writes = os.replace, [0]

        def replace(src, dst):
            if str(dst).startswith(str(root)):
                writes[0] += 1
                if writes[0] >= after:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
            return real(src, dst)

        os.replace = replace
        shutil.disk_usage = lambda path: shutil._ntuple_diskusage(10**12, 10**12, 0)

    return setup


def soak(rounds: int, seed: int) -> dict:
    rng = random.Random(seed)
    result, eval_text = audit_once()
    hub_client.RETRY_BACKOFF_S = 0.01
    mp = pytest.MonkeyPatch()
    counts = Counter()
    requested: dict[str, str] = {}
    with FakeHub() as hub, FakeGitHub(token=TOKEN) as gh:
        point_client_at(hub.url, mp)
        job = Job(WORK / "clone", gh, eval_text, result, mp)
        shas = {}
        longest = 10  # the most writes a run made so far
        started = time.monotonic()
        for n in range(rounds):
            if rng.random() < 0.5:  # a new model, and a request for it
                model = f"org/model-{len(shas)}"
                plant = Plant(1 + len(shas) % 2, 3 + len(shas) % 9, 10 + len(shas) // 9)
                files = synthetic.build(WORK / "models" / model, "llama", [plant])
                shas[model] = hub.add_model(model, files, card_data={"license": "apache-2.0"})
                requested[job.request(model)] = model
            if rng.random() < 0.3:
                gh.fail_next("*", status=rng.choice([500, 502, 503]), times=rng.randint(1, 3))
                counts["github 5xx"] += 1
            if rng.random() < 0.2:
                gh.drop_next("*", applied=rng.random() < 0.5)
                counts["github dropped connections"] += 1
            if rng.random() < 0.2:
                hub.fail_next("*", status=rng.choice([500, 503]), times=rng.randint(1, 2))
                counts["hub 5xx"] += 1
            if rng.random() < 0.1:
                hub.drop_next("*", after_bytes=10)
                counts["hub dropped connections"] += 1
            faults = [quiet]
            if rng.random() < 0.15:
                faults.append(fill_disk(job.root, after=rng.randint(1, 20)))
                counts["disk full"] += 1
            kill = rng.randint(1, longest) if rng.random() < 0.3 else None  # within a run's writes, mostly
            steps = fork_and_kill_at(job, kill, lambda faults=faults: [setup() for setup in faults])
            counts["runs"] += 1
            counts["kills"] += kill is not None and len(steps) == kill
            longest = max(longest, len(steps))
            open_pulls = job.bot_pulls()
            if open_pulls and rng.random() < 0.1:  # a maintainer merges the results
                gh.merge_pull("org/index", open_pulls[0].number)
                counts["pull requests merged"] += 1
            print(f"\rround {n + 1}/{rounds}", end="", file=sys.stderr)
        gh.reset_faults()
        hub.reset_faults()
        for _ in range(5):  # quiet runs until the job has nothing left to do
            gh.clear_requests()
            fork_and_kill_at(job, None, quiet)
            counts["settling runs"] += 1
            if not job.writes():
                break
        elapsed = time.monotonic() - started
        print(file=sys.stderr)
        audits = Counter(job.audited.read_text().split()) if job.audited.exists() else Counter()
        on_github = {}
        for ref in ["main", *[p.head for p in job.bot_pulls()]]:
            files = gh.files_at("org/index", ref)
            for model in requested.values():
                text = files.get(f"index/{model}.yaml", b"").decode()
                on_github[model] = max(on_github.get(model, 0), text.count(shas[model]))
        comments = {path: job.status(path) for path in requested}
        lost = [m for m in requested.values() if not lookup(m, root=job.root / "index") or not on_github[m]]
        return {
            "rounds": rounds,
            "seed": seed,
            "seconds": round(elapsed, 1),
            **counts,
            "requests": len(requested),
            "requests answered once": sum(len(c) == 1 and "audited: **confirmed**" in c[0] for c in comments.values()),
            "requests answered twice or more": sum(len(c) > 1 for c in comments.values()),
            "requests unanswered": sorted(p for p, c in comments.items() if not c),
            "audits run twice": sorted(m for m, k in audits.items() if k > 1),
            "records lost": lost,
            "records duplicated": sorted(
                m for m in requested.values() if len(lookup(m, root=job.root / "index")) > 1 or on_github[m] > 1
            ),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=150)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    try:
        report = soak(args.rounds, args.seed)
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            print(f"{key:>32}: {value}")


if __name__ == "__main__":
    main()

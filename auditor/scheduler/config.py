"""The scheduler's configuration: one file, `auditor.yaml` at the repository root.

    licenses: [apache-2.0, mit, llama3.1]   # the Hub license ids that may be audited
    memory_gib: 80                          # the memory of one GPU
    gpus_per_node: 8                        # the most GPUs of one node: a model spreads over them
    priority: [base_models, downloads]      # discovered models, after requests
    audit: {min_output_ratio: 100, eval_text: null, device: auto}
    discover: {limit: 200, since: '2026-01-01'}
    run: {max_models: 5, time_budget: 6h, timeout: 2h}

Every key is optional (defaults below); an unknown key, a wrong type or a bad value is one clear error.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from .. import yamlio
from ..errors import AuditorError, Failure
from ..models import Count, DataError, Model, Positive, from_data
from ..settings import AuditSettings, SettingsError

CONFIG_FILE = "auditor.yaml"
# Open licenses by their Hub ids; community licenses (llama3.1, gemma, ...) can be added in auditor.yaml.
OPEN_LICENSES = [
    "apache-2.0",
    "mit",
    "bsd-2-clause",
    "bsd-3-clause",
    "cc0-1.0",
    "cc-by-4.0",
    "cc-by-sa-4.0",
    "openrail",
    "openrail++",
    "bigscience-openrail-m",
    "bigscience-bloom-rail-1.0",
    "bsl-1.0",
    "mpl-2.0",
]
PRIORITY_KEYS = ("base_models", "downloads", "likes", "newest")
Duration = str | float
"""`90`, `90s`, `45m`, `6h` or `1d` (see `parse_duration`)."""


class ConfigError(AuditorError):
    code = Failure.CONFIG


def parse_duration(text: str | int | float) -> float:
    """Seconds from `90`, `90s`, `45m`, `6h` or `1d`."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", str(text))
    if not m:
        raise ConfigError(f"{text!r} is not a duration (like 90s, 45m, 6h or 1d)")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


class DiscoverConfig(Model):
    pipeline_tag: str = "text-generation"
    limit: Count = 200
    """Models examined per run; the next run carries on where this one stopped."""
    since: str | None = None
    """Do not look at models created before this date (YYYY-MM-DD)."""
    screens: Count = 50
    """Derivatives of indexed models (GGUF quants, fine-tunes whose card names an indexed `base_model`)
    screened per run by range reads, a few kilobytes and one header each: see `superweight check-gguf`."""


class RunConfig(Model):
    max_models: Count = 5
    time_budget: Duration = "6h"
    """No new audit starts after this much time."""
    timeout: Duration = "2h"
    """One audit is stopped after this long."""
    max_attempts: Positive = 3
    """A model that keeps failing for a passing reason (a download, a crash) is tried this often."""
    work_dir: str = ".superweight"
    """Downloads, jobs and run manifests; not committed (the run lock is at the clone's root)."""
    keep_skipped: Count = 1000
    """Skipped discovered models kept in the queue (the newest); requests and failures are all kept."""
    min_free_gib: Annotated[float, Meta(ge=0)] = 1.0
    """Space to leave free on the work dir's disk: a download that would leave less is put off (`no_space`)."""
    prefetch: bool = True
    """While one model is audited, download the next (local executor): the GPU does not wait on the network."""
    executor: Literal["local", "ray"] = "local"
    """Where audits run: `local`, one at a time in a process of this machine; `ray`, as tasks of a Ray cluster
    (`pip install 'superweight-index[ray]'`), as many at once as the cluster's resources allow."""
    ray_address: str | None = None
    """The Ray cluster to join (`auto`, `ray://head:10001`); none: a cluster of this machine alone."""
    ray_cache_dir: str | None = None
    """Where each Ray node downloads, a path on that node (shared by its audits, each model's files removed
    once audited); none: a scratch folder of each task, removed after it."""
    ray_gpu_resource: Annotated[str, Meta(min_length=1)] = "GPU"
    """The Ray resource each audit takes its share of, by its memory over `memory_gib` (the memory of one
    device): a 7B bf16 model takes 0.23 of an 80 GiB GPU, a 70B one 3 whole GPUs of one node."""


class GitHubConfig(Model):
    repo: Annotated[str, Meta(pattern="^[A-Za-z0-9._-]+/[A-Za-z0-9._-]+$")] | None = None
    """GitHub's owner/name; else $GITHUB_REPOSITORY (set in GitHub Actions)."""
    base: str = "main"
    api_url: str = "https://api.github.com"
    site_url: str | None = None
    """The published site, for links in request comments."""
    write_interval: float = 1.0
    """Seconds between content-creating requests (GitHub's secondary limits)."""
    bot_login: str | None = None
    """The account the token acts as; found with GET /user when not set (a GitHub App token cannot ask:
    set it to `<app-name>[bot]`)."""


class Config(Model):
    licenses: list[str] = msgspec.field(default_factory=lambda: list(OPEN_LICENSES))
    memory_gib: Annotated[float, Meta(gt=0)] = 80.0
    """The memory of one device (GPU) that audits run on."""
    gpus_per_node: Positive = 1
    """The most GPUs of one node (this machine's, with the local executor; the biggest node's, on Ray): with
    `audit.device: auto` a model is spread over them, and one that needs more than they hold is `too_large`."""
    memory_factor: Annotated[float, Meta(ge=1)] = 1.3
    """Peak memory of an audit over the checkpoint's size (benchmarks/: about 1.02 on CPU)."""
    priority: list[Literal[PRIORITY_KEYS]] = msgspec.field(
        default_factory=lambda: ["base_models", "downloads", "likes"]
    )
    audit: AuditSettings = msgspec.field(default_factory=AuditSettings)
    discover: DiscoverConfig = msgspec.field(default_factory=DiscoverConfig)
    run: RunConfig = msgspec.field(default_factory=RunConfig)
    github: GitHubConfig = msgspec.field(default_factory=GitHubConfig)

    @property
    def memory_bytes(self) -> float:
        return self.memory_gib * 2**30

    @property
    def node_devices(self) -> int:
        """Devices one audit may spread over: every GPU of the node with `device: auto`, else one."""
        return self.gpus_per_node if self.audit.device == "auto" else 1


def load_config(path: str | Path | None = None, *, repo: str | Path = ".") -> Config:
    """Read `path` (default: REPO/auditor.yaml if there is one, else the defaults) and check every value.

    Raises:
        ConfigError: naming the file and the first problem found.
    """
    if path is None:
        path = Path(repo) / CONFIG_FILE
        if not path.exists():
            return Config()
    path = Path(path)
    try:
        data = yamlio.load(path.read_text(encoding="utf-8"), str(path))
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: no such file") from e
    except yamlio.YamlError as e:
        raise ConfigError(str(e)) from e
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot be read ({getattr(e, 'strerror', None) or e})") from e
    try:
        config = from_data(data or {}, Config)
    except DataError as e:
        raise ConfigError(f"{path}: {e}") from e
    except SettingsError as e:
        raise ConfigError(f"{path}: audit: {e}") from e
    check(config, str(path))
    return config


def check(config: Config, where: str) -> None:
    """What the types cannot say (their bounds were checked when the file was read): durations and dates."""
    problems = []
    for name in ("time_budget", "timeout"):
        try:
            if parse_duration(getattr(config.run, name)) <= 0:
                problems.append(f"run.{name}: must be longer than nothing")
        except ConfigError as e:
            problems.append(f"run.{name}: {e}")
    if config.discover.since is not None:
        try:
            if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", config.discover.since):
                raise ValueError
            date.fromisoformat(config.discover.since)
        except ValueError:
            problems.append(f"discover.since: {config.discover.since!r} is not a date (YYYY-MM-DD)")
    if problems:
        raise ConfigError(f"{where}: {problems[0]}")

"""A small GitHub REST API client on `requests`, for a bot that runs wherever the GPU is.

- The token comes from `SUPERWEIGHT_GITHUB_TOKEN` (else `GITHUB_TOKEN`) and is only ever put in the
  Authorization header: never printed, logged, or included in an error message.
- Every request sends `Accept: application/vnd.github+json` and the API version header.
- 5xx answers and dropped connections are retried with exponential backoff.
- Rate limits are honoured: a `Retry-After` (secondary limits) is waited out, and a secondary limit
  without one waits a minute, then longer each time; an exhausted primary limit (`x-ratelimit-remaining:
  0`) is waited out until `x-ratelimit-reset`; and writes (content-creating requests) are spaced at least
  `write_interval` seconds apart, as GitHub asks of bots.
- Reads are cached by ETag (body and `Link` header): a conditional request answered 304 costs no rate limit.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

import requests

from . import __version__
from .errors import AuditorError, Failure

log = logging.getLogger(__name__)

API_URL = "https://api.github.com"
API_VERSION = "2022-11-28"
TOKEN_VARIABLES = ("SUPERWEIGHT_GITHUB_TOKEN", "GITHUB_TOKEN")


class GitHubError(AuditorError):
    """GitHub answered with an error (or could not be reached) after retries."""

    code = Failure.GITHUB

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def token_from_env() -> str | None:
    return next((os.environ[v] for v in TOKEN_VARIABLES if os.environ.get(v)), None)


class GitHub:
    """`GitHub("owner/name", token)`: requests relative to the repository, or absolute paths from `/`."""

    def __init__(
        self,
        repo: str,
        token: str,
        *,
        api_url: str = API_URL,
        write_interval: float = 1.0,
        max_retries: int = 5,
        max_wait: float = 900.0,
        sleep: Callable[[float], None] = time.sleep,
        login: str | None = None,
    ):
        self.repo = repo
        self._login = login
        self.api_url = api_url.rstrip("/")
        self.write_interval = write_interval
        self.max_retries = max_retries
        self.max_wait = max_wait
        self.sleep = sleep
        self._session = requests.Session()
        self._session.headers.update(
            {
                "Authorization": f"Bearer {token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": API_VERSION,
                "User-Agent": f"superweight-index-bot/{__version__}",
            }
        )
        self._etags: dict[str, tuple[str, bytes, str | None]] = {}  # key -> (ETag, body, Link header)
        self._last_write = 0.0

    def __repr__(self) -> str:  # never show the token
        return f"GitHub({self.repo!r}, api_url={self.api_url!r})"

    @property
    def login(self) -> str:
        """The account the token acts as: the bot's own comments and pull requests are those it made."""
        if self._login is None:
            try:
                self._login = self.get("/user")["login"]
            except GitHubError as e:
                raise GitHubError(
                    f"cannot tell which account the token acts as (GET /user: {e.status}); set github.bot_login "
                    "in auditor.yaml (for a GitHub App: <app-name>[bot])"
                ) from e
        return self._login

    def url(self, endpoint: str) -> str:
        if endpoint.startswith("/"):
            return f"{self.api_url}{endpoint}"
        return f"{self.api_url}/repos/{self.repo}/{endpoint}"

    def get(self, endpoint: str, **params: Any) -> Any:
        return self.request("GET", endpoint, params=params or None)

    def paginate(self, endpoint: str, **params: Any) -> list[Any]:
        """Every item of a list endpoint, following the Link header."""
        items, url, query = [], self.url(endpoint), {"per_page": 100, **params}
        while url:
            response = self._send("GET", url, params=query)
            items += response.json()
            url, query = response.links.get("next", {}).get("url"), None
        return items

    def post(self, endpoint: str, body: Any, *, idempotent: bool = False) -> Any:
        """A POST is retried after a server error only if repeating it is harmless (`idempotent`: git
        objects, labels); a comment or a pull request could otherwise be created twice."""
        return self.request("POST", endpoint, json=body, idempotent=idempotent)

    def patch(self, endpoint: str, body: Any) -> Any:
        return self.request("PATCH", endpoint, json=body)

    def delete(self, endpoint: str) -> Any:
        return self.request("DELETE", endpoint)

    def request(
        self, method: str, endpoint: str, *, json: Any = None, params: dict | None = None, idempotent: bool = True
    ) -> Any:
        """`endpoint` is relative to the repository (`pulls`), or absolute from the API root (`/rate_limit`)."""
        response = self._send(method, self.url(endpoint), retry_errors=idempotent, json=json, params=params)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def _send(self, method: str, url: str, *, retry_errors: bool = True, **kwargs: Any) -> requests.Response:
        cache_key = url + repr(sorted((kwargs.get("params") or {}).items()))
        headers = {}
        if method == "GET" and cache_key in self._etags:
            headers["If-None-Match"] = self._etags[cache_key][0]
        for attempt in range(self.max_retries + 1):
            if method != "GET":
                wait = self._last_write + self.write_interval - time.monotonic()
                if wait > 0:
                    self.sleep(wait)
            try:
                response = self._session.request(method, url, headers=headers, timeout=60, **kwargs)
            except requests.RequestException as e:
                if attempt == self.max_retries or not retry_errors:
                    raise GitHubError(f"{method} {url}: cannot reach GitHub ({type(e).__name__})") from e
                self.sleep(min(2**attempt, 60))
                continue
            finally:
                if method != "GET":
                    self._last_write = time.monotonic()
            if response.status_code == 304:
                _, body, link = self._etags[cache_key]
                response._content = body  # the cached answer, as if GitHub had sent it again
                if link is not None:
                    response.headers["Link"] = link  # the next page of a list, for paginate()
                response.status_code = 200
                return response
            delay = self._retry_delay(response, attempt, retry_errors)
            if delay is None:
                break
            log.warning("GitHub %s on %s %s, retrying in %.0f s", response.status_code, method, url, delay)
            self.sleep(delay)
        if response.status_code >= 400:
            raise GitHubError(f"{method} {url}: {response.status_code} {error_message(response)}", response.status_code)
        if method == "GET" and (etag := response.headers.get("ETag")):
            self._etags[cache_key] = (etag, response.content, response.headers.get("Link"))
        self._throttle(response)
        return response

    def _retry_delay(self, response: requests.Response, attempt: int, retry_errors: bool) -> float | None:
        """Seconds to wait before trying again, or None to stop (success, or an error not worth retrying).
        A rate-limited request was not carried out, so it is always waited out and sent again."""
        status = response.status_code
        if attempt == self.max_retries or status < 400:
            return None
        if status in (403, 429):
            if "retry-after" in response.headers:  # a secondary rate limit
                return self._bounded(float(response.headers["retry-after"]))
            if response.headers.get("x-ratelimit-remaining") == "0":
                return self._bounded(float(response.headers.get("x-ratelimit-reset", 0)) - time.time() + 1)
            if "secondary rate limit" in error_message(response).lower():  # no Retry-After: GitHub asks for
                return self._bounded(60.0 * 2**attempt)  # at least a minute, then exponentially longer
            return None
        return min(2**attempt, 60) if status >= 500 and retry_errors else None

    def _bounded(self, seconds: float) -> float:
        if seconds > self.max_wait:
            raise GitHubError(
                f"GitHub's rate limit resets in {seconds:.0f} s, longer than the {self.max_wait:.0f} s wait"
            )
        return max(seconds, 0.0)

    def _throttle(self, response: requests.Response) -> None:
        """When the primary limit is about to run out, wait for its reset rather than hit it."""
        remaining = response.headers.get("x-ratelimit-remaining")
        if remaining is not None and int(remaining) == 0 and "x-ratelimit-reset" in response.headers:
            self.sleep(self._bounded(float(response.headers["x-ratelimit-reset"]) - time.time() + 1))


def error_message(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.reason or ""
    message = body.get("message", "") if isinstance(body, dict) else ""
    details = [e.get("message") or e.get("code") for e in body.get("errors", []) if isinstance(e, dict)]
    return "; ".join(filter(None, [message, *map(str, details)]))

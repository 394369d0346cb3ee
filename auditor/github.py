"""A small GitHub REST API client on `requests`, for a bot that runs wherever the GPU is.

- The token comes from `SUPERWEIGHT_GITHUB_TOKEN` (else `GITHUB_TOKEN`) and is only ever put in the
  Authorization header of requests to the configured API origin (scheme, host and port of `api_url`): never
  printed, logged, or included in an error message. Redirects are not followed by `requests`: same-origin
  redirects (301/302/303/307/308, as GitHub answers for a renamed repository) are followed here, a few hops
  at most; a redirect or a `Link: rel=next` to another origin is refused with a `GitHubError`, and the token
  never goes there.
- Everything GitHub sends back is redacted of the token (body, header values, reason phrase) as it arrives,
  so error messages, `GitHubError` texts and returned JSON never carry it; `redact(text)` does the same for
  text decoded later (base64 blob content).
- Every request sends `Accept: application/vnd.github+json` and the API version header.
- 5xx answers and dropped connections are retried with exponential backoff and jitter (between half and the
  whole of min(2**attempt, 60) seconds); the randomness is injectable (`random=`), as are `sleep` and `clock`.
- Rate limits are honoured: a `Retry-After` (secondary limits; delay-seconds or an HTTP-date, RFC 9110) is
  waited out as asked, and a secondary limit without a valid one waits a minute, then longer each time; an
  exhausted primary limit (`x-ratelimit-remaining: 0`) is waited out until `x-ratelimit-reset`. Waits the
  client computes itself get a small positive jitter, never shorter than GitHub asks; a wait longer than
  `max_wait` is a `GitHubError`. Headers that cannot be parsed are ignored, never a crash. Writes
  (content-creating requests) are spaced at least `write_interval` seconds apart, as GitHub asks of bots.
- Reads are cached by ETag (body and `Link` header): a conditional request answered 304 costs no rate limit.
- An answer that is not JSON (an HTML page, a truncated body), or not a list where a list is expected, is a
  `GitHubError` naming the request, not a decoding error.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from datetime import timezone
from email.utils import parsedate_to_datetime
from random import Random
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests

from . import __version__
from .errors import AuditorError, Failure

log = logging.getLogger(__name__)

API_URL = "https://api.github.com"
API_VERSION = "2022-11-28"
TOKEN_VARIABLES = ("SUPERWEIGHT_GITHUB_TOKEN", "GITHUB_TOKEN")
REDACTED = "[REDACTED]"
REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5
MAX_BACKOFF = 60.0
SECONDARY_LIMIT_WAIT = 60.0  # GitHub: "wait at least one minute" when a secondary limit gives no Retry-After
RATE_LIMIT_JITTER = 0.1  # a rate-limit wait the client computes gets up to a tenth more...
MAX_RATE_LIMIT_JITTER = 5.0  # ...and at most this many seconds more
MAX_MESSAGE = 500  # characters of GitHub's error message kept in a GitHubError

_RANDOM = Random()
_DEFAULT_PORTS = {"http": 80, "https": 443}


class GitHubError(AuditorError):
    """GitHub answered with an error (or could not be reached) after retries."""

    code = Failure.GITHUB

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def token_from_env() -> str | None:
    """The token, without the line break a secret file or `echo` leaves at its end."""
    return next((os.environ[v].strip() for v in TOKEN_VARIABLES if os.environ.get(v, "").strip()), None)


def origin(url: str) -> str | None:
    """`scheme://host:port` of a URL (default port filled in, lower case), or None if it has none."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a malformed port or host
        return None
    scheme, host = parts.scheme.lower(), parts.hostname
    if not scheme or not host:
        return None
    port = port if port is not None else _DEFAULT_PORTS.get(scheme)
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}" + (f":{port}" if port is not None else "")


def int_header(value: str | None) -> int | None:
    """A header holding a non-negative integer (`x-ratelimit-*`, `Retry-After` delay-seconds), or None when
    it is absent or anything else (`-5`, `1e9`, `nan`, garbage, absurdly long)."""
    if value is None:
        return None
    value = value.strip()
    if not (0 < len(value) <= 15 and value.isascii() and value.isdigit()):
        return None
    return int(value)


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds a `Retry-After` asks to wait (RFC 9110: delay-seconds or an HTTP-date, a date in the past
    being 0), or None when it is absent or neither."""
    if value is None:
        return None
    seconds = int_header(value)
    if seconds is not None:
        return float(seconds)
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:  # Python < 3.10 answers None for some malformed dates
        return None
    if when.tzinfo is None:  # "-0000": UTC, as HTTP-dates always are
        when = when.replace(tzinfo=timezone.utc)
    try:
        return max(when.timestamp() - now, 0.0)
    except (OverflowError, OSError, ValueError):
        return None


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
        clock: Callable[[], float] = time.time,
        random: Random = _RANDOM,
        login: str | None = None,
    ):
        self.repo = repo
        self._login = login
        self.api_url = api_url.rstrip("/")
        self.origin = origin(self.api_url)
        if self.origin is None:
            raise GitHubError(f"the GitHub API URL {self.api_url!r} has no scheme and host")
        self.write_interval = write_interval
        self.max_retries = max_retries
        self.max_wait = max_wait
        self.sleep = sleep
        self.clock = clock
        self.random = random
        if not token or any(c.isspace() or not c.isprintable() for c in token):
            # requests would refuse the header later, quoting it whole in its error: say it here, without it
            raise GitHubError("the GitHub token is empty or holds spaces or control characters")
        self._token = token
        self._session = requests.Session()
        self._session.headers.update(
            {
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": API_VERSION,
                "User-Agent": f"superweight-index-bot/{__version__}",
            }
        )
        self._etags: dict[str, tuple[str, bytes, str | None]] = {}  # key -> (ETag, body, Link header)
        self._last_write = 0.0

    def __repr__(self) -> str:  # never show the token
        return f"GitHub({self.repo!r}, api_url={self.api_url!r})"

    def redact(self, text: str) -> str:
        """`text` with the token replaced by [REDACTED]: for what GitHub sent encoded (base64 file content),
        once decoded. Everything else coming back is redacted already."""
        return text.replace(self._token, REDACTED) if self._token else text

    @property
    def login(self) -> str:
        """The account the token acts as: the bot's own comments and pull requests are those it made."""
        if self._login is None:
            try:
                self._login = self.get("/user")["login"]
            except (GitHubError, TypeError, KeyError) as e:  # refused, or an answer without a login
                status = e.status if isinstance(e, GitHubError) else "no login"
                raise GitHubError(
                    f"cannot tell which account the token acts as (GET /user: {status}); set github.bot_login "
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
        """Every item of a list endpoint, following the Link header (on the API's origin only)."""
        items: list[Any] = []
        url: str | None = self.url(endpoint)
        query: dict | None = {"per_page": 100, **params}
        seen: set[str] = set()
        while url:
            seen.add(url)
            response = self._send("GET", url, params=query)
            page = _json(response, "GET", url)
            if not isinstance(page, list):
                raise GitHubError(
                    f"GitHub answered GET {url} with {_kind(page)} where a list was expected", response.status_code
                )
            items += page
            following = response.links.get("next", {}).get("url")
            if following:
                following = urljoin(url, following)
                if origin(following) != self.origin:
                    raise GitHubError(
                        f"GET {url}: the next page is on another origin ({origin(following) or following[:100]}); "
                        f"not followed, the token only goes to {self.origin}"
                    )
                if following in seen:
                    raise GitHubError(f"GET {url}: the next page links back to a page already read")
            url, query = following, None
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
        url = self.url(endpoint)
        response = self._send(method, url, retry_errors=idempotent, json=json, params=params)
        if response.status_code == 204 or not response.content:
            return None
        return _json(response, method, url)

    def _send(self, method: str, url: str, *, retry_errors: bool = True, **kwargs: Any) -> requests.Response:
        """The one way out: an answer with the token redacted, after retries, rate limits and redirects."""
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
                response = self._exchange(method, url, headers, kwargs)
            except requests.RequestException as e:
                if attempt == self.max_retries or not retry_errors:
                    raise GitHubError(f"{method} {url}: cannot reach GitHub ({type(e).__name__})") from e
                self.sleep(self._backoff(attempt))
                continue
            finally:
                if method != "GET":
                    self._last_write = time.monotonic()
            if response.status_code == 304 and cache_key in self._etags:
                _, body, link = self._etags[cache_key]
                response._content = body  # the cached answer, as if GitHub had sent it again
                if link is not None:
                    response.headers["Link"] = link  # the next page of a list, for paginate()
                response.status_code = 200
                return response
            delay = self._retry_delay(response, attempt, retry_errors)
            if delay is None:
                break
            log.warning("GitHub %s on %s %s, retrying in %.1f s", response.status_code, method, url, delay)
            self.sleep(delay)
        if response.status_code >= 400:
            raise GitHubError(f"{method} {url}: {response.status_code} {error_message(response)}", response.status_code)
        if response.status_code >= 300:  # 304 without a cached answer, 300, 305...: nothing usable
            raise GitHubError(f"{method} {url}: unexpected {response.status_code} answer", response.status_code)
        if method == "GET" and (etag := response.headers.get("ETag")):
            self._etags[cache_key] = (etag, response.content, response.headers.get("Link"))
        self._throttle(response)
        return response

    def _exchange(self, method: str, url: str, headers: dict[str, str], kwargs: dict[str, Any]) -> requests.Response:
        """One request, following same-origin redirects; the token is sent only to the API's origin, and
        every answer is redacted before anything reads it."""
        asked = f"{method} {url}"
        for hop in range(MAX_REDIRECTS + 1):
            if (there := origin(url)) != self.origin:
                where = "GitHub redirected to" if hop else "refusing to send the token to"
                raise GitHubError(
                    f"{asked}: {where} another origin ({there or url[:100]}); the token only goes to {self.origin}"
                )
            response = self._session.request(
                method,
                url,
                headers={**headers, "Authorization": f"Bearer {self._token}"},
                timeout=60,
                allow_redirects=False,
                **kwargs,
            )
            self._redact(response)
            if response.status_code not in REDIRECTS:
                return response
            location = response.headers.get("Location")
            if not location:
                raise GitHubError(f"{asked}: {response.status_code} redirect without a Location", response.status_code)
            log.info("GitHub redirected %s to %s", asked, location)
            url = urljoin(url, location)
            kwargs = {k: v for k, v in kwargs.items() if k != "params"}  # the Location carries its own query
            if response.status_code == 303 and method != "HEAD":  # "see other": fetch it, send nothing
                method, kwargs = "GET", {}
            response.close()
        raise GitHubError(f"{asked}: more than {MAX_REDIRECTS} redirects")

    def _redact(self, response: requests.Response) -> None:
        """Replace the token in the body, header values and reason phrase, at the one place answers come in."""
        if not self._token:
            return
        secret = self._token.encode()
        content = response.content  # reads the whole body (a broken one raises a RequestException: retried)
        if content and secret in content:
            response._content = content.replace(secret, REDACTED.encode())
        for name, value in list(response.headers.items()):
            if self._token in value:
                response.headers[name] = value.replace(self._token, REDACTED)
        if response.reason:
            response.reason = self.redact(response.reason)

    def _backoff(self, attempt: int) -> float:
        """Before retrying a server error or a dropped connection: between half and the whole of
        min(2**attempt, 60) seconds, so that clients failing together do not retry together."""
        ceiling = min(2.0**attempt, MAX_BACKOFF)
        return self.random.uniform(ceiling / 2, ceiling)

    def _retry_delay(self, response: requests.Response, attempt: int, retry_errors: bool) -> float | None:
        """Seconds to wait before trying again, or None to stop (success, or an error not worth retrying).
        A rate-limited request was not carried out, so it is always waited out and sent again."""
        status = response.status_code
        if attempt == self.max_retries or status < 400:
            return None
        if status in (403, 429):
            asked = retry_after(response.headers.get("retry-after"), self.clock())
            if asked is not None:  # a secondary rate limit, waited as GitHub asks
                return self._bounded(asked)
            if int_header(response.headers.get("x-ratelimit-remaining")) == 0:
                return self._until_reset(response, attempt)
            if "retry-after" in response.headers or "secondary rate limit" in error_message(response).lower():
                return self._secondary_wait(attempt)  # a secondary limit without a usable Retry-After
            return None
        return self._backoff(attempt) if status >= 500 and retry_errors else None

    def _secondary_wait(self, attempt: int) -> float:
        """As GitHub asks when it does not say how long: at least a minute, then exponentially longer."""
        return self._jittered(self._bounded(SECONDARY_LIMIT_WAIT * 2**attempt))

    def _until_reset(self, response: requests.Response, attempt: int) -> float:
        """Until the primary limit's reset, a second of margin (as a secondary limit when GitHub did not say
        when, or said it unreadably)."""
        reset = int_header(response.headers.get("x-ratelimit-reset"))
        if reset is None:
            return self._secondary_wait(attempt)
        return self._jittered(self._bounded(max(reset - self.clock() + 1, 1.0)))

    def _bounded(self, seconds: float) -> float:
        if seconds > self.max_wait:
            raise GitHubError(
                f"GitHub's rate limit resets in {seconds:.0f} s, longer than the {self.max_wait:.0f} s wait"
            )
        return max(seconds, 0.0)

    def _jittered(self, seconds: float) -> float:
        """A little longer than `seconds` (never shorter), so that clients limited together do not all
        come back at the same instant."""
        extra = self.random.uniform(0.0, min(seconds * RATE_LIMIT_JITTER, MAX_RATE_LIMIT_JITTER))
        return min(seconds + extra, max(self.max_wait, seconds))

    def _throttle(self, response: requests.Response) -> None:
        """When the primary limit is about to run out, wait for its reset rather than hit it."""
        if (
            int_header(response.headers.get("x-ratelimit-remaining")) == 0
            and int_header(response.headers.get("x-ratelimit-reset")) is not None
        ):
            self.sleep(self._until_reset(response, 0))


def _json(response: requests.Response, method: str, url: str) -> Any:
    """The answer's JSON, or a GitHubError saying GitHub answered something else."""
    try:
        return response.json()
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        kind = (response.headers.get("Content-Type") or "no Content-Type").split(";")[0].strip()
        raise GitHubError(
            f"GitHub answered {method} {url} with something that is not JSON ({kind[:100]})", response.status_code
        ) from None


def _kind(value: Any) -> str:
    names = {dict: "a JSON object", str: "a JSON string", bool: "a JSON boolean", type(None): "JSON null"}
    return names.get(type(value), "a JSON number")


def error_message(response: requests.Response) -> str:
    """GitHub's message and error details, on one line (the reason phrase if the body is not JSON)."""
    try:
        body = response.json()
    except (ValueError, RecursionError):
        return _one_line(response.reason or "")
    if not isinstance(body, Mapping):
        return ""
    errors = body.get("errors")
    details = [
        e if isinstance(e, str) else e.get("message") or e.get("code")
        for e in (errors if isinstance(errors, list) else [])
        if isinstance(e, str | Mapping)
    ]
    return _one_line("; ".join(str(part) for part in [body.get("message"), *details] if part))


def _one_line(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"

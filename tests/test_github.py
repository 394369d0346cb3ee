"""The GitHub client's defences: where the token goes, what comes back, and how it waits.

Against the local GitHub stand-in (`fakegithub`) where it can answer, and a tiny scripted loopback server
where it cannot (a Link or a redirect to another origin, an answer echoing the Authorization header): a
second server on 127.0.0.1 with another port is "another origin", and records whatever reaches it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from email.utils import format_datetime
from random import Random

import pytest
from fakegithub import SECONDARY_RATE_LIMIT_MESSAGE, FakeGitHub
from loopback import LoopbackHandler, LoopbackServer, Request, Response, Served, json_response

from auditor.github import MAX_REDIRECTS, REDACTED, GitHub, GitHubError, int_header, origin, retry_after

TOKEN = "ghp_" + "S3cr3tT0k3n" * 3
NOW = 2_000_000_000.0  # the injected clock: no test here reads the real one
PULLS = "/repos/org/index/pulls"


class Scripted(Served):
    """A loopback HTTP server that answers `answer(request)` and records every request it receives."""

    def __init__(self, answer: Callable[[Request], Response] | None = None) -> None:
        self.answer = answer or (lambda request: json_response(200, []))
        self.received: list[Request] = []

    def make_server(self) -> LoopbackServer:
        served = self

        class Handler(LoopbackHandler):
            def do_GET(self) -> None:
                request = self.read_request()
                served.received.append(request)
                self.send(served.answer(request))

            do_HEAD = do_POST = do_PATCH = do_PUT = do_DELETE = do_GET

        return LoopbackServer(Handler)

    @property
    def tokens_seen(self) -> list[str]:
        return [r.headers["authorization"] for r in self.received if "authorization" in r.headers]


@pytest.fixture
def server() -> Iterator[FakeGitHub]:
    with FakeGitHub(token=TOKEN) as fake:
        fake.add_repo("org/index", {"README.md": b"# index\n"})
        yield fake


@pytest.fixture
def other() -> Iterator[Scripted]:
    """Another origin: whatever reaches it is recorded."""
    with Scripted(lambda request: json_response(200, [{"from": "elsewhere"}])) as elsewhere:
        yield elsewhere


def client(url: str, slept: list[float] | None = None, **kw) -> GitHub:
    sleep = slept.append if slept is not None else _no_sleep
    return GitHub("org/index", TOKEN, api_url=url, write_interval=0.0, sleep=sleep, clock=lambda: NOW, **kw)


def _no_sleep(seconds: float) -> None:
    raise AssertionError(f"unexpected wait of {seconds} s")


def one_line_without_token(error: BaseException) -> str:
    text = str(error)
    assert TOKEN not in text and "\n" not in text
    return text


# -- (a), (b): the token goes only to the API's origin ----------------------------------------------


@pytest.mark.parametrize("trick", ["plain", "userinfo"])
def test_a_next_page_on_another_origin_is_refused_and_never_gets_the_token(other, trick):
    port = other.url.rsplit(":", 1)[1]
    with Scripted() as api:
        api_port = api.url.rsplit(":", 1)[1]
        # "userinfo": looks like the API's host and port at a glance, but the host is what follows the "@"
        target = f"{other.url}/page2" if trick == "plain" else f"http://127.0.0.1:{api_port}@127.0.0.1:{port}/page2"
        api.answer = lambda request: json_response(200, [{"number": 1}], {"Link": f'<{target}>; rel="next"'})

        with pytest.raises(GitHubError) as refused:
            client(api.url).paginate("pulls")

    assert f"127.0.0.1:{port}" in one_line_without_token(refused.value)
    assert other.received == []  # not even asked without the token
    assert api.tokens_seen == [f"Bearer {TOKEN}"]


@pytest.mark.parametrize(("status", "method"), [(301, "GET"), (302, "GET"), (307, "POST"), (308, "PATCH")])
def test_a_redirect_to_another_origin_is_refused_and_never_gets_the_token(other, status, method):
    redirect = Scripted(lambda request: Response(status, b"", {"Location": f"{other.url}{request.path}"}))
    with redirect as api, pytest.raises(GitHubError) as refused:
        client(api.url).request(method, "pulls", json={"title": "t"} if method != "GET" else None)

    assert other.url in one_line_without_token(refused.value)
    assert other.received == []
    assert len(api.received) == 1  # a refusal, not retried


def test_a_same_origin_redirect_is_followed_with_the_token_and_the_body():
    """GitHub answers 301 (GET) and 307 (other methods) for a renamed repository."""

    def renamed(request: Request) -> Response:
        if request.path.startswith("/repos/org/old/"):
            new = request.raw_path.replace("/org/old/", "/org/new/")
            query = "?per_page=100" if request.method == "GET" else ""
            return Response(301 if request.method == "GET" else 307, b"", {"Location": new + query})
        if request.method == "GET":
            return json_response(200, [{"number": 7}])
        return json_response(201, {"created": request.parsed_json()})

    with Scripted(renamed) as api:
        gh = GitHub("org/old", TOKEN, api_url=api.url, write_interval=0.0, sleep=_no_sleep)
        assert gh.paginate("pulls") == [{"number": 7}]
        assert gh.post("issues/1/comments", {"body": "hi"}) == {"created": {"body": "hi"}}

    assert [(r.method, r.path) for r in api.received] == [
        ("GET", "/repos/org/old/pulls"),
        ("GET", "/repos/org/new/pulls"),
        ("POST", "/repos/org/old/issues/1/comments"),
        ("POST", "/repos/org/new/issues/1/comments"),
    ]
    assert api.received[1].query == {"per_page": ["100"]}
    assert api.tokens_seen == [f"Bearer {TOKEN}"] * 4
    assert api.received[3].parsed_json() == {"body": "hi"}


def test_a_redirect_loop_is_cut_short():
    loop = Scripted(lambda request: Response(302, b"", {"Location": request.raw_path}))
    with loop as api, pytest.raises(GitHubError, match="more than 5 redirects"):
        client(api.url, max_retries=0).get("pulls")
    assert len(api.received) == MAX_REDIRECTS + 1


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://api.github.com/repos", "https://api.github.com:443"),
        ("HTTPS://API.GitHub.com:443", "https://api.github.com:443"),
        ("http://127.0.0.1:8080/x", "http://127.0.0.1:8080"),
        ("https://api.github.com@evil.example/", "https://evil.example:443"),
        ("https://api.github.com.evil.example/", "https://api.github.com.evil.example:443"),
        ("http://127.0.0.1:notaport/", None),
        ("/relative/path", None),
    ],
)
def test_origins_are_scheme_host_and_port(url, expected):
    assert origin(url) == expected


# -- (c): nothing that comes back carries the token --------------------------------------------------


def test_an_error_echoing_the_authorization_header_does_not_carry_the_token():
    def echo(request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        body = {"message": f"Bad credentials: {auth}", "errors": [{"message": f"the token {auth[7:]} is revoked"}]}
        return json_response(401, body, {"WWW-Authenticate": auth})

    with Scripted(echo) as api, pytest.raises(GitHubError) as refused:
        client(api.url).get("pulls")

    assert api.tokens_seen == [f"Bearer {TOKEN}"]  # the echo did carry it...
    text = one_line_without_token(refused.value)  # ...the error does not
    assert refused.value.status == 401
    assert f"Bad credentials: Bearer {REDACTED}" in text and f"the token {REDACTED} is revoked" in text


def test_data_and_headers_echoing_the_token_come_back_redacted(server):
    link = f'<{server.url}{PULLS}?page=2&echo={TOKEN}>; rel="next"'
    server.fail_next(PULLS, status=200, body=[{"title": f"leak {TOKEN}"}], headers={"Link": link})
    gh = client(server.url)

    assert gh.paginate("pulls") == [{"title": f"leak {REDACTED}"}]  # the second page, the real one, is empty
    assert server.requests[1].query["echo"] == [REDACTED]  # the Link header was redacted before it was read
    assert gh.redact(f"decoded later: {TOKEN}!") == f"decoded later: {REDACTED}!"
    assert gh.redact("nothing secret") == "nothing secret"


# -- (d): Retry-After, as RFC 9110 has it -------------------------------------------------------------


def http_date(epoch: float) -> str:
    return format_datetime(datetime.fromtimestamp(epoch, timezone.utc), usegmt=True)


@pytest.mark.parametrize(("value", "expected"), [(http_date(NOW + 42), 42.0), (http_date(NOW - 10), 0.0), ("7", 7.0)])
def test_retry_after_as_an_http_date_or_seconds_is_waited_as_asked(server, value, expected):
    server.fail_next(PULLS, status=403, headers={"retry-after": value}, body={"message": SECONDARY_RATE_LIMIT_MESSAGE})
    slept: list[float] = []

    assert client(server.url, slept).paginate("pulls") == []

    assert slept == [expected]  # from the date sent and the injected clock: never shorter than asked
    assert [r.status for r in server.requests] == [403, 200]


@pytest.mark.parametrize("value", ["nan", "-5", "1e9", "inf", "garbage", "", "12.5", "Wed, 99 Foo 2015 07:28:00 GMT"])
def test_an_unreadable_retry_after_waits_like_a_secondary_limit_without_one(server, value):
    server.fail_next(PULLS, status=403, headers={"retry-after": value})
    slept: list[float] = []

    assert client(server.url, slept).paginate("pulls") == []

    [wait] = slept
    assert 60.0 <= wait <= 65.0  # a minute, as GitHub asks when it does not say, plus a little jitter


def test_retry_after_and_integer_headers_are_parsed_strictly():
    assert retry_after("120", NOW) == 120.0 and retry_after(" 0 ", NOW) == 0.0
    assert retry_after(http_date(NOW + 3600), NOW) == 3600.0
    assert retry_after("Sun, 06 Nov 1994 08:49:37 -0000", NOW) == 0.0  # long past
    for bad in (None, "nan", "-5", "1e9", "1_000", "٣", "9" * 5000, "Someday"):
        assert retry_after(bad, NOW) is None
        assert int_header(bad) is None
    assert int_header("4999") == 4999


# -- (e): rate-limit headers that are not integers -----------------------------------------------------


@pytest.mark.parametrize("remaining", ["lots", "1.5", "-1", "", "0x10", "nan"])
def test_a_non_integer_ratelimit_remaining_is_ignored(server, remaining):
    server.fail_next(PULLS, status=200, body=[{"number": 1}], headers={"x-ratelimit-remaining": remaining})
    assert client(server.url, []).paginate("pulls") == [{"number": 1}]


def test_an_exhausted_limit_with_an_unreadable_reset_waits_a_minute(server):
    server.fail_next(PULLS, status=403, headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": "soon"})
    slept: list[float] = []
    assert client(server.url, slept).paginate("pulls") == []
    [wait] = slept
    assert 60.0 <= wait <= 65.0


def test_an_exhausted_limit_is_waited_until_its_reset_and_a_little_more(server):
    reset = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW) + 10)}
    server.fail_next(PULLS, status=403, headers=reset)
    slept: list[float] = []
    assert client(server.url, slept).paginate("pulls") == []
    [wait] = slept
    assert 11.0 <= wait <= 12.1  # the reset and a second of margin, never less; jitter a tenth at most

    server.fail_next(PULLS, status=403, headers={**reset, "x-ratelimit-reset": str(int(NOW) + 5000)})
    with pytest.raises(GitHubError, match="longer than the 900 s wait"):
        client(server.url, []).paginate("pulls")


# -- (f): answers that are not JSON, or not the JSON expected -------------------------------------------


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        ("<html><body>Unicorn!</body></html>", "text/html"),
        ('[{"number": 1}, {"numb', "text/html"),  # truncated
        ("[" * 100_000 + "]" * 100_000, "text/html"),  # deeper than the decoder goes
    ],
)
def test_a_200_that_is_not_json_is_a_clear_error_naming_the_request(server, body, kind):
    for call in (lambda gh: gh.paginate("pulls"), lambda gh: gh.get("pulls")):
        server.fail_next(PULLS, status=200, body=body)
        with pytest.raises(GitHubError) as failed:
            call(client(server.url))
        text = one_line_without_token(failed.value)
        assert text == f"GitHub answered GET {server.url}{PULLS} with something that is not JSON ({kind})"


def test_a_json_that_is_not_a_list_where_a_list_is_expected_is_a_clear_error(server):
    server.fail_next(PULLS, status=200, body={"message": "not a list", "documentation_url": "x"})
    with pytest.raises(GitHubError, match=r"GET .*/pulls with a JSON object where a list was expected"):
        client(server.url).paginate("pulls")


def test_an_error_body_of_an_odd_shape_still_gives_a_message(server):
    server.fail_next(PULLS, status=422, body={"message": "Validation\nFailed", "errors": 5})
    with pytest.raises(GitHubError) as failed:
        client(server.url).get("pulls")
    assert one_line_without_token(failed.value).endswith(": 422 Validation Failed")


# -- (g): jittered backoff --------------------------------------------------------------------------------


def test_server_errors_back_off_exponentially_with_jitter(server):
    server.fail_next("/repos/org/index", status=502, times=4)
    slept: list[float] = []
    assert client(server.url, slept, random=Random(7)).get("/repos/org/index")["full_name"] == "org/index"

    assert len(slept) == 4
    assert all(2**i / 2 <= wait <= 2**i for i, wait in enumerate(slept))  # half to the whole of 2**attempt
    assert slept != [1.0, 2.0, 4.0, 8.0]

    server.fail_next("/repos/org/index", status=502, times=4)
    again: list[float] = []
    client(server.url, again, random=Random(7)).get("/repos/org/index")
    assert again == slept  # the randomness is injected: the same seed, the same waits


def test_dropped_connections_back_off_with_jitter_too(server):
    server.drop_next("/repos/org/index", times=3)
    slept: list[float] = []
    assert client(server.url, slept, random=Random(3)).get("/repos/org/index")["name"] == "index"
    assert len(slept) == 3 and all(2**i / 2 <= wait <= 2**i for i, wait in enumerate(slept))
    assert slept != [1.0, 2.0, 4.0]


def test_a_backoff_never_exceeds_a_minute(server):
    slept: list[float] = []
    gh = client(server.url, slept, random=Random(1), max_retries=8)
    server.fail_next("/repos/org/index", status=503, times=8)
    gh.get("/repos/org/index")
    assert all(30.0 <= wait <= 60.0 for wait in slept[6:]) and max(slept) <= 60.0


@pytest.mark.parametrize("token", [TOKEN + "\n", f" {TOKEN}\r\n"])
def test_a_token_with_a_line_break_is_taken_without_it_or_refused_without_showing_it(token, monkeypatch):
    from auditor.github import token_from_env

    monkeypatch.setenv("SUPERWEIGHT_GITHUB_TOKEN", token)
    assert token_from_env() == TOKEN  # a secret file's trailing newline is not part of the token
    with pytest.raises(GitHubError) as e:
        GitHub("org/index", token, api_url="http://127.0.0.1:9")  # given whole, it is refused at once...
    assert TOKEN not in str(e.value) and e.value.__cause__ is None  # ...and neither message nor cause holds it

"""What the local stand-ins (fakehub, fakegithub) share: a real HTTP/1.1 server on 127.0.0.1, in a thread.

`LoopbackServer` tracks kept-alive connections so that stopping closes them (their handler threads end
with the server); `LoopbackHandler` reads a whole request body (Content-Length or chunked), so a
connection stays in step, hands the stand-in a `Request`, writes its `Response`, and keeps quiet;
`Served` is the lifecycle: start, stop, `with`, `.url`.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

S = TypeVar("S", bound="Served")


class LoopbackServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Close kept-alive connections, so that their handler threads end with the server."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    """Decoded; `raw_path` is as sent."""
    raw_path: str
    segments: list[str]
    query: dict[str, list[str]]
    headers: dict[str, str]
    """Names lower-cased."""
    body: bytes
    base_url: str
    arrived: float = 0.0
    """`time.monotonic()` when it arrived, where a stand-in needs it (fakegithub's rate limits)."""
    connection: int = 0
    """A number per TCP connection, where a stand-in counts them (fakegithub)."""

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None

    def flag(self, name: str) -> bool:
        return (self.param(name) or "").lower() in ("1", "true")

    @property
    def authenticated(self) -> bool:
        return "authorization" in self.headers

    def parsed_json(self) -> Any:
        """The body as JSON; None if there is none or it is not JSON."""
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return None


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def json_response(
    status: int, payload: Any, headers: Mapping[str, str] | None = None, indent: int | None = None
) -> Response:
    return Response(
        status,
        json.dumps(payload, indent=indent).encode(),
        {"Content-Type": "application/json; charset=utf-8", **(headers or {})},
    )


class LoopbackHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

    def read_body(self) -> bytes:
        """The whole request body (Content-Length or chunked), so that the connection stays in step."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def read_request(self, **extra: Any) -> Request:
        """The request as the stand-ins see it: the path decoded and split, query, headers, body."""
        split = urlsplit(self.path)
        host, port = self.server.server_address[:2]
        return Request(
            method=self.command,
            path=unquote(split.path),
            raw_path=split.path,
            segments=[unquote(s) for s in split.path.split("/")[1:]],
            query=parse_qs(split.query, keep_blank_values=True),
            headers={name.lower(): value for name, value in self.headers.items()},
            body=self.read_body(),
            base_url=f"http://{host}:{port}",
            **extra,
        )

    def send(self, response: Response, drop_after: int | None = None) -> None:
        """Write the answer (no body for HEAD, 1xx, 204, 304); with `drop_after`, only that many bytes of
        the body, then close the connection, as a download broken midway."""
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        no_body = response.status in (204, 304) or 100 <= response.status < 200
        if not no_body:
            self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command == "HEAD" or no_body:
            return
        self.wfile.write(response.body[:drop_after])
        if drop_after is not None:
            self.wfile.flush()
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request log on stderr."""


class Served:
    """Start/stop a stand-in's server in a daemon thread; subclasses say how to make the server."""

    _server: LoopbackServer | None = None

    def make_server(self) -> LoopbackServer:
        raise NotImplementedError

    def start(self: S) -> S:
        if self._server is None:
            self._server = self.make_server()
            threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                daemon=True,
                name=type(self).__name__,
            ).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.close_connections()
            self._server.server_close()
            self._server = None

    def __enter__(self: S) -> S:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL, e.g. `http://127.0.0.1:41234`."""
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

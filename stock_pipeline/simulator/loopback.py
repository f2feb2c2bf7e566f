"""The HTTP plumbing both fakes share: a standard-library server on loopback, run in a
daemon thread, speaking HTTP/1.1 with keep-alive and JSON answers."""

from __future__ import annotations

import socket
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

# How often the serving loop checks for stop(); the default 0.5 s would slow every test's teardown.
SHUTDOWN_POLL_SECONDS = 0.05


@dataclass
class Reply:
    status: int
    body: Any = None  # JSON-serialisable, or bytes already encoded as JSON; None sends an empty body
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"

    def payload(self) -> bytes:
        """The body as sent. orjson: a 1 000-offer listing page took the stdlib encoder ~9 ms."""
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        return orjson.dumps(self.body, option=orjson.OPT_NON_STR_KEYS)

    def json_value(self) -> Any:
        """The body as JSON values (a pre-encoded one decoded), e.g. to check it against the spec."""
        return orjson.loads(self.body) if isinstance(self.body, bytes) else self.body


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Idle keep-alive connections would make server_close() wait for the clients.
    block_on_close = False
    # socketserver's default listen backlog of 5 drops the SYNs of a client opening 30
    # connections at once, and each dropped one stalls a second before its retransmit.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], app: "LoopbackServer"):
        self.app = app
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Ends open keep-alive connections, so a stopped fake stops answering."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request, client_address):
        # Clients hanging up mid-answer is routine in fault tests; anything else is a bug to show.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class JsonRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle's algorithm each answer on a
    # keep-alive connection would wait ~40 ms for the client's delayed ACK.
    disable_nagle_algorithm = True
    server: _Server

    def handle_request(self) -> None:
        raise NotImplementedError

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = lambda self: self.handle_request()

    def log_message(self, *args):
        """Silent: the fakes keep their own records of requests."""

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def send_reply(self, reply: Reply) -> None:
        payload = reply.payload()
        self.send_response(reply.status)
        if payload:
            self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def drop_connection(self) -> None:
        """Hang up without answering: the client sees the connection closed."""
        self.close_connection = True


class LoopbackServer:
    """Start/stop and context-manager plumbing; subclasses name their handler class."""

    handler_class: type[JsonRequestHandler]

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.host = host
        self.port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        # Set by stop(); handlers that sleep wait on it so stopping is never delayed.
        self.stopping = threading.Event()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self):
        if self._server is not None:
            raise RuntimeError(f"{type(self).__name__} is already running at {self.base_url}")
        self.stopping.clear()
        self._server = _Server((self.host, self.port), self.handler_class, self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            args=(SHUTDOWN_POLL_SECONDS,),
            name=f"{type(self).__name__}:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self.stopping.set()
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        self._thread.join()
        self._server = self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

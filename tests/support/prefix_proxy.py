"""A reverse proxy that serves an app under a path prefix and strips it, as nginx's
`location /intently/ { proxy_pass http://app/; }` does: a request outside the prefix gets a 404
from the proxy itself, so a page that forgets the prefix fails here as it would in production."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}


@contextmanager
def prefix_proxy(upstream: str, prefix: str) -> Iterator[tuple[str, list[str]]]:
    """Serve `upstream` under `prefix`; yields the proxy's URL and the paths it refused."""
    refused: list[str] = []
    client = httpx.Client(base_url=upstream, timeout=30)

    class Handler(BaseHTTPRequestHandler):
        def _forward(self) -> None:
            if not self.path.startswith(prefix + "/"):
                refused.append(self.path)
                self.send_error(404, "outside the proxied prefix")
                return
            length = int(self.headers.get("Content-Length") or 0)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP | {"host"}}
            answer = client.request(
                self.command, self.path[len(prefix) :], headers=headers, content=self.rfile.read(length)
            )
            self.send_response(answer.status_code)
            for key, value in answer.headers.items():
                if key.lower() not in HOP_BY_HOP:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        do_GET = do_POST = do_PUT = do_DELETE = _forward

        def log_message(self, format: str, *args: object) -> None:  # quiet: pytest shows failures
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", refused
    finally:
        server.shutdown()
        server.server_close()
        client.close()

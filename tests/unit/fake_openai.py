"""Serve a scripted OpenAI-compatible chat-completions endpoint on 127.0.0.1 for the HTTP client tests.

Each request to ``/v1/chat/completions`` takes the next scripted action, or the default reply once
the script is empty:

- ``("ok", text)``: a chat completion whose answer is ``text``;
- ``("raw", body)``: a 200 whose body is exactly ``body`` (bytes);
- ``("status", code, body[, headers])``: that status, body and extra headers;
- ``("stall", seconds)``: wait, then the default reply (the client may have given up by then).

Any other path, and any GET, is a 404 that takes nothing from the script. Every request is
recorded in ``requests`` as ``{"method", "path", "headers", "auth", "body"}`` with the body parsed
from JSON (None for a GET).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROUTE = "/v1/chat/completions"


class FakeOpenAI:
    """A local chat-completions server; ``reply(prompt)`` answers whatever the script does not."""

    def __init__(self, reply: Callable[[str], str]) -> None:
        self.reply = reply
        self.script: list[tuple] = []
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

            def _record(self, body: dict | None) -> None:
                outer.requests.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "headers": dict(self.headers),
                        "auth": self.headers.get("Authorization"),
                        "body": body,
                    }
                )

            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                self._record(body)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # client timed out
                    outer._respond(self, body)

            def do_GET(self) -> None:  # noqa: N802 - a followed redirect may arrive as a GET
                self._record(None)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    outer._send(self, 404, b'{"error": "no such route"}', {})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"
        threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True).start()

    def _action(self, path: str) -> tuple:
        if path != ROUTE:
            return ("status", 404, b'{"error": "no such route"}')
        return self.script.pop(0) if self.script else ("default",)

    def _respond(self, h: BaseHTTPRequestHandler, body: dict) -> None:
        action = self._action(h.path)
        if action[0] == "stall":
            time.sleep(action[1])
            action = ("default",)
        if action[0] == "default":
            action = ("ok", self.reply(body["messages"][0]["content"]))
        status, headers = 200, {}
        if action[0] == "ok":
            message = {"role": "assistant", "content": action[1]}
            payload = json.dumps({"choices": [{"message": message}]}).encode()
        elif action[0] == "raw":
            payload = action[1]
        else:  # ("status", code, body[, headers])
            status, payload = action[1], action[2]
            headers = action[3] if len(action) > 3 else {}
        self._send(h, status, payload, headers)

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, payload: bytes, headers: dict[str, str]) -> None:
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(payload)))
        for k, v in headers.items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(payload)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

"""A small OpenAI-compatible upstream for end-to-end tests (loopback only).

What it does depends on the last user message:
    "hang ..."       headers and one chunk, then silence
    "fail ..."       HTTP 500
    "garbage ..."    a chunk that is not JSON
    "slow ..."       one token every 50 ms for a long time; notices the client leaving
    anything else    its words as tokens, then [DONE]
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.support.processes import free_port


class FakeUpstream:
    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[dict] = []
        self.closed_by_client = 0  # streams whose client (our server) hung up mid-way
        self.stop_event = threading.Event()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                upstream.requests.append({"body": body, "auth": self.headers.get("Authorization")})
                last = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
                mode = last.split()[0] if last.split() else ""
                if mode == "fail":
                    self._send_plain(500, b'{"error": "boom"}')
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    if mode == "hang":
                        self._chunk(self._event("first "))
                        upstream.stop_event.wait(60)
                        return
                    if mode == "garbage":
                        self._chunk(b"data: {this is not json\n\n")
                        return
                    words = last.split()
                    count = 100_000 if mode == "slow" else len(words)
                    for index in range(count):
                        if upstream.stop_event.is_set():
                            return
                        self._chunk(self._event(words[index % len(words)] + " "))
                        if mode == "slow":
                            time.sleep(0.05)
                    self._chunk(b"data: [DONE]\n\n")
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    upstream.closed_by_client += 1

            def _event(self, content: str) -> bytes:
                chunk = {"id": "up", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": content}}]}
                return f"data: {json.dumps(chunk)}\n\n".encode()

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def _send_plain(self, status: int, data: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        self.stop_event.set()
        self.server.shutdown()
        self.server.server_close()

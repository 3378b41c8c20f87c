"""A minimal OpenAI-compatible HTTP server for unit tests of the code around a policy server.

It answers /v1/models and /v1/chat/completions with a fixed reply after a delay, and can
refuse vLLM's extra fields the way strict external APIs do. Real-server tests use vLLM.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeOpenAIServer:
    """Serve on 127.0.0.1 in a thread; `requests` records every chat request body."""

    def __init__(
        self, reply: str = "look", delay_s: float = 0.0, model: str = "fake-model", strict: bool = False,
        no_tool_parser: bool = False, tool_call: dict[str, Any] | None = None,
    ) -> None:
        self.reply, self.delay_s, self.model, self.strict = reply, delay_s, model, strict
        # no_tool_parser: refuse tools unless tool_choice is "none", as vLLM does without --tool-call-parser.
        # tool_call: answer with this structured call ({"name", "arguments": "<json>"}) instead of text.
        self.no_tool_parser, self.tool_call = no_tool_parser, tool_call
        self.requests: list[dict[str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": server.model, "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                if server.strict and ("return_token_ids" in body or "logprobs" in body):
                    self._send(400, {"error": {"message": "Unrecognized request argument supplied: return_token_ids"}})
                    return
                if server.no_tool_parser and body.get("tools") and body.get("tool_choice") != "none":
                    message = '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'
                    self._send(400, {"error": {"message": message}})
                    return
                time.sleep(server.delay_s)
                choice: dict[str, Any] = {
                    "index": 0, "finish_reason": "stop",
                    "message": {"role": "assistant", "content": server.reply},
                }
                if server.tool_call is not None:
                    choice["finish_reason"] = "tool_calls"
                    choice["message"] = {"role": "assistant", "content": None, "tool_calls": [
                        {"id": "call_1", "type": "function", "function": server.tool_call}]}
                response: dict[str, Any] = {
                    "id": "x", "object": "chat.completion", "created": 0, "model": server.model, "choices": [choice],
                    "usage": {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13},
                }
                if body.get("return_token_ids"):
                    choice["token_ids"] = [101, 2]
                    response["prompt_token_ids"] = list(range(11))
                if body.get("logprobs"):
                    choice["logprobs"] = {"content": [
                        {"token": "token_id:101", "logprob": -0.5, "bytes": None, "top_logprobs": []},
                        {"token": "token_id:2", "logprob": -0.125, "bytes": None, "top_logprobs": []},
                    ]}
                self._send(200, response)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeOpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

"""A small OpenAI-compatible chat-completions server around any Python callable.

``answer(audio, prompt, temperature, n) -> list[str]`` receives the request's first
``input_audio`` decoded to 16 kHz float32 mono, the user message's text, the temperature and
``n``; each returned string becomes one choice (returning fewer than ``n`` is allowed).

>>> server, thread, url = serve(lambda audio, prompt, temperature, n: ["happy"] * n)
>>> url.startswith("http://127.0.0.1:") and url.endswith("/v1")
True
>>> server.shutdown(); server.server_close()

Loopback only by default. ``usage`` token counts in responses are rough: words of the prompt plus
25 tokens per second of audio, words of each answer (at least 1). Subclass
:class:`ChatCompletionsHandler` and override :meth:`~ChatCompletionsHandler.on_request` to inject
faults or log requests.
"""

from __future__ import annotations

import base64
import io
import json
import math
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import soundfile as sf

from ..audio import prepare

AnswerFn = Callable[[np.ndarray, str, float, int], list[str]]
SAMPLE_RATE = 16000
MAX_N = 128
AUDIO_TOKENS_PER_S = 25


class BadRequest(ValueError):
    """The request is not one we can answer (HTTP 400)."""


def decode_audio_b64(data: str) -> np.ndarray:
    """base64 audio file bytes (any format soundfile reads) -> float32 mono 16 kHz."""
    try:
        raw = base64.b64decode(data, validate=True)
        x, sr = sf.read(io.BytesIO(raw), dtype="float32", always_2d=True)
        return prepare(x, sr, SAMPLE_RATE, what="input_audio")
    except Exception as e:
        raise BadRequest(
            f"input_audio cannot be decoded ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
        ) from None


def parse_request(req: dict) -> tuple[np.ndarray, str, float, int]:
    """``(audio, user prompt text, temperature, n)`` of a chat-completions request; BadRequest if unusable."""
    messages = req.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list")
    texts: list[str] = []
    audio = None
    for msg in messages:
        if not isinstance(msg, dict) or msg.get("role") != "user":
            continue
        content = msg.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        for part in parts if isinstance(parts, list) else []:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif part.get("type") == "input_audio" and audio is None:
                payload = part.get("input_audio") or {}
                if not isinstance(payload, dict) or not isinstance(payload.get("data"), str):
                    raise BadRequest("input_audio needs a base64 'data' string")
                audio = decode_audio_b64(payload["data"])
    if audio is None:
        raise BadRequest("no input_audio part in the user message")
    temperature = req.get("temperature", 1.0)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2:
        raise BadRequest(f"temperature must be a number in [0, 2], got {temperature!r}")
    n = req.get("n", 1)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_N:
        raise BadRequest(f"n must be an integer in [1, {MAX_N}], got {n!r}")
    return audio, "\n".join(texts), float(temperature), n


class ChatCompletionsHandler(BaseHTTPRequestHandler):
    """POST ``.../chat/completions`` and GET ``.../models``. ``answer`` and ``model_name`` are set by
    :func:`serve` on a subclass."""

    answer: AnswerFn
    model_name: str = "edgeser-stand-in"
    server_version = "edgeser-openai/0.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def send_json(self, status: int, obj: object, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(obj).encode()
        self.send_raw(status, body, headers)

    def send_raw(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        """Write a response; a client that went away (timed out) is ignored."""
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass

    def send_error_json(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        self.send_json(
            status, {"error": {"message": message, "type": "invalid_request_error", "code": status}}, headers
        )

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            self.send_json(200, {"object": "list", "data": [{"id": self.model_name, "object": "model"}]})
        else:
            self.send_error_json(404, f"no such endpoint {self.path}")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        if not self.path.rstrip("/").endswith("/chat/completions"):
            return self.send_error_json(404, f"no such endpoint {self.path}")
        try:
            req = json.loads(raw)
            if not isinstance(req, dict):
                raise ValueError("body is not a JSON object")
        except ValueError as e:
            return self.send_error_json(400, f"invalid JSON body: {e}")
        if self.on_request(req):
            return
        try:
            body = self.complete(req)
        except BadRequest as e:
            return self.send_error_json(400, str(e))
        except Exception as e:  # the answer function failed
            return self.send_error_json(500, f"{type(e).__name__}: {e}")
        self.send_json(200, body)

    def on_request(self, req: dict) -> bool:
        """Hook called with the parsed request before answering; return True if it sent a response."""
        return False

    def complete(self, req: dict) -> dict:
        """Answer one request: the chat-completions response object."""
        audio, prompt, temperature, n = parse_request(req)
        texts = [str(t) for t in type(self).answer(audio, prompt, temperature, n)][:n]
        prompt_tokens = len(prompt.split()) + math.ceil(len(audio) / SAMPLE_RATE * AUDIO_TOKENS_PER_S)
        completion_tokens = sum(max(1, len(t.split())) for t in texts)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:16]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": req.get("model") or self.model_name,
            "choices": [
                {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
                for i, t in enumerate(texts)
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }


def serve(
    answer: AnswerFn,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    model_name: str = "edgeser-stand-in",
    handler: type[ChatCompletionsHandler] = ChatCompletionsHandler,
) -> tuple[ThreadingHTTPServer, threading.Thread, str]:
    """Start serving in a daemon thread; returns ``(server, thread, base_url)`` with base_url
    ``http://host:port/v1``. Stop with ``server.shutdown(); server.server_close()``."""
    bound = type(f"Bound{handler.__name__}", (handler,), {"answer": staticmethod(answer), "model_name": model_name})
    server = ThreadingHTTPServer((host, port), bound)
    server.daemon_threads = True
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},
        name=f"openai-server-{server.server_address[1]}",
        daemon=True,
    )
    thread.start()
    return server, thread, f"http://{host}:{server.server_address[1]}/v1"

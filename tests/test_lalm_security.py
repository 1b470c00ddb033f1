"""The LALM client never leaks credentials and bounds what a hostile or broken server costs (issue 9:
redirects to other hosts, redaction, body cap, runs of failures, unreadable clips). Real servers on
loopback addresses (127.0.0.0/8 is all loopback on Linux)."""

from __future__ import annotations

import json
import threading
import traceback
from http.server import ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edgeser.adapt.teachers import LALMTeacher
from edgeser.adapt.teachers.lalm import redact_url
from edgeser.errors import LALMError
from edgeser.manifest import Clip
from edgeser.testing.openai_server import ChatCompletionsHandler

LABELS = ["neutral", "happy", "sad", "angry"]
KEY = "sk-test-0123456789abcdef"


class Recorder(ChatCompletionsHandler):
    """Records every request; ``reply(handler)`` decides the response (set on a subclass); ``send`` is the
    loopback server's raw response writer."""

    seen: list
    reply: object

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.seen.append({"path": self.path, "auth": self.headers.get("Authorization")})
        type(self).reply(self)

    do_GET = do_POST

    def send(self, status: int, body: bytes, headers: dict | None = None) -> None:
        self.send_raw(status, body, headers)


def completion(text: str) -> bytes:
    return json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}).encode()


@pytest.fixture
def server():
    started = []

    def start(reply, host: str = "127.0.0.1"):
        seen: list = []
        handler = type("H", (Recorder,), {"seen": seen, "reply": staticmethod(reply)})
        srv = ThreadingHTTPServer((host, 0), handler)
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        started.append(srv)
        return f"http://{host}:{srv.server_address[1]}", seen

    yield start
    for srv in started:
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def clips(tmp_path: Path) -> list[Clip]:
    out = []
    for i in range(3):
        p = tmp_path / f"c{i}.wav"
        sf.write(p, (0.3 * np.sin(np.arange(4000 + 800 * i) / 7)).astype(np.float32), 16000)
        out.append(Clip(p, None, None, {}))
    return out


def teacher(url: str, tmp_path: Path, **kw) -> LALMTeacher:
    opts = dict(cache_path=tmp_path / "cache.sqlite", backoff_s=0.0, timeout_s=5.0, max_retries=2, progress=False)
    opts.update(kw)
    return LALMTeacher(url, "m", LABELS, **opts)


def test_redact_url_known_values() -> None:
    assert (
        redact_url("https://bob:s3cret@api.example.com/v1?api_key=abc&x=1")
        == "https://bob:***@api.example.com/v1?api_key=***&x=***"
    )
    assert redact_url("http://tok@h:8000/v1") == "http://***@h:8000/v1"
    assert redact_url("http://h:8000/v1") == "http://h:8000/v1"


def test_the_key_never_follows_a_redirect_to_another_host(server, clips, tmp_path, monkeypatch) -> None:
    other, other_seen = server(lambda h: h.send(200, completion("happy")), host="127.0.0.2")
    url, seen = server(lambda h: h.send(302, b"", {"Location": f"{other}/v1/chat/completions"}))
    monkeypatch.setenv("EDGESER_LALM_API_KEY", KEY)
    t = teacher(f"{url}/v1", tmp_path)
    with pytest.raises(LALMError) as e:
        t.sample(clips, 2)
    assert "redirect" in str(e.value) and KEY not in str(e.value)
    assert seen and all(r["auth"] == f"Bearer {KEY}" for r in seen)  # the configured host gets it
    assert other_seen == []  # the other host never hears from us, key or not


def test_secrets_are_redacted_in_errors_logs_summaries_and_cache(server, clips, tmp_path, monkeypatch, capsys) -> None:
    def echo(h):  # a server that echoes the credentials it received, in errors and in answers
        if len(h.seen) <= 3:
            h.send(
                500,
                json.dumps({"error": {"message": f"bad auth {h.headers.get('Authorization')} on {h.path}"}}).encode(),
            )
        else:
            h.send(200, completion(f"happy (you sent {h.headers.get('Authorization')})"))

    url, seen = server(echo)
    monkeypatch.setenv("EDGESER_LALM_API_KEY", KEY)
    host = url.split("//")[1]
    # '+' and '/' are written as such in the URL (and echoed so) but decode differently: both forms are redacted
    t = teacher(f"http://user:pw-in-url-123@{host}/v1?api_key=query+secret/456", tmp_path, max_retries=5)
    out = t.sample(clips, 1)
    assert not np.isnan(out).all()
    # the cache's answers sit in its write-ahead log until a checkpoint: read every file of it
    stored = b"".join(p.read_bytes() for p in sorted(tmp_path.glob("cache.sqlite*"))).decode("latin-1")
    assert "you sent Bearer ***" in stored  # the echoed answer is stored, redacted
    texts = [str(t.usage.summary()), t.usage.last_error, t.shown_endpoint, capsys.readouterr().err, stored]
    for secret in (KEY, "pw-in-url-123", "query+secret/456", "query secret/456"):
        assert all(secret not in x for x in texts), secret
    assert "***" in t.usage.last_error  # the echoed header was there, and shows redacted
    assert seen[0]["auth"] == f"Bearer {KEY}" and "api_key=query+secret/456" in seen[0]["path"]

    # without an API key the URL's userinfo is sent as Basic auth, and redacted as well
    monkeypatch.delenv("EDGESER_LALM_API_KEY")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    url2, seen2 = server(
        lambda h: h.send(401, json.dumps({"error": f"denied {h.headers.get('Authorization')}"}).encode())
    )
    t2 = teacher(f"http://user:pw-in-url-123@{url2.split('//')[1]}/v1", tmp_path / "b")
    with pytest.raises(LALMError) as e:
        t2.sample(clips, 1)
    assert seen2[0]["auth"].startswith("Basic ") and seen2[0]["auth"][6:] not in str(e.value)
    assert "pw-in-url-123" not in str(e.value) and "Basic ***" in str(e.value)


def test_huge_bodies_are_cut_off(server, clips, tmp_path) -> None:
    url, seen = server(lambda h: h.send(200, b'{"choices": "' + b"x" * (6 * 1024 * 1024) + b'"}'))
    t = teacher(f"{url}/v1", tmp_path, max_retries=0, max_consecutive_failures=100)
    with pytest.raises(LALMError) as e:
        t.sample(clips, 1)
    assert "over 4096 KiB" in str(e.value)


def test_a_server_that_always_fails_is_given_up_early(server, tmp_path) -> None:
    url, seen = server(lambda h: h.send(500, b'{"error": "down"}'))
    many = []
    for i in range(30):
        p = tmp_path / f"m{i}.wav"
        sf.write(p, np.full(2000 + i, 0.1, np.float32), 16000)
        many.append(Clip(p, None, None, {}))
    t = teacher(f"{url}/v1", tmp_path, max_retries=5, max_concurrency=4, max_consecutive_failures=12)
    with pytest.raises(LALMError) as e:
        t.sample(many, 1)
    assert "12 failed calls in a row" in str(e.value) and "HTTP 500" in str(e.value)
    assert len(seen) <= 12 + 4  # the run stops; at most the other workers' calls in flight also land


def test_an_unreadable_clip_gets_no_answers_and_the_rest_go_on(server, clips, tmp_path, capsys) -> None:
    url, _ = server(lambda h: h.send(200, completion("sad")))
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF not really a wav file")
    t = teacher(f"{url}/v1", tmp_path)
    out = t.sample([clips[0], Clip(bad, None, None, {}), clips[1]], 2)
    assert np.isnan(out[1]).all() and not np.isnan(out[[0, 2]]).any()
    assert [p for p, _ in t.usage.unreadable] == [str(bad)]
    assert "broken.wav" in capsys.readouterr().err


@pytest.mark.parametrize(
    "bad",
    [
        "htp://user:pw-in-url-123@h/v1",
        "http://user:pw-in-url-123@h:99999/v1",
        "ftp://h/v1?api_key=pw-in-url-123",
        "http://[::1/v1?api_key=pw-in-url-123",
    ],
)
def test_a_bad_url_is_refused_without_showing_its_credentials(bad, tmp_path) -> None:
    with pytest.raises(LALMError, match="bad LALM URL") as e:
        LALMTeacher(bad, "m", LABELS, cache_path=tmp_path / "c.sqlite")
    assert "pw-in-url-123" not in "".join(traceback.format_exception(e.value))


def test_tracebacks_do_not_carry_what_the_server_echoed(server, clips, tmp_path, monkeypatch) -> None:
    """The error that stops a run is raised while urllib's error is handled: chained, its traceback would
    show the server's status line, here an echo of the Authorization header and of the URL."""

    def echo_in_status_line(h):
        h.send_response(500, f"oops {h.headers.get('Authorization')} {h.path}")
        h.send_header("Content-Length", "2")
        h.end_headers()
        h.wfile.write(b"{}")

    url, seen = server(echo_in_status_line)
    monkeypatch.setenv("EDGESER_LALM_API_KEY", KEY)
    t = teacher(f"{url}/v1?api_key=query-secret-456", tmp_path, max_retries=0, max_consecutive_failures=1)
    with pytest.raises(LALMError, match="1 failed calls in a row") as e:
        t.sample(clips[:1], 1)
    shown = "".join(traceback.format_exception(e.value))
    assert seen and KEY not in shown and "query-secret-456" not in shown


def test_the_openai_key_is_for_openai_only() -> None:
    from edgeser.adapt.teachers.lalm import _is_openai

    assert _is_openai("https://api.openai.com/v1/chat/completions")
    for url in (
        "http://api.openai.com/v1/chat/completions",
        "https://api.openai.com.evil.net/v1",
        "https://evilopenai.com/v1",
        "http://127.0.0.1:8000/v1",
    ):
        assert not _is_openai(url), url

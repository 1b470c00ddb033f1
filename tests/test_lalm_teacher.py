"""LALMTeacher against a real loopback OpenAI-compatible server with injected faults.

The server (edgeser.testing.openai_server + FaultHandler below) answers deterministically:
clip ``i`` is recognised by its length and its ``t``-th answer is ``answer_text(i, t)``, in one of
four formats (label word, markdown, {"label": ...}, a JSON distribution). Audio is synthesised, so
these tests never skip.
"""

from __future__ import annotations

import _thread
import json
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edgeser.adapt.teachers import AnswerCache, LALMTeacher, default_prompt
from edgeser.adapt.teachers.lalm import endpoint_url
from edgeser.errors import LALMError
from edgeser.manifest import Clip
from edgeser.testing.openai_server import BadRequest, ChatCompletionsHandler, parse_request, serve

LABELS = ["neutral", "happy", "sad", "angry"]
SR = 16000
BASE_LEN, STEP = 4000, 800  # clip i has BASE_LEN + STEP * i samples


def answer_text(i: int, t: int) -> str:
    lab, other = LABELS[(i + t) % 4], LABELS[(i + t + 1) % 4]
    return [f"{lab.capitalize()}.", f"**{lab}**", json.dumps({"label": lab}), json.dumps({lab: 0.75, other: 0.25})][
        t % 4
    ]


def expected(i: int, t: int) -> np.ndarray:
    v = np.zeros(4)
    if t % 4 == 3:
        v[(i + t) % 4], v[(i + t + 1) % 4] = 0.75, 0.25
    else:
        v[(i + t) % 4] = 1.0
    return v


def clip_id(audio: np.ndarray) -> int:
    return (len(audio) - BASE_LEN) // STEP


@dataclass
class State:
    """Server-side plan and record. ``plan``: one action per request, in order (then "ok")."""

    plan: list[str] = field(default_factory=list)
    ignore_n: bool = False
    reject_n: bool = False
    die_after: int | None = None  # requests answered before the server goes away
    overrides: dict[tuple[int, int], str] = field(default_factory=dict)
    on_answer: Callable[[int], None] | None = None
    release: threading.Event = field(default_factory=threading.Event)  # the plan's "wait" requests wait for it
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: list[dict] = field(default_factory=list)
    counters: dict[int, int] = field(default_factory=dict)
    tokens: list[int] = field(default_factory=lambda: [0, 0])
    in_flight: int = 0  # requests inside a "slow" action
    max_in_flight: int = 0
    server: object = None
    dead: bool = False

    def answer(self, audio: np.ndarray, prompt: str, temperature: float, n: int) -> list[str]:
        i = clip_id(audio)
        with self.lock:
            t0 = self.counters.get(i, 0)
            self.counters[i] = t0 + n
        out = [self.overrides.get((i, t), answer_text(i, t)) for t in range(t0, t0 + n)]
        if self.on_answer:
            self.on_answer(i)
        return out


class FaultHandler(ChatCompletionsHandler):
    state: State

    def on_request(self, req: dict) -> bool:
        st = self.state
        try:
            audio = parse_request(req)[0]
        except BadRequest:
            audio = np.zeros(0)
        with st.lock:
            st.requests.append(
                {
                    "n": req.get("n"),
                    "clip": clip_id(audio),
                    "len": len(audio),
                    "audio": audio,
                    "auth": self.headers.get("Authorization"),
                    "body": req,
                }
            )
            action = st.plan.pop(0) if st.plan else "ok"
            dying = st.die_after is not None and len(st.requests) > st.die_after
            if dying and not st.dead:
                st.dead = True
                srv = st.server
                threading.Thread(target=lambda: (srv.shutdown(), srv.server_close()), daemon=True).start()
        if dying or action == "drop":  # close the connection without a response
            self.close_connection = True
            return True
        kind, _, arg = action.partition(":")
        if kind == "slow":
            # counted only before the response is written: once it is, the client may already send its next
            # request, so a count that ends after the write would see one request too many
            with st.lock:
                st.in_flight += 1
                st.max_in_flight = max(st.max_in_flight, st.in_flight)
            try:
                time.sleep(float(arg))
            finally:
                with st.lock:
                    st.in_flight -= 1
        elif kind == "wait":
            assert st.release.wait(timeout=60), "the test never released a waiting request"
        elif kind == "429":
            self.send_error_json(429, "slow down", {"Retry-After": arg or "0"})
            return True
        elif kind == "malformed":
            self.send_raw(200, b'{"choices": [{"message": ')
            return True
        elif kind.isdigit():
            self.send_error_json(int(kind), f"injected {kind}")
            return True
        if st.reject_n and (req.get("n") or 1) > 1:
            self.send_error_json(400, "n > 1 is not supported")
            return True
        if st.ignore_n:
            req["n"] = 1
        return False

    def complete(self, req: dict) -> dict:
        st = self.state
        body = super().complete(req)
        with st.lock:
            st.tokens[0] += body["usage"]["prompt_tokens"]
            st.tokens[1] += body["usage"]["completion_tokens"]
        return body


@pytest.fixture
def start_server():
    servers = []

    def start(state: State | None = None) -> tuple[State, str]:
        st = state or State()
        srv, _, url = serve(st.answer, handler=type("H", (FaultHandler,), {"state": st}))
        st.server = srv
        servers.append(srv)
        return st, url

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def clips(tmp_path: Path) -> list[Clip]:
    out = []
    for i in range(6):
        n = BASE_LEN + STEP * i
        x = 0.5 * np.sin(2 * np.pi * (220 + 55 * i) * np.arange(n) / SR).astype(np.float32)
        p = tmp_path / f"clip{i}.wav"
        sf.write(p, x, SR, subtype="PCM_16")
        out.append(Clip(path=p, key=p.name))
    return out


def teacher(url: str, tmp_path: Path, **kw: object) -> LALMTeacher:
    opts: dict = dict(
        cache_path=tmp_path / "cache.sqlite", backoff_s=0.001, timeout_s=5.0, max_retries=3, progress=False
    )
    opts.update(kw)
    return LALMTeacher(url, "stand-in", LABELS, **opts)


def expected_all(n: int, k: int) -> np.ndarray:
    return np.array([[expected(i, t) for t in range(k)] for i in range(n)])


def test_distributions_match_and_rerun_uses_only_the_cache(start_server, clips, tmp_path) -> None:
    st, url = start_server()
    t = teacher(url, tmp_path)
    out = t.sample(clips[:3], k=4)
    assert out.shape == (3, 4, 4)
    np.testing.assert_allclose(out, expected_all(3, 4))
    assert [r["n"] for r in st.requests] == [4, 4, 4]
    u = t.usage
    assert (u.calls, u.cached, u.failed_calls, u.unparsed_answers, u.missing_samples) == (3, 0, 0, 0, 0)
    assert (u.prompt_tokens, u.completion_tokens) == tuple(st.tokens) and u.prompt_tokens > 0
    assert "\n" not in u.summary() and "3 calls" in u.summary()
    assert t.cache.count() == 12

    st2, url2 = start_server()  # a different port: the cache key does not include the URL
    t2 = teacher(url2, tmp_path)
    np.testing.assert_array_equal(t2.sample(clips[:3], k=4), out)
    assert st2.requests == [] and t2.usage.calls == 0 and t2.usage.cached == 12


def test_request_format_audio_and_api_key(start_server, clips, tmp_path, monkeypatch) -> None:
    st, url = start_server()
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("EDGESER_LALM_API_KEY", "k1")
    teacher(url + "/chat/completions", tmp_path, temperature=0.7, use_n=False).sample(clips[:1], k=1)
    monkeypatch.delenv("EDGESER_LALM_API_KEY")
    monkeypatch.setenv("OPENAI_API_KEY", "k2")  # an OpenAI key is for api.openai.com: never sent to this server
    teacher(url + "/", tmp_path, temperature=0.5).sample(clips[:1], k=1)
    monkeypatch.delenv("OPENAI_API_KEY")
    teacher(url, tmp_path, temperature=0.3).sample(clips[:1], k=1)
    assert [r["auth"] for r in st.requests] == ["Bearer k1", None, None]
    body = st.requests[0]["body"]
    assert body["model"] == "stand-in" and body["temperature"] == 0.7 and "n" not in body
    assert 1 <= body["max_tokens"] <= 64
    system, user = body["messages"]
    assert system["role"] == "system" and user["role"] == "user"
    text, audio = user["content"]
    assert text == {"type": "text", "text": default_prompt(LABELS)}
    assert audio["type"] == "input_audio" and audio["input_audio"]["format"] == "wav"
    sent = st.requests[0]["audio"]
    original, _ = sf.read(clips[0].path, dtype="float32")
    assert sent.shape == original.shape and np.abs(sent - original).max() <= 1.5 / 32768


def test_url_forms_and_bad_urls() -> None:
    assert endpoint_url("http://h:1/v1") == "http://h:1/v1/chat/completions"
    assert endpoint_url("http://h:1/v1/") == "http://h:1/v1/chat/completions"
    assert endpoint_url("https://h/v1/chat/completions") == "https://h/v1/chat/completions"
    for bad in ("localhost:8000/v1", "ftp://h/v1", "", "http:///v1", "http://h:99999999/v1"):
        with pytest.raises(LALMError, match="bad LALM URL"):
            endpoint_url(bad)


def test_500_malformed_and_dropped_connections_are_retried(start_server, clips, tmp_path) -> None:
    st, url = start_server(State(plan=["500", "malformed", "drop"]))
    t = teacher(url, tmp_path)
    out = t.sample(clips[:1], k=2)
    np.testing.assert_allclose(out, expected_all(1, 2))
    assert len(st.requests) == 4
    assert (t.usage.calls, t.usage.failed_calls) == (4, 3)


def test_429_retry_after_is_honoured(start_server, clips, tmp_path) -> None:
    st, url = start_server(State(plan=["429:0.3"]))
    t = teacher(url, tmp_path)
    t0 = time.monotonic()
    out = t.sample(clips[:1], k=2)
    assert time.monotonic() - t0 >= 0.3
    np.testing.assert_allclose(out, expected_all(1, 2))
    assert len(st.requests) == 2 and t.usage.failed_calls == 1


def test_slow_answer_beyond_the_timeout_is_retried(start_server, clips, tmp_path) -> None:
    st, url = start_server(State(plan=["slow:0.6"]))
    t = teacher(url, tmp_path, timeout_s=0.25)
    out = t.sample(clips[:1], k=2)
    np.testing.assert_allclose(out, expected_all(1, 2))  # the retry was answered before the slow one
    assert len(st.requests) == 2 and t.usage.failed_calls == 1
    assert "timed out" in t.usage.last_error


def test_labels_outside_the_set_are_nan_rows_and_counted(start_server, clips, tmp_path) -> None:
    st, url = start_server(State(overrides={(0, 1): "Fearful.", (0, 2): "angry or sad", (1, 0): "calm"}))
    t = teacher(url, tmp_path)
    out = t.sample(clips[:2], k=4)
    nan_rows = {(i, j) for i in range(2) for j in range(4) if np.isnan(out[i, j]).all()}
    assert nan_rows == {(0, 1), (0, 2), (1, 0)}
    ok = expected_all(2, 4)
    for i, j in {(i, j) for i in range(2) for j in range(4)} - nan_rows:
        np.testing.assert_allclose(out[i, j], ok[i, j])
    assert t.usage.unparsed_answers == 3 and t.usage.missing_samples == 0
    assert t.cache.count() == 8  # unparseable answers are cached too: never asked again
    t2 = teacher(url, tmp_path)
    np.testing.assert_array_equal(t2.sample(clips[:2], k=4), out)
    assert len(st.requests) == 2 and t2.usage.calls == 0 and t2.usage.unparsed_answers == 3


def test_server_ignoring_n_gets_single_calls_for_the_rest(start_server, clips, tmp_path) -> None:
    st, url = start_server(State(ignore_n=True))
    t = teacher(url, tmp_path, max_concurrency=1)
    out = t.sample(clips[:2], k=3)
    np.testing.assert_allclose(out, expected_all(2, 3))
    assert [r["n"] for r in st.requests] == [3, None, None, 3, None, None]
    assert t.usage.calls == 6 and t.usage.failed_calls == 0


def test_400_on_n_falls_back_to_single_calls_and_is_remembered(start_server, clips, tmp_path) -> None:
    st, url = start_server(State(reject_n=True))
    t = teacher(url, tmp_path, max_concurrency=1)
    out = t.sample(clips[:3], k=2)
    np.testing.assert_allclose(out, expected_all(3, 2))
    assert [r["n"] for r in st.requests] == [2, None, None, None, None, None, None]
    assert (t.usage.calls, t.usage.failed_calls) == (7, 1)


def test_other_4xx_fails_the_clip_without_retry(start_server, clips, tmp_path) -> None:
    st, url = start_server(State(plan=["422"]))
    t = teacher(url, tmp_path, max_concurrency=1)
    out = t.sample(clips[:2], k=2)
    assert np.isnan(out[0]).all()
    np.testing.assert_allclose(out[1], expected_all(2, 2)[1])
    assert len(st.requests) == 2
    assert (t.usage.failed_calls, t.usage.missing_samples) == (1, 2)
    assert "HTTP 422" in t.usage.last_error
    # a 400 on n, then a 400 on the single call too: the clip fails after the fallback, no retries
    st, url = start_server(State(plan=["400", "400"]))
    t = teacher(url, tmp_path / "other", max_concurrency=1)
    out = t.sample(clips[:2], k=2)
    assert np.isnan(out[0]).all() and not np.isnan(out[1]).any()
    assert [r["n"] for r in st.requests] == [2, None, 2]


@pytest.mark.parametrize(
    "code,message", [(401, "refused access"), (403, "refused access"), (404, "no chat-completions endpoint")]
)
def test_auth_and_not_found_are_clear_errors(start_server, clips, tmp_path, code, message) -> None:
    st, url = start_server(State(plan=[str(code)] * 10))
    with pytest.raises(LALMError, match=message) as e:
        teacher(url, tmp_path, max_concurrency=1).sample(clips[:3], k=2)
    assert "\n" not in str(e.value) and f"HTTP {code}" in str(e.value)
    assert len(st.requests) == 1  # not retried


def test_connection_refused_everywhere_is_a_clear_error(clips, tmp_path) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    t = teacher(f"http://127.0.0.1:{port}/v1", tmp_path, max_retries=2, max_concurrency=1)
    with pytest.raises(LALMError, match="cannot connect to the LALM endpoint") as e:
        t.sample(clips[:3], k=2)
    assert "\n" not in str(e.value) and "Connection refused" in str(e.value)
    assert (t.usage.calls, t.usage.failed_calls) == (3, 3)  # 1 + max_retries attempts, then a clear error
    with pytest.raises(LALMError, match="cannot connect"):
        teacher(f"http://127.0.0.1:{port}/v1", tmp_path, max_retries=1, max_concurrency=4).sample(clips, k=2)


def test_every_request_failing_is_an_error(start_server, clips, tmp_path) -> None:
    st, url = start_server(State(plan=["422"] * 10))
    with pytest.raises(LALMError, match="every request .* failed .*HTTP 422"):
        teacher(url, tmp_path, use_n=False).sample(clips[:2], k=1)


def test_server_dying_midway_then_rerun_asks_only_for_the_missing(start_server, clips, tmp_path) -> None:
    st, url = start_server(State(die_after=2))
    t = teacher(url, tmp_path, max_concurrency=1, timeout_s=2.0)
    with pytest.raises(LALMError, match="stopped answering.*4 answers are cached.*run again"):
        t.sample(clips[:4], k=2)
    assert AnswerCache(tmp_path / "cache.sqlite").count() == 4

    st2, url2 = start_server()
    t2 = teacher(url2, tmp_path)
    out = t2.sample(clips[:4], k=2)
    np.testing.assert_allclose(out, expected_all(4, 2))  # the new server starts counting at t=0 too
    assert sorted(r["clip"] for r in st2.requests) == [2, 3]
    assert (t2.usage.calls, t2.usage.cached) == (2, 4)


@pytest.fixture
def sigint_handled():
    """Python's own SIGINT handler for the test: a job a shell starts in the background has SIGINT ignored, and
    ``_thread.interrupt_main`` then does nothing."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


def test_ctrl_c_keeps_what_was_cached_and_a_rerun_resumes(
    start_server, clips, tmp_path, capsys, sigint_handled
) -> None:
    fired = []

    def interrupt(i: int) -> None:
        if not fired:
            fired.append(i)
            _thread.interrupt_main(signal.SIGINT)

    # the requests after the first wait until the interrupt has been handled: no timing decides what lands
    st, url = start_server(State(on_answer=interrupt, plan=["ok"] + ["wait"] * 3))
    t = teacher(url, tmp_path, max_concurrency=1)
    try:
        with pytest.raises(KeyboardInterrupt):
            t.sample(clips[:4], k=2)
    finally:
        st.release.set()
    # an in-flight request still lands in the cache: wait until the stopped workers have finished it
    for th in threading.enumerate():
        if th.name.startswith("edgeser-lalm-"):
            th.join(timeout=30)
            assert not th.is_alive(), "an LALM worker did not stop"
    cached = AnswerCache(tmp_path / "cache.sqlite").count()
    assert cached in (2, 4)  # clip 0, and clip 1 when the worker had sent it before it saw the stop
    assert "interrupted" in capsys.readouterr().err

    st2, url2 = start_server()
    t2 = teacher(url2, tmp_path)
    np.testing.assert_allclose(t2.sample(clips[:4], k=2), expected_all(4, 2))
    assert len(st2.requests) == (8 - cached) // 2 and t2.usage.cached == cached


def test_cache_key_covers_temperature_prompt_model_and_k(start_server, clips, tmp_path) -> None:
    st, url = start_server()
    teacher(url, tmp_path).sample(clips[:2], k=2)
    assert len(st.requests) == 2
    teacher(url, tmp_path, temperature=0.5).sample(clips[:2], k=2)
    assert len(st.requests) == 4
    teacher(url, tmp_path, prompt="Emotion ({labels})? One word.").sample(clips[:2], k=2)
    assert (
        st.requests[-1]["body"]["messages"][1]["content"][0]["text"]
        == "Emotion (neutral, happy, sad, angry)? One word."
    )
    assert len(st.requests) == 6
    t = teacher(url, tmp_path)
    out = t.sample(clips[:2], k=3)  # only sample index 2 is new
    assert len(st.requests) == 8 and [r["n"] for r in st.requests[-2:]] == [None, None]
    assert (t.usage.cached, t.usage.calls) == (4, 2) and not np.isnan(out).any()


def test_concurrency_is_bounded(start_server, clips, tmp_path) -> None:
    st, url = start_server(State(plan=["slow:0.1"] * 6))
    t = teacher(url, tmp_path, max_concurrency=2)
    out = t.sample(clips, k=1)
    assert not np.isnan(out).any()
    assert st.max_in_flight == 2


def test_progress_line_on_stderr(start_server, clips, tmp_path, capsys) -> None:
    st, url = start_server()
    teacher(url, tmp_path, progress=True).sample(clips[:2], k=1)
    err = capsys.readouterr().err
    assert "lalm:stand-in: 2/2 clips" in err and err.endswith("\n")


def test_argument_checks(start_server, clips, tmp_path) -> None:
    st, url = start_server()
    t = teacher(url, tmp_path)
    assert t.sample([], k=3).shape == (0, 3, 4)
    with pytest.raises(ValueError):
        t.sample(clips[:1], k=0)
    with pytest.raises(ValueError):
        teacher(url, tmp_path, max_concurrency=0)
    assert st.requests == []


def test_real_emodb_clip_round_trip(tmp_path) -> None:
    data = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "emodb" / "audio"
    files = sorted(data.glob("*.flac"))[:2] if data.is_dir() else []
    if not files:
        pytest.skip(f"needs EmoDB clips in {data} (shared corpora not next to this checkout)")
    heard: list[np.ndarray] = []

    def answer(audio: np.ndarray, prompt: str, temperature: float, n: int) -> list[str]:
        heard.append(audio)
        return ["Sad"] * n

    srv, _, url = serve(answer)
    try:
        out = teacher(url, tmp_path).sample([Clip(path=f, key=f.name) for f in files], k=2)
    finally:
        srv.shutdown()
        srv.server_close()
    np.testing.assert_array_equal(out, np.tile([0, 0, 1.0, 0], (2, 2, 1)))
    from edgeser.audio import load_audio

    lengths = sorted(len(load_audio(f)) for f in files)
    assert sorted(len(a) for a in heard) == lengths

"""LALM teacher: K answers per clip from an OpenAI-compatible chat-completions endpoint that accepts
``input_audio`` (16-bit PCM WAV, base64), parsed into distributions; cached on disk as they arrive.

Failure handling: timeouts, connection errors, 429 (``Retry-After`` honoured), 5xx and malformed
response bodies are retried with exponential backoff and jitter; other 4xx fail the clip (after
falling back from ``n`` to single calls on a 400); 401/403/404/405 and a server that cannot be
reached at all raise :class:`~edgeser.errors.LALMError`, and so does a run of
``max_consecutive_failures`` failed calls in a row. Ctrl-C stops the run; what was answered stays
cached and the next run asks only for the rest. A clip whose audio cannot be read gets NaN rows and
is listed in ``usage.unreadable``; the other clips go on.

Credentials (the API key, a password in the URL, query-string values) are sent only to the
configured origin: redirects are never followed, and every message, error and stored text is
redacted (:func:`redact_url`, :meth:`LALMTeacher.redact`). Response bodies are capped at
``MAX_BODY_BYTES``.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import http.client
import io
import json
import os
import queue
import random
import re
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import wave
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..._version import __version__
from ...audio import load_audio
from ...errors import AudioError, CallBudgetSpent, LALMError
from ...manifest import Clip
from ..progress import Progress
from .base import Teacher, check_k, check_labels, nan_samples
from .cache import AnswerCache, CacheKey
from .parsing import LabelParser
from .ratelimit import RateLimiter

DEFAULT_SYSTEM = "You are an expert in recognising emotions from the sound of a speaker's voice."
DEFAULT_PROMPT = (
    "Listen to the speaker's tone of voice (not the meaning of the words, which may be in any "
    "language). Which emotion does the speaker express: {labels}? "
    "Answer with exactly one word from this list and nothing else."
)
MAX_BACKOFF_S = 60.0
MAX_RETRY_AFTER_S = 300.0
#: a chat completion of a few words is under 1 kB; 4 MB leaves room for verbose servers, never for a flood
MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_ERROR_BODY_BYTES = 64 * 1024
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")


def default_prompt(labels: Sequence[str]) -> str:
    """The default user prompt for a label set."""
    return DEFAULT_PROMPT.replace("{labels}", ", ".join(labels))


def default_cache_path() -> Path:
    """``$EDGESER_CACHE_DIR`` or ``$XDG_CACHE_HOME/edgeser`` or ``~/.cache/edgeser``, file ``lalm_answers.sqlite``."""
    base = os.environ.get("EDGESER_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "edgeser"
    )
    return Path(base) / "lalm_answers.sqlite"


def wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    """float mono audio -> 16-bit PCM WAV file bytes (clipped to [-1, 1])."""
    pcm = np.round(np.clip(np.asarray(audio, dtype=np.float64), -1.0, 1.0) * 32767.0).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def endpoint_url(url: str) -> str:
    """API base (``http://host:port/v1``) or full ``.../chat/completions`` URL -> the POST URL."""
    try:
        parts = urllib.parse.urlsplit(str(url).strip())
        _ = parts.port  # raises on a bad port
    except ValueError:  # an unclosed IPv6 bracket, a port that is not a number or out of range
        raise LALMError(f"bad LALM URL {_shown_url(url)!r}: invalid host or port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LALMError(f"bad LALM URL {_shown_url(url)!r}: expected http(s)://host[:port]/v1")
    path = parts.path.rstrip("/")
    if not path.endswith("/chat/completions"):
        path += "/chat/completions"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def redact_url(url: str) -> str:
    """``url`` with the password of its userinfo and every query-string value replaced by ``***``."""
    parts = urllib.parse.urlsplit(str(url))
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':', 1)[0]}:***@{host}" if ":" in user else f"***@{host}"
    query = "&".join(f"{k}=***" if v else k for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _shown_url(url: str) -> str:
    """:func:`redact_url`, or only the scheme when the URL cannot even be split (it may hold a secret)."""
    try:
        return redact_url(url)
    except ValueError:
        return str(url).split(":", 1)[0] + ":..."


def _secrets_of(url: str, key: str | None) -> list[str]:
    """The secret strings a message must never show: the API key, the URL's userinfo, query values."""
    parts = urllib.parse.urlsplit(str(url))
    out = [key or ""]
    if "@" in parts.netloc:
        user = parts.netloc.rpartition("@")[0]
        out += [user, urllib.parse.unquote(user), *user.split(":", 1), *urllib.parse.unquote(user).split(":", 1)[1:]]
    for _, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        out += [v, urllib.parse.quote(v, safe=""), urllib.parse.quote_plus(v, safe="")]
    out += [pair.partition("=")[2] for pair in parts.query.split("&")]  # as written: an echo shows these
    return sorted({s for s in out if len(s) >= 4}, key=len, reverse=True)


def _is_openai(endpoint: str) -> bool:
    """Whether ``endpoint`` is OpenAI's own API over HTTPS (the only place ``OPENAI_API_KEY`` is sent)."""
    parts = urllib.parse.urlsplit(endpoint)
    host = (parts.hostname or "").lower()
    return parts.scheme == "https" and (host == "openai.com" or host.endswith(".openai.com"))


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Never follow a redirect: urllib would resend the Authorization header to whatever host it names."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001 (urllib's signature)
        return None


@dataclass
class LALMUsage:
    """Counters of the last :meth:`LALMTeacher.sample` call. ``calls`` counts HTTP requests sent
    (retries included), ``failed_calls`` those that gave no answers, ``cached`` samples served from
    the cache, ``unparsed_answers`` returned samples whose answer could not be parsed (NaN rows),
    ``missing_samples`` samples with no answer at all (NaN rows); tokens as reported by the server."""

    calls: int = 0
    cached: int = 0
    failed_calls: int = 0
    unparsed_answers: int = 0
    missing_samples: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    last_error: str = ""
    #: clips whose audio could not be read: ``(path, reason)``; they got NaN rows
    unreadable: list = field(default_factory=list)

    def summary(self) -> str:
        s = (
            f"{self.calls} calls ({self.failed_calls} failed), {self.cached} cached answers, "
            f"{self.unparsed_answers} unparsed, {self.missing_samples} missing; "
            f"tokens {self.prompt_tokens} prompt + {self.completion_tokens} completion"
        )
        if self.unreadable:
            s += f"; {len(self.unreadable)} unreadable clips (first: {self.unreadable[0][0]}: {self.unreadable[0][1]})"
        return s + (f"; last error: {self.last_error}" if self.failed_calls and self.last_error else "")


class _ClientError(Exception):
    """A 4xx (other than 429/401/403/404/405): not retried."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


class _GaveUp(Exception):
    """Every attempt failed with a retryable error; ``dead`` when all were connection failures."""

    def __init__(self, dead: bool):
        super().__init__("gave up")
        self.dead = dead


class _Stopped(Exception):
    pass


@dataclass
class _Run:
    """State of one ``sample`` call, shared by its workers."""

    usage: LALMUsage = field(default_factory=LALMUsage)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    ok_calls: int = 0
    dead_streak: int = 0
    fail_streak: int = 0
    #: the --max-calls limit stopped the run
    budget_spent: bool = False


def _read_capped(resp, limit: int) -> bytes:  # noqa: ANN001 (an HTTP response or HTTPError)
    """At most ``limit`` bytes of a body; ``_TooLarge`` beyond (the rest is never read into memory)."""
    chunks, size = [], 0
    while True:
        chunk = resp.read(min(65536, limit + 1 - size))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise _TooLarge(limit)


class _TooLarge(Exception):
    def __init__(self, limit: int):
        super().__init__(f"response body over {limit // 1024} KiB")


def _short(body: bytes) -> str:
    try:
        obj = json.loads(body)
        msg = obj.get("error", {}).get("message") if isinstance(obj.get("error"), dict) else obj.get("error")
        text = str(msg or body.decode("utf-8", "replace"))
    except Exception:
        text = body.decode("utf-8", "replace")
    return " ".join(text.split())[:200]


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
        except Exception:
            return None


def _content_text(choice: object) -> str:
    msg = choice.get("message") if isinstance(choice, dict) else None
    content = msg.get("content") if isinstance(msg, dict) else None
    if isinstance(content, list):  # content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    if content is None and isinstance(choice, dict) and isinstance(choice.get("text"), str):
        return choice["text"]  # legacy completions shape
    return content if isinstance(content, str) else ""


class LALMTeacher(Teacher):
    """K samples per clip from a large audio-language model behind an OpenAI-compatible API.

    ``prompt`` may contain ``{labels}`` (replaced by the comma-separated label set); default
    :func:`default_prompt`. ``cache_path`` None means :func:`default_cache_path`. ``synonyms``
    extends the parser's table (word -> label). ``usage`` describes the last ``sample`` call."""

    def __init__(
        self,
        url: str,
        model: str,
        labels: Sequence[str],
        prompt: str | None = None,
        temperature: float = 1.0,
        api_key_env: str = "EDGESER_LALM_API_KEY",
        cache_path: str | Path | None = None,
        max_concurrency: int = 4,
        timeout_s: float = 60.0,
        max_retries: int = 5,
        backoff_s: float = 1.0,
        use_n: bool = True,
        sample_rate: int = 16000,
        progress: bool = True,
        *,
        system_prompt: str | None = DEFAULT_SYSTEM,
        max_tokens: int = 16,
        synonyms: Mapping[str, str] | None = None,
        max_consecutive_failures: int = 20,
        max_calls: int | None = None,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
    ):
        self.labels = check_labels(labels)
        endpoint = endpoint_url(url)
        parts = urllib.parse.urlsplit(endpoint)
        # userinfo goes into an Authorization header (urllib cannot send it in the URL) and out of every message
        self._basic = (
            (urllib.parse.unquote(parts.username or ""), urllib.parse.unquote(parts.password or ""))
            if parts.username is not None
            else None
        )
        self.endpoint = urllib.parse.urlunsplit(
            (parts.scheme, parts.netloc.rpartition("@")[2], parts.path, parts.query, "")
        )
        if not model or not isinstance(model, str):
            raise LALMError("an LALM model name is required")
        if (
            max_concurrency < 1
            or max_retries < 0
            or timeout_s <= 0
            or backoff_s < 0
            or max_tokens < 1
            or max_consecutive_failures < 1
        ):
            raise ValueError(
                "max_concurrency, max_tokens, max_consecutive_failures >= 1; max_retries, backoff_s >= 0; timeout_s > 0"
            )
        self.max_consecutive_failures = int(max_consecutive_failures)
        if max_calls is not None and (isinstance(max_calls, bool) or int(max_calls) < 1):
            raise ValueError(f"max_calls must be a positive integer, got {max_calls!r}")
        self.max_calls = None if max_calls is None else int(max_calls)
        self._rpm, self._tpm = RateLimiter(requests_per_minute), RateLimiter(tokens_per_minute)
        self.model, self.name = model, f"lalm:{model}"
        self.prompt = (prompt if prompt is not None else DEFAULT_PROMPT).replace("{labels}", ", ".join(self.labels))
        self.system_prompt, self.temperature, self.max_tokens = system_prompt, float(temperature), int(max_tokens)
        self.max_concurrency, self.timeout_s = int(max_concurrency), float(timeout_s)
        self.max_retries, self.backoff_s, self.use_n = int(max_retries), float(backoff_s), bool(use_n)
        self.sample_rate, self.progress = int(sample_rate), bool(progress)
        self.parser = LabelParser(self.labels, synonyms)
        self.prompt_sha256 = hashlib.sha256(json.dumps([self.system_prompt or "", self.prompt]).encode()).hexdigest()
        self.cache = AnswerCache(cache_path if cache_path is not None else default_cache_path())
        key = os.environ.get(api_key_env)
        if not key and _is_openai(self.endpoint):  # an OpenAI key goes to OpenAI only, never to any --lalm-url
            key = os.environ.get("OPENAI_API_KEY")
        self._secrets = _secrets_of(url, key)
        self.shown_endpoint = redact_url(self.endpoint)  # the only form of the URL that is ever printed
        auth = {"Authorization": f"Bearer {key}"} if key else {}
        if self._basic is not None and not key:
            token = base64.b64encode(f"{self._basic[0]}:{self._basic[1]}".encode()).decode()
            auth = {"Authorization": f"Basic {token}"}
            self._secrets = sorted(set(self._secrets) | {token}, key=len, reverse=True)
        self._headers = {"Content-Type": "application/json", "User-Agent": f"edgeser/{__version__}", **auth}
        host = urllib.parse.urlsplit(self.endpoint).hostname or ""
        handlers: list = [_NoRedirects()] + ([urllib.request.ProxyHandler({})] if host in _LOOPBACK else [])
        self._opener = urllib.request.build_opener(*handlers)
        self._n_rejected = False  # the server answered 400 to n > 1 and 200 to n == 1
        self.usage = LALMUsage()

    def redact(self, text: str) -> str:
        """``text`` with this teacher's secrets and any ``Bearer``/``Basic`` credential replaced by ``***``."""
        text = str(text)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return _BEARER.sub(lambda m: f"{m.group(1)} ***", text)

    # ---------------------------------------------------------------- public
    def sample(self, clips: Sequence[Clip], k: int) -> np.ndarray:
        """``(N, k, C)``; NaN rows for unparseable answers and samples that could not be obtained."""
        k = check_k(k)
        clips = list(clips)
        out = nan_samples(len(clips), k, len(self.labels))
        run = _Run()  # per call: workers left over from an interrupted call keep their own (stopped) run
        self.usage = run.usage
        if not clips:
            return out
        jobs: queue.Queue = queue.Queue()
        for item in enumerate(clips):
            jobs.put(item)
        results: queue.Queue = queue.Queue()
        done = 0
        workers: list[threading.Thread] = []
        try:  # workers start inside: a Ctrl-C that lands while they start must stop them too
            for w in range(min(self.max_concurrency, len(clips))):
                workers.append(
                    threading.Thread(
                        target=self._worker, args=(run, jobs, results, k), daemon=True, name=f"edgeser-lalm-{w}"
                    )
                )
                workers[-1].start()
            with Progress(len(clips), self.name, enabled=self.progress, every_s=0.25, unit="clips") as bar:
                while done < len(clips):
                    try:
                        item = results.get(timeout=0.1)
                    except queue.Empty:
                        if run.budget_spent and not any(t.is_alive() for t in workers) and results.empty():
                            break
                        continue
                    if isinstance(item, BaseException):
                        raise item
                    i, rows = item
                    out[i] = rows
                    done += 1
                    u = run.usage
                    bar.update(1, calls=u.calls, failed=u.failed_calls, cached=u.cached)
        except KeyboardInterrupt:
            run.stop.set()
            print(
                f"{self.name}: interrupted; {self.cache.count()} answers are cached in {self.cache.path},"
                " run again to resume",
                file=sys.stderr,
                flush=True,
            )
            raise
        finally:
            run.stop.set()
        u = self.usage
        if run.budget_spent:
            raise CallBudgetSpent(
                f"stopped at --max-calls {self.max_calls}: {done} of {len(clips)} clips answered, "
                f"{self.cache.count()} answers cached in {self.cache.path}; run the same command again "
                "(with a higher or no --max-calls) to continue: only the missing answers are asked"
            )
        if u.unreadable:
            print(
                f"{self.name}: {len(u.unreadable)} clips could not be read and have no answers: "
                + "; ".join(f"{p}: {why}" for p, why in u.unreadable[:5])
                + (" ..." if len(u.unreadable) > 5 else ""),
                file=sys.stderr,
                flush=True,
            )
        if u.calls and not run.ok_calls and not u.cached:
            raise LALMError(
                f"every request to {self.shown_endpoint} failed ({u.calls} calls); last error: {u.last_error}"
            )
        return out

    # --------------------------------------------------------------- workers
    def _worker(self, run: _Run, jobs: queue.Queue, results: queue.Queue, k: int) -> None:
        while not run.stop.is_set():
            try:
                i, clip = jobs.get_nowait()
            except queue.Empty:
                return
            try:
                results.put((i, self._do_clip(run, clip, k)))
            except _Stopped:
                return
            except BaseException as e:  # LALMError, AudioError, bugs: the main thread re-raises
                run.stop.set()
                results.put(e)
                return

    def _do_clip(self, run: _Run, clip: Clip, k: int) -> np.ndarray:
        try:
            wav = wav_bytes(load_audio(clip.path, self.sample_rate), self.sample_rate)
        except AudioError as e:  # one bad file costs its own answers, not the run
            with run.lock:
                run.usage.unreadable.append((str(clip.path), str(e)))
                run.usage.missing_samples += k
            return nan_samples(1, k, len(self.labels))[0]
        key = CacheKey(hashlib.sha256(wav).hexdigest(), self.model, self.prompt_sha256, self.temperature)
        texts = {i: a.text for i, a in self.cache.get(key).items() if i < k}
        with run.lock:
            run.usage.cached += len(texts)
        missing = [i for i in range(k) if i not in texts]
        if missing:
            texts.update(self._fetch(run, key, base64.b64encode(wav).decode("ascii"), missing))
        rows = nan_samples(1, k, len(self.labels))[0]
        unparsed = 0
        for i, text in texts.items():
            dist = self.parser.parse(text)
            if dist is None:
                unparsed += 1
            else:
                rows[i] = dist
        with run.lock:
            run.usage.unparsed_answers += unparsed
            run.usage.missing_samples += k - len(texts)
        return rows

    def _payload(self, b64: str, n: int | None) -> bytes:
        messages: list[dict] = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        messages.append(
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": self.prompt},
                    {"type": "input_audio", "input_audio": {"data": b64, "format": "wav"}},
                ],
            }
        )
        body: dict = {
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        if n is not None:
            body["n"] = n
        return json.dumps(body).encode()

    def _store(
        self, key: CacheKey, indices: list[int], texts: list[str], tokens: tuple[int | None, int | None]
    ) -> dict[int, str]:
        share = [None if t is None else t / len(texts) for t in tokens]
        rows = []
        for i, text in zip(indices, texts):
            text = self.redact(text)  # a server that echoes the request must not put the key on disk
            dist = self.parser.parse(text)
            rows.append((i, text, None if dist is None else dict(zip(self.labels, map(float, dist)))))
        self.cache.put(key, rows, share[0], share[1])
        return dict(zip(indices, texts))

    def _fetch(self, run: _Run, key: CacheKey, b64: str, missing: list[int]) -> dict[int, str]:
        """Answers for ``missing`` sample indices (cached as they arrive); fewer when calls fail."""
        got: dict[int, str] = {}
        todo = list(missing)
        n_was_rejected = False
        try:
            if self.use_n and len(todo) > 1 and not self._n_rejected:
                try:
                    texts, tokens = self._post(run, self._payload(b64, len(todo)))
                    texts = texts[: len(todo)]
                    got.update(self._store(key, todo[: len(texts)], texts, tokens))
                    todo = todo[len(texts) :]
                except _ClientError as e:
                    if e.code != 400:
                        return got
                    n_was_rejected = True
            for i in todo:
                texts, tokens = self._post(run, self._payload(b64, None))
                got.update(self._store(key, [i], texts[:1], tokens))
                if n_was_rejected:
                    self._n_rejected = True
        except _ClientError:
            return got
        except _GaveUp as e:
            if e.dead:
                self._connection_failed(run)
        return got

    def _connection_failed(self, run: _Run) -> None:
        with run.lock:
            run.dead_streak += 1
            never = run.ok_calls == 0
            streak = run.dead_streak
        if never:
            raise LALMError(
                f"cannot connect to the LALM endpoint {self.shown_endpoint} "
                f"({run.usage.last_error or 'connection refused'})"
            ) from None
        if streak >= max(2, self.max_concurrency):
            raise LALMError(
                f"the LALM endpoint {self.shown_endpoint} stopped answering ({run.usage.last_error}); "
                f"{self.cache.count()} answers are cached in {self.cache.path}, run again to resume"
            ) from None

    def _fail(self, run: _Run, message: str) -> None:
        """Count a failed call (message redacted); stop the run after too many failures in a row."""
        with run.lock:
            run.usage.failed_calls += 1
            run.usage.last_error = self.redact(message)
            run.fail_streak += 1
            streak = run.fail_streak
        if streak >= self.max_consecutive_failures:
            run.stop.set()
            raise LALMError(
                f"stopped after {streak} failed calls in a row to {self.shown_endpoint}; last error: "
                f"{run.usage.last_error}; {self.cache.count()} answers are cached in {self.cache.path}, "
                "run again to resume"
            ) from None  # the urllib error in flight carries unredacted text

    def _post(self, run: _Run, body: bytes) -> tuple[list[str], tuple[int | None, int | None]]:
        """One request with retries: ``(answer texts, (prompt_tokens, completion_tokens))``."""
        dead = True
        for attempt in range(self.max_retries + 1):
            if run.stop.is_set():
                raise _Stopped()
            self._wait_for_rate(run)
            with run.lock:
                if self.max_calls is not None and run.usage.calls >= self.max_calls:
                    run.budget_spent = True
                    run.stop.set()
                    raise _Stopped()
                run.usage.calls += 1
            wait = None
            req = urllib.request.Request(self.endpoint, data=body, headers=self._headers, method="POST")
            try:
                with self._opener.open(req, timeout=self.timeout_s) as resp:
                    raw = _read_capped(resp, MAX_BODY_BYTES)
                dead = False
                result = self._parse_response(raw)
                if result is not None:
                    with run.lock:
                        run.ok_calls += 1
                        run.dead_streak = 0
                        run.fail_streak = 0
                        run.usage.prompt_tokens += result[1][0] or 0
                        run.usage.completion_tokens += result[1][1] or 0
                    self._tpm.take(self._tokens_of(result[1], body))
                    return result
                self._fail(run, f"malformed response body: {raw[:80]!r}")
            except _TooLarge as e:
                dead = False
                self._fail(run, str(e))
            except urllib.error.HTTPError as e:
                dead = False
                try:
                    code, msg = e.code, self.redact(_short(_read_capped(e, MAX_ERROR_BODY_BYTES) or b""))
                except Exception:
                    code, msg = e.code, self.redact(str(e.reason))
                if 300 <= code < 400:
                    where = redact_url(e.headers.get("Location", "?")) if e.headers else "?"
                    raise LALMError(
                        f"the LALM endpoint {self.shown_endpoint} redirects (HTTP {code}) to {where}; "
                        "edgeser does not follow redirects (your API key goes to the configured host "
                        "only): use the final URL as --lalm-url"
                    ) from None
                self._fail(run, f"HTTP {code}: {msg}")
                if code in (401, 403):
                    raise LALMError(
                        f"the LALM endpoint {self.shown_endpoint} refused access (HTTP {code}: {msg}); "
                        "set EDGESER_LALM_API_KEY (OPENAI_API_KEY is used for api.openai.com only)"
                    ) from None
                if code in (404, 405):
                    raise LALMError(
                        f"no chat-completions endpoint or model at {self.shown_endpoint} "
                        f"(HTTP {code}: {msg}); the URL should be the API base, e.g. http://host:port/v1"
                    ) from None
                if code != 429 and code < 500:
                    raise _ClientError(code, msg) from None
                wait = _retry_after(e.headers.get("Retry-After") if e.headers else None)
            except TimeoutError as e:
                dead = False
                self._fail(run, f"timed out after {self.timeout_s:g} s ({e})")
            except urllib.error.URLError as e:
                if isinstance(e.reason, (TimeoutError, socket.timeout)):
                    dead = False
                    self._fail(run, f"timed out after {self.timeout_s:g} s")
                else:
                    self._fail(run, f"connection failed ({e.reason})")
            except (OSError, http.client.HTTPException) as e:  # reset, disconnected, bad status line
                self._fail(run, f"connection failed ({type(e).__name__}: {e})")
            if attempt == self.max_retries:
                break
            if wait is None:
                wait = min(MAX_BACKOFF_S, self.backoff_s * 2**attempt) * (1 + 0.25 * random.random())
            if run.stop.wait(min(wait, MAX_RETRY_AFTER_S)):
                raise _Stopped()
        raise _GaveUp(dead)

    def _wait_for_rate(self, run: _Run) -> None:
        """Block until the request and token budgets allow one more request (interruptible)."""
        for limiter, cost in ((self._rpm, 1.0), (self._tpm, 1.0)):
            while (w := limiter.wait_time(cost)) > 0:
                if run.stop.wait(w):
                    raise _Stopped()
        self._rpm.take(1.0)

    @staticmethod
    def _tokens_of(tokens: tuple[int | None, int | None], body: bytes) -> float:
        """Tokens a request used: the server's count, else an estimate of one token per 4 bytes of the request
        body (audio included: an over-estimate for servers that bill audio by duration) plus 16 per answer."""
        if tokens[0] is not None or tokens[1] is not None:
            return float((tokens[0] or 0) + (tokens[1] or 0))
        return len(body) / 4.0 + 16.0

    def plan(self, clips: Sequence[Clip], k: int) -> dict:
        """What :meth:`sample` would do, without contacting the server: clips, answers already cached, and
        HTTP calls it would make (one per clip missing answers when the server takes ``n``, else one per
        missing answer; retries not counted). Reads every clip's audio (the cache is keyed by it)."""
        k = check_k(k)
        cached = calls = unreadable = 0
        clips = list(clips)
        for clip in clips:
            try:
                wav = wav_bytes(load_audio(clip.path, self.sample_rate), self.sample_rate)
            except AudioError:
                unreadable += 1
                continue
            key = CacheKey(hashlib.sha256(wav).hexdigest(), self.model, self.prompt_sha256, self.temperature)
            have = sum(1 for i in self.cache.get(key) if i < k)
            cached += have
            missing = k - have
            if missing:
                calls += 1 if self.use_n and missing > 1 and not self._n_rejected else missing
        return {"clips": len(clips), "answers_wanted": len(clips) * k, "answers_cached": cached,
                "calls": calls, "unreadable_clips": unreadable}  # fmt: skip

    @staticmethod
    def _parse_response(raw: bytes) -> tuple[list[str], tuple[int | None, int | None]] | None:
        try:
            obj = json.loads(raw)
            choices = obj["choices"]
            if not isinstance(choices, list) or not choices:
                return None
            choices = sorted(choices, key=lambda c: c.get("index", 0) if isinstance(c, dict) else 0)
            usage = obj.get("usage") if isinstance(obj.get("usage"), dict) else {}
            tok = tuple(
                int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
                for v in (usage.get("prompt_tokens"), usage.get("completion_tokens"))
            )
            return [_content_text(c) for c in choices], tok  # type: ignore[return-value]
        except Exception:
            return None

    def close(self) -> None:
        """Close the cache."""
        self.cache.close()


__all__ = [
    "LALMTeacher",
    "LALMUsage",
    "DEFAULT_PROMPT",
    "DEFAULT_SYSTEM",
    "default_prompt",
    "default_cache_path",
    "endpoint_url",
    "redact_url",
    "wav_bytes",
    "MAX_BODY_BYTES",
]

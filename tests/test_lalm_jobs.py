"""Large LALM jobs (issue 11, item 3): rate limits, ETA, the --max-calls cost guard, --dry-run, and one
SQLite answer cache shared by concurrent processes -- against the real loopback HTTP server."""

import subprocess
import sys
import threading

import numpy as np
import pytest

from edgeser.adapt.progress import Progress, format_eta
from edgeser.adapt.teachers.ratelimit import RateLimiter
from edgeser.demo import demo_manifest
from edgeser.testing.openai_server import serve

N_CLIPS = 8  # the demo clips


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_rate_limiter_token_bucket_by_hand():
    clock = Clock()
    r = RateLimiter(60, clock)  # 60 per minute: a bucket of 60, one back per second
    assert r.wait_time(1) == 0.0
    r.take(60)
    assert r.wait_time(1) == pytest.approx(1.0)
    clock.t += 0.5
    assert r.wait_time(1) == pytest.approx(0.5)
    clock.t += 0.5
    assert r.wait_time(1) == 0.0
    r.take(31)  # a cost known only afterwards may overdraw: later callers pay it back
    assert r.wait_time(1) == pytest.approx(31.0)
    assert r.wait_time(1000) == pytest.approx(90.0)  # a cost above the bucket waits for a full bucket only
    clock.t += 1000
    assert r.level == pytest.approx(-30) and r.wait_time(60) == 0.0  # refilled up to the size, not beyond
    slept = []

    def sleep(s):
        slept.append(s)
        clock.t += s

    r.take(60)
    assert r.acquire(2, sleep) == pytest.approx(2.0) and slept == [pytest.approx(2.0)]
    unlimited = RateLimiter(None, clock)
    unlimited.take(1e9)
    assert unlimited.wait_time(1e9) == 0.0
    with pytest.raises(ValueError):
        RateLimiter(0)


def test_eta():
    assert format_eta(42.4) == "42s" and format_eta(185) == "3m05s" and format_eta(7620) == "2h07m"
    p = Progress(10, "x", enabled=False)
    p.update(5)
    assert "ETA" in p.line()
    p.update(5)
    assert "ETA" not in p.line()  # done


@pytest.fixture()
def server():
    """A counting loopback LALM; ``forbid`` makes it fail the test when contacted."""
    state = {"calls": 0, "forbid": False}
    lock = threading.Lock()

    def answer(audio, prompt, temperature, n):
        with lock:
            state["calls"] += 1
        assert not state["forbid"], "the server was contacted"
        return ["angry" if float(np.sqrt(np.mean(audio**2))) > 0.08 else "sad"] * n

    srv, _, url = serve(answer)
    yield url, state
    srv.shutdown()
    srv.server_close()


def annotate(url, cache, out, *extra):
    return subprocess.run(
        [sys.executable, "-m", "edgeser.cli", "annotate", "--target", str(demo_manifest()), "--lalm-url", url,
         "--lalm-model", "m", "--k-lalm", "2", "--cache", str(cache), "-o", str(out), *map(str, extra)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_max_calls_stops_cleanly_and_a_rerun_asks_only_the_rest(tmp_path, server):
    url, state = server
    cache = tmp_path / "answers.sqlite"
    state["forbid"] = True
    r = annotate(url, cache, tmp_path / "v.csv", "--dry-run")
    assert r.returncode == 0 and state["calls"] == 0, r.stderr
    assert f"{N_CLIPS} clips x 2 answers = {2 * N_CLIPS}; 0 cached; the LALM would get {N_CLIPS} HTTP calls" in r.stdout
    state["forbid"] = False
    r = annotate(url, cache, tmp_path / "v.csv", "--max-calls", 3, "--concurrency", 2)
    assert r.returncode == 3, r.stderr
    assert state["calls"] == 3  # never more than the limit, even with two requests in flight
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: stopped at --max-calls 3:") and "run the same command again" in last
    assert "Traceback" not in r.stderr
    state["forbid"] = True
    r = annotate(url, cache, tmp_path / "v.csv", "--dry-run")
    assert f"6 cached; the LALM would get {N_CLIPS - 3} HTTP calls" in r.stdout, r.stdout
    state["forbid"] = False
    r = annotate(url, cache, tmp_path / "v.csv")
    assert r.returncode == 0, r.stderr
    assert state["calls"] == N_CLIPS  # 3 + the 5 missing
    assert (tmp_path / "v.csv").read_text().count("\n") == N_CLIPS + 1


def test_dry_run_of_adapt_with_a_budget(tmp_path, server):
    url, state = server
    state["forbid"] = True
    r = subprocess.run(
        [sys.executable, "-m", "edgeser.cli", "adapt", "--target", str(demo_manifest()), "--lalm-url", url,
         "--lalm-model", "m", "--k-lalm", "3", "--out", str(tmp_path / "s.pt"), "--lalm-budget", "25%", "--dry-run"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert f"the LALM would get {N_CLIPS} HTTP calls" in r.stdout and "only 2 clips are asked" in r.stdout
    assert not (tmp_path / "s.pt").exists() and state["calls"] == 0


def test_two_processes_share_one_cache(tmp_path, server):
    """Two annotate processes on the same clips and cache file, at once: both finish, and the cache then
    holds every answer (a third run needs no call)."""
    url, state = server
    cache = tmp_path / "shared.sqlite"
    args = [sys.executable, "-m", "edgeser.cli", "annotate", "--target", str(demo_manifest()), "--lalm-url", url,
            "--lalm-model", "m", "--k-lalm", "4", "--cache", str(cache), "--concurrency", "3"]  # fmt: skip
    procs = [
        subprocess.Popen([*args, "-o", str(tmp_path / f"v{i}.csv")], stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0 and "Traceback" not in err, err
    assert (tmp_path / "v0.csv").read_text() == (tmp_path / "v1.csv").read_text()
    state["forbid"] = True
    r = annotate(url, cache, tmp_path / "v2.csv", "--dry-run")
    assert f"= {2 * N_CLIPS}; {2 * N_CLIPS} cached; the LALM would get 0 HTTP calls" in r.stdout, r.stdout
    assert N_CLIPS <= state["calls"] <= 2 * N_CLIPS  # each clip asked once per process at most (n=4 per call)

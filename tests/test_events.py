"""on_event / on_change callbacks: hysteresis on hand-made distributions, then a real stream."""

import numpy as np
import pytest

from edgeser.audio import load_audio
from edgeser.demo import demo_clips
from edgeser.runtime import Recognizer
from edgeser.runtime.distribution import Distribution
from edgeser.runtime.events import EmotionCallbacks, TopTracker

LABELS = ["angry", "happy", "neutral", "sad"]


def d(*p):
    return Distribution(LABELS, np.array(p, np.float32))


def run(tracker, dists):
    return [tracker.update(x) for x in dists]


def test_first_top_needs_persist_then_is_reported():
    t = TopTracker(margin=0.1, persist=2)
    out = run(t, [d(0.7, 0.1, 0.1, 0.1), d(0.6, 0.2, 0.1, 0.1)])
    assert out == [None, (None, "angry")] and t.top == "angry"


def test_small_lead_never_switches():
    t = TopTracker(margin=0.1, persist=2)
    run(t, [d(0.7, 0.1, 0.1, 0.1)] * 2)
    # sad on top but only 0.05 ahead of angry, many times: no flicker
    assert run(t, [d(0.40, 0.05, 0.10, 0.45)] * 10) == [None] * 10
    assert t.top == "angry"


def test_lead_must_persist_consecutively():
    t = TopTracker(margin=0.1, persist=3)
    run(t, [d(0.7, 0.1, 0.1, 0.1)] * 3)
    sad = d(0.2, 0.1, 0.1, 0.6)
    # two sad, angry back on top (run broken), then three sad: switch on the third
    out = run(t, [sad, sad, d(0.5, 0.1, 0.1, 0.3), sad, sad, sad])
    assert out == [None, None, None, None, None, ("angry", "sad")]


def test_a_different_challenger_restarts_the_run():
    t = TopTracker(margin=0.1, persist=2)
    run(t, [d(0.7, 0.1, 0.1, 0.1)] * 2)
    out = run(t, [d(0.1, 0.1, 0.1, 0.7), d(0.1, 0.7, 0.1, 0.1), d(0.1, 0.7, 0.1, 0.1)])
    assert out == [None, None, ("angry", "happy")]


def test_silence_is_ignored_and_does_not_break_a_run():
    t = TopTracker(margin=0.1, persist=2)
    run(t, [d(0.7, 0.1, 0.1, 0.1)] * 2)
    assert run(t, [d(0.1, 0.1, 0.1, 0.7), None, None, d(0.1, 0.1, 0.1, 0.7)]) == [None, None, None, ("angry", "sad")]


def test_margin_measured_against_the_current_top_not_the_runner_up():
    t = TopTracker(margin=0.2, persist=1)
    run(t, [d(0.7, 0.1, 0.1, 0.1)])
    # neutral leads angry by 0.25 (>= 0.2) though it leads the runner-up sad by only 0.05
    assert t.update(d(0.15, 0.0, 0.45, 0.40)) == ("angry", "neutral")


def test_no_hysteresis_reports_every_argmax_change():
    t = TopTracker(margin=0.0, persist=1)
    seq = [d(0.3, 0.2, 0.25, 0.25), d(0.2, 0.3, 0.25, 0.25), d(0.3, 0.2, 0.25, 0.25)]
    assert run(t, seq) == [(None, "angry"), ("angry", "happy"), ("happy", "angry")]


def test_reset_and_validation():
    t = TopTracker(margin=0.1, persist=1)
    t.update(d(0.7, 0.1, 0.1, 0.1))
    t.reset()
    assert t.top is None
    for bad in [dict(margin=-0.1), dict(margin=1.0), dict(persist=0), dict(persist=1.5)]:
        with pytest.raises(ValueError):
            TopTracker(**bad)


@pytest.fixture(scope="module")
def rec():
    return Recognizer.load()


def test_callbacks_on_a_real_stream(rec):
    angry, sad = (next(c for c in demo_clips() if c.name == n) for n in ("08a02Wc.flac", "03b03Tc.flac"))
    x = np.concatenate([load_audio(angry, rec.sample_rate), load_audio(sad, rec.sample_rate)])
    events, changes = [], []
    cb = EmotionCallbacks(
        rec.stream(rec.sample_rate, hop_s=0.1),
        on_event=events.append,
        on_change=lambda old, new, ev: changes.append((old, new, ev)),
        margin=0.05,
        persist=2,
    )
    returned = []
    for i in range(0, len(x), 1600):
        returned += cb.push(x[i : i + 1600])
    returned += cb.flush()
    assert events == returned and len(events) > 10
    # the same events straight from a fresh stream
    ref = list(rec.stream(rec.sample_rate, hop_s=0.1).events([x[i : i + 1600] for i in range(0, len(x), 1600)]))
    assert [e.to_dict() for e in events] == [e.to_dict() for e in ref]
    # on_change is what a TopTracker says on the smoothed distributions, nothing more
    t = TopTracker(margin=0.05, persist=2)
    expected = [(i, c) for i, c in enumerate(t.update(e.distribution) for e in events) if c]
    assert [(events.index(ev), (old, new)) for old, new, ev in changes] == expected
    assert changes and changes[0][0] is None and cb.top == changes[-1][1]
    cb.reset()
    assert cb.top is None

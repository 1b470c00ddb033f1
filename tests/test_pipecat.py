"""The pipecat integration in real pipecat pipelines (no mocks of pipecat), on the bundled clips."""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pipecat", reason="needs the pipecat extra: pip install 'edgeser[pipecat]' (Python >= 3.11)")

from pipecat.frames.frames import ErrorFrame, InputAudioRawFrame, TextFrame, TranscriptionFrame, UserAudioRawFrame
from pipecat.tests.utils import run_test

from edgeser.audio import load_audio
from edgeser.demo import DEMO_DIR
from edgeser.integrations.pipecat import METADATA_KEY, EmotionFrame, EmotionProcessor
from edgeser.runtime import EmotionStream, Recognizer
from edgeser.runtime.pcm import PCMDecoder, PCMFormat

REPO = Path(__file__).resolve().parents[1]

# clips the bundled model streams right (checked: the last distribution's top is the acted emotion)
ANGRY, SAD = DEMO_DIR / "03a02Wc.flac", DEMO_DIR / "08b10Tc.flac"


@pytest.fixture(scope="module")
def rec():
    return Recognizer.load()


def pcm_frames(path, rate: int, channels: int, frame_ms: int = 20, cls=InputAudioRawFrame, **kw):
    x = load_audio(path, rate)
    x = np.stack([x] + [0.5 * x] * (channels - 1), axis=1)
    pcm = np.clip(np.round(x * 32768), -32768, 32767).astype("<i2")
    step = rate * frame_ms // 1000
    return [
        cls(audio=pcm[i : i + step].tobytes(), sample_rate=rate, num_channels=channels, **kw)
        for i in range(0, len(pcm), step)
    ]


def run(processor, frames):
    # a hang (e.g. a transcription waiting for analysis that never comes) fails instead of blocking the suite
    down, up = asyncio.run(asyncio.wait_for(run_test(processor, frames_to_send=frames, start_timeout=60), 120))
    return list(down), list(up)


@pytest.mark.parametrize(
    ("path", "label", "rate", "channels"), [(ANGRY, "angry", 16000, 1), (SAD, "sad", 16000, 1), (SAD, "sad", 48000, 2)]
)
def test_frames_pass_unchanged_and_emotions_follow(rec, path, label, rate, channels):
    frames = pcm_frames(path, rate, channels)
    frames.insert(len(frames) // 2, TextFrame(text="a frame of another kind"))
    originals = [f.audio for f in frames if isinstance(f, InputAudioRawFrame)]
    proc = EmotionProcessor(rec)
    seen, changes = [], []

    @proc.event_handler("on_emotion")
    async def _on_emotion(processor, frame):
        seen.append(frame)

    @proc.event_handler("on_emotion_change")
    async def _on_change(processor, old, new, frame):
        changes.append((old, new, frame))

    down, up = run(proc, frames)
    assert up == []
    # every frame we sent, once, the same objects, audio untouched and in order (pipecat itself lets
    # system frames such as audio overtake data frames such as text, so only the audio order is checked)
    passed = [f for f in down if not isinstance(f, EmotionFrame)]
    assert sorted(map(id, passed)) == sorted(map(id, frames))
    audio = [f for f in passed if isinstance(f, InputAudioRawFrame)]
    assert all(a is b for a, b in zip(audio, [f for f in frames if isinstance(f, InputAudioRawFrame)]))
    assert [f.audio for f in audio] == originals
    # the emotion events are the synchronous stream's for the same audio, flush included
    emotions = [f for f in down if isinstance(f, EmotionFrame)]
    dec = PCMDecoder(PCMFormat(rate, channels))
    ref = list(rec.stream(rate).events([dec.decode(f.audio) for f in frames if isinstance(f, InputAudioRawFrame)]))
    assert [e.event.to_dict() for e in emotions] == [e.to_dict() for e in ref]
    assert seen == emotions and [c[2] for c in changes] == [e for e in emotions if e.changed]
    # the bundled model gets these clips right
    assert emotions[-1].distribution.top == label
    assert proc.top == label and emotions[-1].top == label
    assert changes[0][0] is None and changes[-1][1] == label


def test_transcription_annotated_after_the_audio_before_it(rec):
    frames = pcm_frames(SAD, 16000, 1, cls=UserAudioRawFrame, user_id="caller-7")
    text = TranscriptionFrame(text="Ich gehe nach Hause.", user_id="caller-7", timestamp="t0")
    plain = TextFrame(text="not a transcription")
    proc = EmotionProcessor(rec, annotate_transcriptions=True)
    down, _ = run(proc, [*frames, text, plain])
    at = next(i for i, f in enumerate(down) if f is text)
    before = [f for f in down[:at] if isinstance(f, EmotionFrame)]
    # the events of all the audio sent before the transcription went first (all but the final flush)
    st, dec = rec.stream(16000), PCMDecoder(PCMFormat(16000, 1))
    fed = [ev for f in frames for ev in st.feed(dec.decode(f.audio))]
    assert [e.event.to_dict() for e in before] == [e.to_dict() for e in fed]
    note = text.metadata[METADATA_KEY]
    speech = [e for e in before if e.distribution is not None]
    mean = np.mean([e.distribution.probs.astype(np.float64) for e in speech], axis=0)
    assert note["events"] == len(speech) > 3 and note["turn_top"] == "sad"
    assert list(note["distribution"].values()) == pytest.approx(mean.tolist(), abs=2e-6)
    assert METADATA_KEY not in plain.metadata
    assert {f.user_id for f in down if isinstance(f, EmotionFrame)} == {"caller-7"}


def test_not_annotating_by_default(rec):
    text = TranscriptionFrame(text="Hallo.", user_id="u", timestamp="t0")
    down, _ = run(EmotionProcessor(rec), [*pcm_frames(ANGRY, 16000, 1), text])
    assert text in down and text.metadata == {}


class FailingStream(EmotionStream):
    """A real stream that breaks after a few chunks (fault injection: the analysis must not stop the audio)."""

    calls = 0

    def feed(self, chunk):
        FailingStream.calls += 1
        if FailingStream.calls > 10:
            raise RuntimeError("inference broke")
        return super().feed(chunk)


class FailingRecognizer(Recognizer):
    def stream(self, sample_rate=16000, **options):
        return FailingStream(self.model, sample_rate=sample_rate, **options)


def test_a_failing_analysis_reports_an_error_and_the_audio_keeps_flowing(rec):
    frames = pcm_frames(SAD, 16000, 1)
    text = TranscriptionFrame(text="Ich gehe nach Hause.", user_id="u", timestamp="t0")
    proc = EmotionProcessor(FailingRecognizer(rec.model), annotate_transcriptions=True)
    down, up = run(proc, [*frames, text])
    assert [f for f in down if isinstance(f, InputAudioRawFrame)] == frames and text in down
    errors = [f for f in up if isinstance(f, ErrorFrame)]
    assert len(errors) == 1 and "inference broke" in errors[0].error and not errors[0].fatal
    assert isinstance(proc.failed, RuntimeError) and FailingStream.calls == 11


def test_bad_stream_options_fail_at_construction(rec):
    with pytest.raises(ValueError, match="smoothing"):
        EmotionProcessor(rec, stream_options={"smoothing": 1.5})


def _example():
    spec = importlib.util.spec_from_file_location("pipecat_voice_agent", REPO / "examples" / "pipecat_voice_agent.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_example_agent_pipeline():
    ex = _example()
    lines = []
    console = asyncio.run(ex.run_agent([ANGRY, SAD], realtime=False, write=lines.append))
    assert console.audio_frames == len(ex.clip_frames([ANGRY, SAD]))
    assert [e.top for e in console.emotions if e.changed][-1] == "sad" and "angry" in {e.top for e in console.emotions}
    assert any("sounds angry" in n for n in console.notes) and "sounds sad" in console.notes[-1]
    assert len(lines) == len(console.emotions) + len(console.notes)


def test_example_runs_as_a_script():
    r = subprocess.run(
        [sys.executable, str(REPO / "examples" / "pipecat_voice_agent.py"), "--fast", str(ANGRY)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "notes for the LLM" in r.stdout and "sounds angry" in r.stdout and "Traceback" not in r.stderr

"""A pipecat voice agent that hears how the user sounds, fully offline.

    pip install 'edgeser[pipecat]'
    python examples/pipecat_voice_agent.py            # the bundled demo clips play the user, at speaking pace
    python examples/pipecat_voice_agent.py --fast     # as fast as the CPU goes
    python examples/pipecat_voice_agent.py --mic      # live microphone (needs pip install 'pipecat-ai[local]')

The pipeline::

    user audio -> EmotionProcessor -> EmpathyNotes -> Console
                  (edgeser)           (agent logic)   (stands in for the LLM + TTS)

``EmotionProcessor`` passes the user's audio on unchanged and adds an ``EmotionFrame`` per
distribution. ``EmpathyNotes`` turns each change of the user's top emotion into a system message
for the LLM context (``LLMMessagesAppendFrame``), the usual way to steer a pipecat agent. In a real
agent the pipeline is::

    [transport.input(), stt, EmotionProcessor(), EmpathyNotes(), user_aggregator, llm, tts, transport.output()]

and the notes reach the LLM through the context aggregator. Here no service is needed: audio comes
from files (as 20 ms ``InputAudioRawFrame`` s, what transports deliver) or pipecat's local audio
transport, and a console prints what the LLM would receive.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from loguru import logger
from pipecat.frames.frames import EndFrame, Frame, InputAudioRawFrame, LLMMessagesAppendFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

from edgeser.audio import load_audio
from edgeser.demo import demo_clips
from edgeser.integrations.pipecat import EmotionFrame, EmotionProcessor

SAMPLE_RATE = 16000
FRAME_MS = 20


class EmpathyNotes(FrameProcessor):
    """Agent logic: when the user's top emotion changes, tell the LLM (a system message in its context)."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, EmotionFrame) and frame.changed:
            note = (
                f"The user's voice now sounds {frame.top} (confidence {frame.distribution[frame.top]:.2f}). "
                "Take it into account in your reply; do not mention this note."
            )
            await self.push_frame(LLMMessagesAppendFrame(messages=[{"role": "system", "content": note}], run_llm=False))


class Console(FrameProcessor):
    """The end of the offline pipeline: prints emotion events and the notes the LLM would get."""

    def __init__(self, write: Callable[[str], None] = print, **kwargs):
        super().__init__(**kwargs)
        self.write = write
        self.notes: list[str] = []
        self.emotions: list[EmotionFrame] = []
        self.audio_frames = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            self.audio_frames += 1
        elif isinstance(frame, EmotionFrame):
            self.emotions.append(frame)
            d = frame.distribution
            body = " ".join(f"{k} {v:.2f}" for k, v in d.items()) if d else "(no speech)"
            self.write(f"{frame.event.time_s:6.2f}s  {frame.top or '-':<8} {body}")
        elif isinstance(frame, LLMMessagesAppendFrame):
            for m in frame.messages:
                self.notes.append(m["content"])
                self.write(f"        -> LLM context: {m['content']}")
        await self.push_frame(frame, direction)


def clip_frames(paths: Iterable[Path], pause_s: float = 0.5) -> list[InputAudioRawFrame]:
    """The clips as 16 kHz mono 16-bit PCM frames of 20 ms, a pause after each (a user talking)."""
    step = SAMPLE_RATE * FRAME_MS // 1000
    frames = []
    for p in paths:
        x = np.concatenate([load_audio(p, SAMPLE_RATE), np.zeros(int(pause_s * SAMPLE_RATE), np.float32)])
        pcm = np.clip(np.round(x * 32768), -32768, 32767).astype("<i2")
        frames += [
            InputAudioRawFrame(audio=pcm[i : i + step].tobytes(), sample_rate=SAMPLE_RATE, num_channels=1)
            for i in range(0, len(pcm), step)
        ]
    return frames


def build_pipeline(
    input_processor: FrameProcessor | None = None, write: Callable[[str], None] = print, **emotion_options
) -> tuple[Pipeline, EmotionProcessor, Console]:
    emotion = EmotionProcessor(**emotion_options)
    console = Console(write)
    head = [input_processor] if input_processor is not None else []
    return Pipeline([*head, emotion, EmpathyNotes(), console]), emotion, console


async def run_agent(
    paths: Iterable[Path], realtime: bool = True, write: Callable[[str], None] = print, **emotion_options
) -> Console:
    """Play ``paths`` as the user's audio through the agent pipeline; return the console (what it saw)."""
    frames = clip_frames(paths)
    pipeline, _, console = build_pipeline(write=write, **emotion_options)
    worker = PipelineWorker(
        pipeline, params=PipelineParams(audio_in_sample_rate=SAMPLE_RATE), cancel_on_idle_timeout=False
    )
    started = asyncio.Event()

    @worker.event_handler("on_pipeline_started")
    async def _started(worker, frame):
        started.set()

    async def user_speaks():
        await started.wait()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for i, f in enumerate(frames):
            if realtime:  # pace the frames like a live transport
                await asyncio.sleep(max(0.0, t0 + i * FRAME_MS / 1000 - loop.time()))
            await worker.queue_frame(f)
        await worker.queue_frame(EndFrame())

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await asyncio.gather(runner.run(), user_speaks())
    return console


async def run_microphone() -> None:  # not exercised by the test suite: needs a sound card and PyAudio
    from pipecat.transports.local.audio import LocalAudioTransport, LocalAudioTransportParams

    transport = LocalAudioTransport(LocalAudioTransportParams(audio_in_enabled=True, audio_in_sample_rate=SAMPLE_RATE))
    pipeline, _, _ = build_pipeline(transport.input())
    worker = PipelineWorker(
        pipeline, params=PipelineParams(audio_in_sample_rate=SAMPLE_RATE), cancel_on_idle_timeout=False
    )
    runner = WorkerRunner()  # Ctrl-C stops
    await runner.add_workers(worker)
    await runner.run()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clips", nargs="*", type=Path, help="audio files playing the user (default: the demo clips)")
    ap.add_argument("--fast", action="store_true", help="do not pace the audio like a live transport")
    ap.add_argument("--mic", action="store_true", help="live microphone via pipecat's LocalAudioTransport")
    args = ap.parse_args(argv)
    logger.remove()  # pipecat logs at DEBUG by default: keep the console for the agent
    logger.add(sys.stderr, level="WARNING")
    if args.mic:
        asyncio.run(run_microphone())
        return 0
    console = asyncio.run(run_agent(args.clips or demo_clips(), realtime=not args.fast))
    print(
        f"{console.audio_frames} audio frames passed through, {len(console.emotions)} emotion events, "
        f"{len(console.notes)} notes for the LLM"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

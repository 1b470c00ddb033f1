"""Raw PCM bytes as voice pipelines deliver them: 16-bit signed little-endian, interleaved channels.

Transports (WebRTC, telephony, pipecat, websockets) hand over audio as ``bytes`` chunks whose
boundaries need not fall on a sample, let alone on a frame (one sample of every channel).
:class:`PCMDecoder` keeps the incomplete tail of one chunk and prepends it to the next, so any
split of a byte stream decodes to the same samples as the whole stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import AudioError

#: what :meth:`PCMDecoder.decode` (and ``EmotionStream.feed``) treat as raw PCM
PCM_TYPES = (bytes, bytearray, memoryview)

_SCALE = 1.0 / 32768.0


@dataclass(frozen=True)
class PCMFormat:
    """The format of a PCM byte stream, declared once: rate in Hz, interleaved channels, bytes per sample.

    Only 16-bit samples (``sample_width=2``, signed little-endian) are supported: what telephony,
    WebRTC and pipecat deliver."""

    sample_rate: int
    channels: int = 1
    sample_width: int = 2

    def __post_init__(self) -> None:
        if not isinstance(self.sample_rate, (int, np.integer)) or self.sample_rate <= 0:
            raise AudioError(f"invalid PCM sample rate {self.sample_rate!r} (a positive integer in Hz)")
        if not isinstance(self.channels, (int, np.integer)) or self.channels < 1:
            raise AudioError(f"invalid PCM channel count {self.channels!r} (1 or more)")
        if self.sample_width != 2:
            raise AudioError(f"unsupported PCM sample width {self.sample_width!r} bytes (only 16-bit PCM, width 2)")

    @property
    def frame_bytes(self) -> int:
        """Bytes per frame (one sample of every channel)."""
        return self.sample_width * self.channels


def decode_pcm16(data: bytes | bytearray | memoryview, channels: int = 1) -> np.ndarray:
    """Whole frames of 16-bit little-endian PCM -> ``(T, channels)`` float32 in [-1, 1).

    ``-32768 -> -1.0``, ``32767 -> 32767/32768`` (the usual ``/ 32768`` scaling, exact in float32).
    ``data`` must hold whole frames; use :class:`PCMDecoder` for chunks cut anywhere."""
    if not isinstance(data, PCM_TYPES):
        raise AudioError(f"PCM audio must be bytes, bytearray or memoryview, got {type(data).__name__}")
    if channels < 1:
        raise AudioError(f"invalid PCM channel count {channels!r} (1 or more)")
    buf = memoryview(data).cast("B")
    if len(buf) % (2 * channels):
        raise AudioError(
            f"{len(buf)} bytes of PCM are not whole frames of {channels} channel(s) x 16 bit "
            f"({2 * channels} bytes each)"
        )
    x = np.frombuffer(buf, dtype="<i2").astype(np.float32) * np.float32(_SCALE)
    return x.reshape(-1, channels)


class PCMDecoder:
    """Stateful :func:`decode_pcm16` for a byte stream cut anywhere.

    >>> dec = PCMDecoder(PCMFormat(48000, channels=2))
    >>> dec.decode(b"\\x00\\x80\\xff").shape    # 3 bytes: not yet a whole stereo frame
    (0, 2)
    >>> dec.decode(b"\\x7f").tolist()             # the kept tail is decoded with the next chunk
    [[-1.0, 0.999969482421875]]

    ``pending`` bytes (less than one frame) are kept between calls; :meth:`reset` drops them."""

    def __init__(self, fmt: PCMFormat):
        if not isinstance(fmt, PCMFormat):
            raise TypeError(f"PCMDecoder needs a PCMFormat, got {type(fmt).__name__}")
        self.format = fmt
        self._tail = b""

    @property
    def channels(self) -> int:
        return self.format.channels

    @property
    def pending(self) -> int:
        """Bytes kept from the last chunk (an incomplete frame), decoded with the next one."""
        return len(self._tail)

    def decode(self, data: bytes | bytearray | memoryview) -> np.ndarray:
        """Decode the whole frames of ``tail + data`` -> ``(T, channels)`` float32; keep the rest."""
        if not isinstance(data, PCM_TYPES):
            raise AudioError(f"PCM audio must be bytes, bytearray or memoryview, got {type(data).__name__}")
        raw = memoryview(data).cast("B")
        if self._tail:
            raw = memoryview(self._tail + raw.tobytes())
        whole = len(raw) - len(raw) % self.format.frame_bytes
        self._tail = raw[whole:].tobytes()
        return decode_pcm16(raw[:whole], self.channels)

    def to_audio(self, chunk):
        """``bytes``-like chunks are decoded (:meth:`decode`); arrays are returned unchanged."""
        return self.decode(chunk) if isinstance(chunk, PCM_TYPES) else chunk

    def reset(self) -> None:
        """Drop a kept incomplete frame (e.g. when the stream starts over)."""
        self._tail = b""

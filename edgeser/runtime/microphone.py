"""Live microphone input through sounddevice (PortAudio), imported lazily.

``import edgeser.runtime.microphone`` never touches PortAudio: only listing devices or capturing
does, so that file-only users need neither the sounddevice wheel's PortAudio nor Debian's
``libportaudio2``. Every problem comes out as a one-line :class:`~edgeser.errors.DeviceError`.

Capture yields mono float32 chunks at the device's own rate (``(chunk, sample_rate)``); resampling
to the model's rate is the caller's job (``edgeser.audio.resample`` / a soxr stream).

    with Microphone("pulse", block_s=0.1) as mic:
        for chunk, sr in mic:
            ...
        print(mic.overflows)  # audio lost: dropped_blocks + input_overflows

Linux/PulseAudio: PortAudio sees PulseAudio through ALSA's pulse plugin (Debian:
``libasound2-plugins``) as the ALSA devices ``pulse`` and ``default``; the plugin finds the server
through ``PULSE_SERVER`` or ``XDG_RUNTIME_DIR``. PortAudio lists devices once, when it is
initialised: after changing those variables (or plugging a device) call :func:`refresh_devices`.
"""

from __future__ import annotations

import importlib
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from ..errors import DeviceError

PORTAUDIO_MISSING = (
    "PortAudio library not found: install libportaudio2 (Debian/Ubuntu: apt-get install libportaudio2) "
    "or portaudio (macOS: brew install portaudio)"
)


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__


def import_sounddevice() -> ModuleType:
    """``import sounddevice``, turning a missing PortAudio (``OSError``) or a missing package into a
    :class:`DeviceError` with the fix in its message."""
    try:
        return importlib.import_module("sounddevice")
    except ModuleNotFoundError as e:
        if e.name == "sounddevice":
            raise DeviceError("the sounddevice package is not installed: pip install sounddevice") from None
        raise DeviceError(f"{PORTAUDIO_MISSING} ({_first_line(e)})") from None
    except (OSError, ImportError) as e:
        raise DeviceError(f"{PORTAUDIO_MISSING} ({_first_line(e)})") from None


def refresh_devices() -> None:
    """Make PortAudio enumerate devices again (it does so only when initialised). Call it after
    changing ``PULSE_SERVER``/``XDG_RUNTIME_DIR`` or plugging a device; no stream may be open."""
    sd = import_sounddevice()
    try:
        sd._terminate()
        sd._initialize()
    except Exception as e:  # PortAudioError
        raise DeviceError(f"cannot re-initialise PortAudio: {_first_line(e)}") from None


@dataclass(frozen=True)
class InputDevice:
    """An audio input as PortAudio sees it."""

    index: int
    name: str
    channels: int  #: maximum input channels
    default_samplerate: float
    is_default: bool
    hostapi: str = ""

    def __str__(self) -> str:
        return f"{self.index}: {self.name}"


def _default_input_index(sd: ModuleType) -> int | None:
    try:
        return int(sd.query_devices(kind="input")["index"])
    except Exception:  # no default input device
        return None


def list_devices() -> list[InputDevice]:
    """Every device with at least one input channel, in PortAudio's order."""
    sd = import_sounddevice()
    try:
        devices = sd.query_devices()
        hostapis = sd.query_hostapis()
    except Exception as e:
        raise DeviceError(f"cannot list audio devices: {_first_line(e)}") from None
    default = _default_input_index(sd)
    out = []
    for i, d in enumerate(devices):
        if int(d["max_input_channels"]) <= 0:
            continue
        index = int(d.get("index", i))
        try:
            api = str(hostapis[int(d["hostapi"])]["name"])
        except (IndexError, KeyError, TypeError, ValueError):
            api = ""
        out.append(
            InputDevice(
                index=index,
                name=str(d["name"]),
                channels=int(d["max_input_channels"]),
                default_samplerate=float(d["default_samplerate"]),
                is_default=index == default,
                hostapi=api,
            )
        )
    return out


def _describe(devices: list[InputDevice]) -> str:
    if not devices:
        return "no input devices found (on Linux: is PulseAudio/PipeWire running and libasound2-plugins installed?)"
    return "input devices: " + ", ".join(f"{d.index}: {d.name!r}" for d in devices)


def resolve_device(spec: int | str | None = None) -> InputDevice:
    """The input device for ``spec``: ``None`` (the default input), an index (int or digit string),
    or a case-insensitive substring of its name (an exact name wins; several different names
    matching is an error, the same name under several host APIs picks the first)."""
    devices = list_devices()
    if spec is None:
        for d in devices:
            if d.is_default:
                return d
        raise DeviceError(f"no default input device; {_describe(devices)}")
    if isinstance(spec, bool) or not isinstance(spec, (int, str, np.integer)):
        raise DeviceError(f"device must be an index or a name, got {spec!r}")
    if isinstance(spec, str) and spec.strip().isdigit():
        spec = int(spec.strip())
    if isinstance(spec, (int, np.integer)):
        for d in devices:
            if d.index == int(spec):
                return d
        raise DeviceError(f"no input device with index {int(spec)}; {_describe(devices)}")
    want = spec.strip().lower()
    if not want:
        raise DeviceError(f"empty device name; {_describe(devices)}")
    exact = [d for d in devices if d.name.lower() == want]
    if exact:
        return exact[0]
    found = [d for d in devices if want in d.name.lower()]
    if not found:
        raise DeviceError(f"no input device matching {spec!r}; {_describe(devices)}")
    if len({d.name for d in found}) > 1:
        raise DeviceError(f"device name {spec!r} is ambiguous, it matches {_describe(found)[len('input devices: ') :]}")
    return found[0]


class Microphone:
    """A live input stream: iterate to get ``(mono float32 chunk, sample_rate)`` in real time.

    The PortAudio callback copies each block into a bounded queue (``queue_s`` seconds); when the
    consumer falls behind, the oldest block is dropped (counted in :attr:`dropped_blocks`) so that
    latency stays bounded. Input overflows reported by PortAudio (audio lost in the driver) are
    counted in :attr:`input_overflows`; :attr:`overflows` is the sum: blocks' worth of audio lost.
    The stream opens on ``__enter__`` / the first ``next()`` and closes on :meth:`close`, on leaving
    the ``with`` block, or when iteration is abandoned and the object is collected.
    Iteration raises :class:`DeviceError` when no audio arrives for ``timeout_s`` seconds or the
    stream stops by itself (device unplugged).
    """

    def __init__(
        self,
        device: int | str | None = None,
        block_s: float = 0.1,
        samplerate: float | None = None,
        channels: int = 1,
        queue_s: float = 5.0,
        timeout_s: float = 5.0,
    ) -> None:
        if block_s <= 0:
            raise DeviceError(f"block_s must be positive, got {block_s}")
        if channels < 1:
            raise DeviceError(f"channels must be at least 1, got {channels}")
        self.device = resolve_device(device)
        if channels > self.device.channels:
            raise DeviceError(
                f"device {self.device.name!r} has {self.device.channels} input channel(s), {channels} requested"
            )
        self.sample_rate = int(round(samplerate or self.device.default_samplerate))
        if self.sample_rate <= 0:
            raise DeviceError(f"invalid sample rate {samplerate!r} for device {self.device.name!r}")
        self.channels = int(channels)
        self.block_s = float(block_s)
        self.blocksize = max(1, int(round(block_s * self.sample_rate)))
        self.timeout_s = max(float(timeout_s), 2 * self.block_s)
        self._queue: queue.Queue = queue.Queue(maxsize=max(2, int(np.ceil(queue_s / block_s))))
        self._lock = threading.Lock()
        self._stream = None
        self._closed = False
        self.input_overflows = 0  #: PortAudio input overflows (audio lost before it reached us)
        self.dropped_blocks = 0  #: blocks dropped because the consumer fell behind
        self.blocks = 0  #: blocks received from PortAudio

    # -- stream ------------------------------------------------------------------------------
    def _callback(self, indata, frames, time_info, status) -> None:  # PortAudio thread
        if status and status.input_overflow:
            self.input_overflows += 1
        self.blocks += 1
        block = indata.copy()
        with self._lock:
            while True:
                try:
                    self._queue.put_nowait(block)
                    return
                except queue.Full:
                    try:
                        self._queue.get_nowait()
                        self.dropped_blocks += 1
                    except queue.Empty:
                        pass

    def _finished(self) -> None:  # PortAudio thread, after stop/abort/close or a failure
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            with self._lock:
                try:
                    self._queue.get_nowait()
                    self.dropped_blocks += 1
                except queue.Empty:
                    pass
                self._queue.put_nowait(None)

    def open(self) -> Microphone:
        """Start the stream (idempotent)."""
        if self._closed:
            raise DeviceError("microphone stream already closed")
        if self._stream is not None:
            return self
        sd = import_sounddevice()
        stream = None
        try:
            stream = sd.InputStream(
                device=self.device.index,
                channels=self.channels,
                samplerate=self.sample_rate,
                blocksize=self.blocksize,
                dtype="float32",
                callback=self._callback,
                finished_callback=self._finished,
            )
            stream.start()
        except Exception as e:  # PortAudioError, ValueError
            if stream is not None:
                try:
                    stream.close(ignore_errors=True)
                except Exception:
                    pass
            raise DeviceError(
                f"cannot open input device {self.device.index} {self.device.name!r} at {self.sample_rate} Hz, "
                f"{self.channels} channel(s): {_first_line(e)}"
            ) from None
        self._stream = stream
        self.sample_rate = int(round(stream.samplerate))
        return self

    def close(self) -> None:
        """Stop and close the stream (idempotent)."""
        self._closed = True
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.stop()
            except Exception:
                pass
            finally:
                try:
                    stream.close()
                except Exception:
                    pass

    @property
    def overflows(self) -> int:
        """Audio lost for any reason: ``dropped_blocks + input_overflows`` (0 in a healthy stream)."""
        return self.dropped_blocks + self.input_overflows

    @property
    def samplerate(self) -> int:
        """Alias of :attr:`sample_rate` (sounddevice's spelling)."""
        return self.sample_rate

    @property
    def active(self) -> bool:
        return self._stream is not None and bool(self._stream.active)

    def _get(self) -> np.ndarray | None:
        """Next block as mono float32, ``None`` once closed."""
        if self._stream is None and not self._closed:
            self.open()
        try:
            block = self._queue.get(timeout=self.timeout_s)
        except queue.Empty:
            if self._closed:
                return None
            raise DeviceError(
                f"no audio from input device {self.device.name!r} for {self.timeout_s:g} s (stream stalled)"
            ) from None
        if block is None:
            if self._closed:
                return None
            raise DeviceError(f"input stream from device {self.device.name!r} stopped unexpectedly")
        if block.ndim == 2:
            block = block[:, 0] if block.shape[1] == 1 else block.mean(axis=1)
        return np.ascontiguousarray(block, dtype=np.float32)

    def read(self) -> np.ndarray:
        """The next block as mono float32 (waits until one arrives; starts the stream if needed)."""
        block = self._get()
        if block is None:
            raise DeviceError("microphone stream is closed")
        return block

    # -- protocols ---------------------------------------------------------------------------
    def __enter__(self) -> Microphone:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self) -> Microphone:
        return self

    def __next__(self) -> tuple[np.ndarray, int]:
        block = None if self._closed else self._get()
        if block is None:
            raise StopIteration
        return block, self.sample_rate

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("open" if self._stream is not None else "not started")
        return f"Microphone({self.device.name!r}, {self.sample_rate} Hz, {state})"


def capture(
    device: int | str | None = None,
    block_s: float = 0.1,
    samplerate: float | None = None,
    channels: int = 1,
) -> Iterator[tuple[np.ndarray, int]]:
    """Live ``(mono float32 chunk, sample_rate)`` pairs of about ``block_s`` seconds from ``device``
    (see :func:`resolve_device`) at its default rate unless ``samplerate`` is given.

    The device is resolved now (a bad name fails here); the stream starts at the first ``next()``.
    The returned :class:`Microphone` is an iterator with ``close()`` (stops the stream) and the
    counters ``overflows`` = ``dropped_blocks`` (consumer too slow) + ``input_overflows`` (PortAudio)."""
    return Microphone(device, block_s=block_s, samplerate=samplerate, channels=channels)

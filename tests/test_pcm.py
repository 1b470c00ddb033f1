"""Raw PCM bytes: known values, frames cut anywhere, and bad input."""

import numpy as np
import pytest

from edgeser.errors import AudioError
from edgeser.runtime.pcm import PCMDecoder, PCMFormat, decode_pcm16


def test_known_values():
    x = decode_pcm16(b"\x00\x80" + b"\xff\x7f" + b"\x00\x00" + b"\x01\x00" + b"\xff\xff")
    assert x.dtype == np.float32 and x.shape == (5, 1)
    assert x[:, 0].tolist() == [-1.0, 32767 / 32768, 0.0, 1 / 32768, -1 / 32768]


def test_interleaved_channels():
    # frame 0: L=1, R=-1 ; frame 1: L=16384 (0.5), R=-16384 (-0.5)
    data = np.array([1, -1, 16384, -16384], "<i2").tobytes()
    x = decode_pcm16(data, channels=2)
    assert x.shape == (2, 2)
    assert x.tolist() == [[1 / 32768, -1 / 32768], [0.5, -0.5]]


def test_little_endian_whatever_the_host():
    # little-endian on the wire whatever the host: b"\x00\x01" is 256, not 1
    assert decode_pcm16(b"\x00\x01")[0, 0] == 256 / 32768


def test_accepts_bytearray_and_memoryview():
    data = np.arange(-4, 4, dtype="<i2").tobytes()
    ref = decode_pcm16(data)
    assert np.array_equal(decode_pcm16(bytearray(data)), ref)
    assert np.array_equal(decode_pcm16(memoryview(data)), ref)


def test_partial_frames_rejected_by_the_pure_function():
    with pytest.raises(AudioError, match="not whole frames"):
        decode_pcm16(b"\x00\x80\x00", channels=1)
    with pytest.raises(AudioError, match="not whole frames"):
        decode_pcm16(b"\x00\x80", channels=2)


def test_decoder_carries_odd_byte_and_partial_frame():
    dec = PCMDecoder(PCMFormat(16000, channels=2))
    assert dec.decode(b"\x00").shape == (0, 2) and dec.pending == 1  # half a sample
    assert dec.decode(b"\x80\xff").shape == (0, 2) and dec.pending == 3  # a sample and a half
    x = dec.decode(b"\x7f\x00")  # frame complete + 1 byte
    assert x.tolist() == [[-1.0, 32767 / 32768]] and dec.pending == 1
    dec.reset()
    assert dec.pending == 0
    assert dec.decode(b"\x00\x40\x00\xc0").tolist() == [[0.5, -0.5]]


@pytest.mark.parametrize("channels", [1, 2, 3])
def test_any_split_equals_whole(channels):
    rng = np.random.default_rng(channels)
    samples = rng.integers(-32768, 32768, size=(997, channels)).astype("<i2")
    data = samples.tobytes()
    whole = decode_pcm16(data, channels)
    assert np.array_equal(whole, samples.astype(np.float32) / 32768)
    dec = PCMDecoder(PCMFormat(8000, channels))
    cuts = np.sort(rng.integers(0, len(data), size=40))
    parts = [dec.decode(data[a:b]) for a, b in zip([0, *cuts], [*cuts, len(data)])]
    assert dec.pending == 0
    assert np.array_equal(np.concatenate(parts), whole)


def test_format_validation():
    assert PCMFormat(48000, 2).frame_bytes == 4
    for bad in [
        dict(sample_rate=0),
        dict(sample_rate=16000, channels=0),
        dict(sample_rate=16000, sample_width=3),
        dict(sample_rate=16000.5),
    ]:
        with pytest.raises(AudioError):
            PCMFormat(**bad)
    with pytest.raises(AudioError, match="bytes"):
        PCMDecoder(PCMFormat(16000)).decode(np.zeros(4, np.int16))
    with pytest.raises(AudioError, match="bytes"):
        decode_pcm16("abcd")


def test_to_audio_decodes_bytes_and_passes_arrays():
    dec = PCMDecoder(PCMFormat(16000))
    a = np.zeros(3, np.float32)
    assert dec.to_audio(a) is a
    assert dec.to_audio(b"\x00\x80\xff").tolist() == [[-1.0]] and dec.pending == 1

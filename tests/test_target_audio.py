"""Target audio for adaptation and annotation: unreadable files skipped and reported, long files read only
up to max_s (issue 9: one bad or over-long file must not stop a run)."""

import numpy as np
import pytest
import soundfile as sf

from edgeser.adapt.data import load_target_audio, teacher_clips
from edgeser.audio import MAX_IN_MEMORY_S, load_audio
from edgeser.errors import AudioError, ManifestError
from edgeser.manifest import Clip


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("target")
    rng = np.random.default_rng(0)
    sf.write(d / "short.wav", (0.1 * rng.standard_normal(16000)).astype(np.float32), 16000, subtype="FLOAT")
    sf.write(
        d / "long.wav",
        (0.1 * rng.standard_normal(int((MAX_IN_MEMORY_S + 5) * 4000))).astype(np.float32),
        4000,
        subtype="PCM_16",
    )
    (d / "bad.wav").write_bytes(b"not audio")
    return d


def test_load_audio_reads_only_max_s(files):
    with pytest.raises(AudioError, match="too long to decode at once"):
        load_audio(files / "long.wav")
    x = load_audio(files / "long.wav", 16000, max_s=2.5)
    assert len(x) == 40000
    whole = load_audio(files / "short.wav", 16000)
    np.testing.assert_array_equal(load_audio(files / "short.wav", 16000, max_s=30.0), whole)  # shorter: unchanged
    np.testing.assert_array_equal(load_audio(files / "short.wav", 16000, max_s=0.5), whole[:8000])


def test_unreadable_files_are_skipped_and_long_ones_cropped(files):
    clips = [
        Clip(files / "short.wav", key="short.wav"),
        Clip(files / "bad.wav", key="bad.wav"),
        Clip(files / "long.wav", key="long.wav"),
    ]
    t = load_target_audio(clips, 16000, max_s=3.0, progress=False)
    assert [c.key for c in t.clips] == ["short.wav", "long.wav"]
    assert [c.key for c, _ in t.skipped] == ["bad.wav"] and "cannot decode audio" in t.skipped[0][1]
    assert [len(w) for w in t.wavs] == [16000, 48000] and list(t.crops) == [1]
    assert t.skipped_report().startswith("skipped 1 of 3 target files that could not be read: ")
    # a teacher that reads audio gets the crop (same key), one that does not gets the clips as they are
    with teacher_clips(t) as given:
        assert [c.key for c in given] == ["short.wav", "long.wav"] and given[0] == t.clips[0]
        np.testing.assert_array_equal(load_audio(given[1].path, 16000), t.wavs[1])
    with teacher_clips(t, reads_audio=False) as given:
        assert given == t.clips
    with pytest.raises(ManifestError, match="none of the 1 target clips could be read"):
        load_target_audio([clips[1]], 16000, progress=False)

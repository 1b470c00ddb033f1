"""Domain-robustness augmentation of training crops (issue 8, item 3): speed perturbation, a synthetic room,
a telephone channel -- pure functions on known signals, and crops drawn from their seed alone."""

import numpy as np
import pytest

from edgeser.adapt.engine import FitConfig, augmentation_of
from edgeser.adapt.loader import (
    Augmentation,
    augment,
    crop_clip,
    random_crops,
    reverberate,
    room_response,
    speed_perturb,
    telephone,
)

SR = 16000


def tone(hz: float, seconds: float = 1.0) -> np.ndarray:
    return np.sin(2 * np.pi * hz * np.arange(int(seconds * SR)) / SR).astype(np.float32)


def peak_hz(x: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / SR)[spec.argmax()])


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_perturbation_scales_length_and_pitch(factor):
    y = speed_perturb(tone(1000.0), factor, SR)
    assert abs(len(y) - SR / factor) <= 2
    assert abs(peak_hz(y) - 1000.0 * factor) < 5.0


def test_room_response_decays_by_its_rt60():
    h = room_response(0.4, SR, np.random.default_rng(0))
    assert len(h) == int(0.4 * SR) and h[0] == 1.0 and np.abs(h).max() == 1.0
    head, tail = h[1 : SR // 100], h[-SR // 100 :]  # the first and last 10 ms of the tail
    drop_db = 10 * np.log10(np.mean(head**2) / np.mean(tail**2))
    assert 45 < drop_db < 75  # 60 dB over the RT60, give or take the noise of 160 samples


def test_reverberation_keeps_length_and_level():
    x = tone(300.0, 0.5)
    assert np.allclose(reverberate(x, np.array([1.0], np.float32)), x, atol=1e-6)  # a bare direct path
    delayed = reverberate(x, np.array([0.0, 0.0, 1.0], np.float32))
    assert np.allclose(delayed[2:], x[:-2], atol=1e-5) and len(delayed) == len(x)
    wet = reverberate(x, room_response(0.5, SR, np.random.default_rng(1)))
    assert len(wet) == len(x) and np.isclose(np.sqrt(np.mean(wet**2)), np.sqrt(np.mean(x**2)), rtol=1e-3)
    assert not np.allclose(wet, x, atol=0.05)


def test_telephone_channel_removes_what_is_above_4_khz():
    low, high = tone(1000.0), tone(6000.0)
    gone = telephone(high, SR)
    assert np.sqrt(np.mean(gone[800:-800] ** 2)) < 1e-4 and np.sqrt(np.mean(gone**2)) < 0.01  # edges: filter onset
    kept = telephone(low, SR)
    assert len(kept) == len(low) and np.sqrt(np.mean((kept - low)[800:-800] ** 2)) < 0.02
    assert telephone(low, 8000) is low  # already an 8 kHz channel


def test_crops_are_drawn_from_their_seed_alone_and_keep_their_length():
    wav = np.random.default_rng(0).standard_normal(5 * SR).astype(np.float32)
    aug = Augmentation(speed=0.1, speed_prob=1.0, reverb_prob=1.0, band_prob=1.0, sample_rate=SR)
    a, b = crop_clip(wav, SR, 11, aug), crop_clip(wav, SR, 11, aug)
    assert np.array_equal(a, b) and abs(len(a) - SR) <= 1 and a.dtype == np.float32
    assert not np.array_equal(a, crop_clip(wav, SR, 12, aug))
    lengths = {len(crop_clip(wav[: SR // 2], SR, s, aug)) for s in range(20)}  # a short clip is kept whole
    assert min(lengths) >= SR // 2 / 1.1 - 2 and max(lengths) <= SR // 2 / 0.9 + 2 and len(lengths) > 1


def test_without_the_new_steps_a_crop_is_the_gain_and_noise_crop_of_before():
    wav = np.random.default_rng(1).standard_normal(3 * SR).astype(np.float32)
    for seed in range(5):
        rng = np.random.default_rng(seed)
        before = augment(random_crops([wav], SR, rng), rng, 6.0, 0.3)[0]
        assert np.array_equal(crop_clip(wav, SR, seed, Augmentation(6.0, 0.3)), before)


def test_the_config_names_the_augmentation():
    aug = augmentation_of(FitConfig(speed=0.2, speed_prob=0.5, reverb_prob=0.1, band_prob=0.3), 22050)
    assert (aug.speed, aug.speed_prob, aug.reverb_prob, aug.band_prob, aug.sample_rate) == (0.2, 0.5, 0.1, 0.3, 22050)
    assert augmentation_of(FitConfig(augment=False), SR) is None

import numpy as np
import pytest

from edgeser.melscale import dft_kernels, hz_to_mel, mel_filterbank, mel_to_hz


def test_htk_mel_known_values():
    # 2595 * log10(1 + 700/700) = 2595 * log10(2)
    assert hz_to_mel(700.0) == pytest.approx(781.1728, abs=1e-3)
    assert hz_to_mel(0.0) == 0.0
    assert hz_to_mel(1000.0) == pytest.approx(999.9855, abs=1e-3)
    assert mel_to_hz(hz_to_mel(np.array([20.0, 440.0, 8000.0]))) == pytest.approx([20.0, 440.0, 8000.0])


def test_filterbank_triangles():
    fb = mel_filterbank(n_freqs=201, n_mels=10, sample_rate=16000, f_min=0.0, f_max=8000.0)
    assert fb.shape == (10, 201)
    assert fb.min() >= 0 and fb.max() <= 1.0 + 1e-6
    freqs = np.linspace(0, 8000, 201)
    centers = mel_to_hz(np.linspace(0, hz_to_mel(8000.0), 12))[1:-1]
    for i, c in enumerate(centers):
        # each filter peaks at the frequency bin nearest its centre and is zero outside its neighbours
        assert abs(freqs[np.argmax(fb[i])] - c) <= 40.0 + 1e-9
        lo, hi = mel_to_hz(np.linspace(0, hz_to_mel(8000.0), 12))[[i, i + 2]]
        assert np.all(fb[i][(freqs <= lo) | (freqs >= hi)] == 0)


def test_filterbank_hand_computed():
    # one filter over 0..8000 Hz: mel(8000) = 2840.02, centre mel 1420.01 -> 1767.8 Hz;
    # bins at 0, 4000, 8000 Hz: 0, falling edge (8000 - 4000) / (8000 - 1767.8) = 0.6418, 0
    fb = mel_filterbank(n_freqs=3, n_mels=1, sample_rate=16000, f_min=0.0, f_max=8000.0)
    assert fb.shape == (1, 3)
    assert fb[0] == pytest.approx([0.0, 0.6418, 0.0], abs=1e-3)


def test_filterbank_rejects_bad_range():
    with pytest.raises(ValueError):
        mel_filterbank(201, 40, 16000, f_min=100.0, f_max=9000.0)


def test_dft_kernels_match_rfft():
    n = 400
    re, im = dft_kernels(n)
    x = np.random.default_rng(0).standard_normal(n)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)
    ref = np.fft.rfft(x * window)
    assert np.allclose(re @ x, ref.real, atol=1e-3)
    assert np.allclose(im @ x, ref.imag, atol=1e-3)

"""The regime benchmark's LALM stand-ins: controlled quality, systematic errors, failure modes, over real HTTP."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edgeser.adapt.teachers import LALMTeacher
from edgeser.manifest import Clip
from edgeser.testing.openai_server import serve

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("regimes", REPO / "benchmarks" / "cross_corpus" / "regimes.py")
regimes = importlib.util.module_from_spec(_spec)
sys.modules["regimes"] = regimes  # dataclasses look their module up there
_spec.loader.exec_module(regimes)  # type: ignore[union-attr]

LABELS = ["angry", "happy", "neutral", "sad"]


def test_confusion_rows_known_values() -> None:
    r = regimes.Regime("t", accuracy=0.6, bias_class="neutral", bias_share=0.5)
    rows = regimes.confusion_rows(LABELS, r, seed=3)
    np.testing.assert_allclose(rows.sum(axis=1), 1.0)
    np.testing.assert_allclose(np.diag(rows), 0.6)
    # errors of the non-neutral classes send at least half their mass (0.4 * 0.5) to neutral
    for t in (0, 1, 3):
        assert rows[t, 2] >= 0.2 - 1e-12
    assert np.array_equal(rows, regimes.confusion_rows(LABELS, r, seed=3))
    assert not np.array_equal(rows, regimes.confusion_rows(LABELS, r, seed=4))
    oracle = regimes.confusion_rows(LABELS, regimes.REGIMES["oracle"])
    np.testing.assert_array_equal(oracle, np.eye(4))
    # deaf: the same row for every true class, 0.4 on neutral plus its share of the uniform 0.6
    deaf = regimes.confusion_rows(LABELS, regimes.REGIMES["deaf"])
    np.testing.assert_allclose(deaf, np.tile([0.15, 0.15, 0.55, 0.15], (4, 1)))


def test_perception_matches_the_regime_and_is_fixed_per_clip() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 4000)
    keys = [hashlib.sha1(str(i).encode()).hexdigest() for i in range(4000)]  # as audio_key gives
    for name in ("weak", "mid", "strong"):
        reg = regimes.REGIMES[name]
        p, refused = regimes.perceived_classes(y, keys, LABELS, reg)
        assert abs(np.mean(p == y) - reg.accuracy) < 0.03, name
        assert abs(refused.mean() - reg.no_answer) < 0.03, name
        # the same clip is perceived the same way whatever else is asked
        p2, r2 = regimes.perceived_classes(y[::-1], keys[::-1], LABELS, reg)
        np.testing.assert_array_equal(p2[::-1], p)
        np.testing.assert_array_equal(r2[::-1], refused)


def test_answers_through_the_http_client(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    audios = [(0.1 * rng.standard_normal(8000 + 160 * i)).astype(np.float32) for i in range(12)]
    y = [i % 4 for i in range(12)]
    clips = []
    for i, a in enumerate(audios):
        sf.write(tmp_path / f"c{i}.wav", a, 16000, subtype="FLOAT")
        clips.append(Clip(tmp_path / f"c{i}.wav", None, None, {}))
    stranger = tmp_path / "unknown.wav"
    sf.write(stranger, (0.1 * rng.standard_normal(9000)).astype(np.float32), 16000, subtype="FLOAT")

    oracle = regimes.regime_answer(regimes.REGIMES["oracle"], audios, y, LABELS)
    server, _, url = serve(oracle, model_name="oracle")
    try:
        teacher = LALMTeacher(url, "oracle", LABELS, cache_path=tmp_path / "c.sqlite", progress=False)
        s = teacher.sample(clips + [Clip(stranger, None, None, {})], 5)
        teacher.close()
    finally:
        server.shutdown()
        server.server_close()
    # every known clip is recognised over HTTP and answered with its label, five times out of five
    np.testing.assert_array_equal(s[:12].argmax(axis=2), np.repeat(np.array(y)[:, None], 5, axis=1))
    assert np.isnan(s[12]).all()  # an unknown clip is refused: no usable answer


@pytest.mark.parametrize("name", ["weak", "strong"])
def test_failure_modes_in_answers(name: str) -> None:
    reg = regimes.REGIMES[name]
    rng = np.random.default_rng(2)
    words = regimes.sample_answers(1, False, LABELS, reg, 4000, rng)
    oov = np.mean([w in regimes.OUT_OF_SET_WORDS for w in words])
    assert abs(oov - reg.out_of_set) < 0.02
    named = [w for w in words if w in LABELS]
    assert abs(np.mean([w == "happy" for w in named]) - reg.vote_purity) < 0.03
    assert regimes.sample_answers(1, True, LABELS, reg, 3, rng) == [regimes.REFUSAL] * 3


def test_a_source_prefixed_recipe_field_reaches_the_source_training_only() -> None:
    spec = importlib.util.spec_from_file_location("cc_run", REPO / "benchmarks" / "cross_corpus" / "run.py")
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)  # type: ignore[union-attr]
    from edgeser.adapt.mifuse import MIFuseConfig
    from edgeser.adapt.train import TrainConfig

    recipe = run.check_recipe({"source.reverb_prob": 0.3, "reverb_prob": 0.1, "mixup": 0.0})
    assert run.recipe_for(TrainConfig, recipe, source=True) == {"reverb_prob": 0.3, "mixup": 0.0}
    assert run.recipe_for(MIFuseConfig, recipe) == {"reverb_prob": 0.1, "mixup": 0.0}
    with pytest.raises(SystemExit, match="source.tau"):
        run.check_recipe({"source.tau": 1.0})  # a method's field, not the source training's

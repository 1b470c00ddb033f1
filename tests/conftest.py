"""Shared fixtures: a tiny model trained for one epoch on the bundled demo clips, and its ONNX export."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def data_or_skip(corpus: str = "emodb") -> Path:
    """The shared corpora folder, or a skip with the reason (tests that need more than the demo clips)."""
    if not (DATA / corpus / "manifest.csv").exists():
        pytest.skip(f"needs ../shared/data/{corpus} (the shared corpora are not next to this checkout)")
    return DATA


@pytest.fixture(scope="session")
def demo_clips_list():
    from edgeser.demo import demo_manifest
    from edgeser.manifest import read_manifest

    return read_manifest(demo_manifest())


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, demo_clips_list) -> Path:
    from edgeser.testing.models import tiny_checkpoint as make

    return make(tmp_path_factory.mktemp("tiny") / "tiny.pt", demo_clips_list)


@pytest.fixture(scope="session")
def tiny_onnx(tiny_checkpoint, tmp_path_factory) -> Path:
    from edgeser.export import export_onnx

    out = tmp_path_factory.mktemp("tiny_onnx") / "tiny.onnx"
    export_onnx(tiny_checkpoint, out)
    return out

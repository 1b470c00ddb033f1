"""The bundled demo clips (EmoDB, CC0): real emotional speech for the demo, tests and export checks."""

from __future__ import annotations

from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parent / "demo_clips"


def demo_manifest() -> Path:
    """The manifest CSV of the demo clips (path, speaker, label, ...)."""
    return DEMO_DIR / "manifest.csv"


def demo_clips() -> list[Path]:
    """The demo clips' paths, sorted."""
    return sorted(DEMO_DIR.glob("*.flac"))

"""Shared helpers of the benchmarks: data location, speaker splits, machine/version description."""

from __future__ import annotations

import csv
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np

from edgeser.manifest import Clip, read_manifest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EDGESER_DATA", REPO.parent / "shared" / "data"))
CORPORA = ("emodb", "nemo", "turev_db")


def corpus(name: str, data: Path = DATA) -> list[Clip]:
    path = data / name / "manifest.csv"
    if not path.exists():
        sys.exit(f"error: {path} not found (set EDGESER_DATA to the folder holding emodb/, nemo/, turev_db/)")
    return read_manifest(path)


def speakers(clips: list[Clip]) -> list[str]:
    return sorted({c.speaker for c in clips if c.speaker})


def write_manifest(clips: list[Clip], path: Path) -> Path:
    """A manifest CSV with absolute paths (so it can live anywhere)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = sorted({k for c in clips for k in c.extra})
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "speaker", *extra])
        for c in clips:
            w.writerow([str(c.path), c.label or "", c.speaker or "", *[c.extra.get(k, "") for k in extra]])
    return path


def machine() -> dict:
    import onnxruntime

    info = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cores": os.cpu_count(),
        "numpy": np.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        info["git_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return info

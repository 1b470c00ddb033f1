"""The built wheel works on its own: installed into a fresh venv (not editable, no checkout on the
path), its ``edgeser demo`` and ``edgeser predict`` run from another folder (issue 9, item 12)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.wheel
# a PYTHONPATH pointing at a checkout (how the tests are often run) would make the fresh venv import that
# checkout instead of the wheel's copy
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}


def run(cmd: list, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=CLEAN_ENV)
    assert r.returncode == 0, (
        f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    )
    return r


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    # build from a copy without build outputs: a stale build/ folder would hide missing package data
    src = tmp / "src"
    shutil.copytree(
        REPO,
        src,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "dist", "*.egg-info", "runs", "__pycache__", ".pytest_cache"
        ),
    )
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp / "dist", src], cwd=tmp)
    wheel = next((tmp / "dist").glob("edgeser-*.whl"))
    run([sys.executable, "-m", "venv", tmp / "venv"], cwd=tmp)
    py = tmp / "venv" / "bin" / "python"
    run([py, "-m", "pip", "install", "-q", wheel], cwd=tmp)
    return tmp / "venv"


def test_installed_wheel_runs_demo_and_predict(fresh_venv: Path, tmp_path: Path) -> None:
    where = run([fresh_venv / "bin" / "python", "-c", "import edgeser, sys; print(edgeser.__file__)"], cwd=tmp_path)
    assert where.stdout.strip().startswith(str(fresh_venv)), where.stdout  # the wheel's copy, not the checkout
    shebang = (fresh_venv / "bin" / "edgeser").read_text().splitlines()[0]
    assert shebang.startswith(f"#!{fresh_venv}/bin/python"), shebang  # the script below runs that interpreter
    demo = run([fresh_venv / "bin" / "edgeser", "demo", "--fast", "--jsonl"], cwd=tmp_path)
    events = [json.loads(line) for line in demo.stdout.splitlines() if line.strip()]
    assert len(events) > 8 and any(e["top"] for e in events)
    clip = REPO / "edgeser" / "demo_clips" / "03a02Wc.flac"
    pred = run([fresh_venv / "bin" / "edgeser", "predict", "--jsonl", clip], cwd=tmp_path)
    row = json.loads(pred.stdout.splitlines()[0])
    assert row["error"] is None and abs(sum(row["distribution"].values()) - 1) < 1e-5

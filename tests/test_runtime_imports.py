"""The runtime and its commands never import torch or onnx (they are not installed on devices)."""

import subprocess
import sys

from edgeser.demo import demo_clips

CHECK = """
import sys, runpy, atexit
def report():
    heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx', 'onnxscript'))
    sys.stderr.write('HEAVY=' + ','.join(heavy) + '\\n')
atexit.register(report)
sys.argv = ['edgeser'] + sys.argv[1:]
runpy.run_module('edgeser.cli', run_name='__main__')
"""


def _heavy(*args):
    r = subprocess.run([sys.executable, "-c", CHECK, *map(str, args)], capture_output=True, text=True, timeout=120)
    line = [x for x in r.stderr.splitlines() if x.startswith("HEAVY=")]
    assert line, r.stderr
    return r, line[-1][len("HEAVY=") :]


def test_import_runtime_does_not_import_torch():
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, edgeser, edgeser.runtime; from edgeser import Recognizer; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch','onnx','onnxscript')))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


def test_runtime_commands_do_not_import_torch(tiny_onnx):
    for args in (
        ["predict", demo_clips()[0], "--model", tiny_onnx],
        ["stream", demo_clips()[0], "--model", tiny_onnx, "--fast", "--jsonl"],
        ["listen", "--device", "no-such-device", "--model", tiny_onnx],
        ["devices"],
    ):
        r, heavy = _heavy(*args)
        assert heavy == "", f"{args[0]} imported {heavy}"

"""A private PulseAudio server with a virtual microphone, for tests that use a real audio stack.

``virtual_microphone()`` starts ``pulseaudio`` (as a child process, private ``XDG_RUNTIME_DIR``,
anonymous auth, no shared memory) with a null sink ``virtmic`` whose monitor is the default source,
points this process at it (``PULSE_SERVER``) and stops it afterwards. Whatever ``play(path)`` plays
into the sink comes out of the ALSA ``pulse``/``default`` devices, which is what PortAudio (and so
sounddevice) records. After entering, call ``edgeser.runtime.microphone.refresh_devices()`` so that
PortAudio enumerates the devices again with the new environment.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

SINK = "virtmic"


def pulse_missing_reason() -> str | None:
    """Why a virtual microphone cannot be started here, or ``None`` when it can."""
    for tool in ("pulseaudio", "pactl", "paplay", "parec"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (Debian: pulseaudio pulseaudio-utils; see scripts/ci_apt.sh)"
    return None


@dataclass
class VirtualMicrophone:
    runtime_dir: Path
    server: str  #: value for PULSE_SERVER, e.g. ``unix:/tmp/x/pulse/native``
    env: dict[str, str]  #: environment for child processes (pactl, paplay, python ...)
    process: subprocess.Popen
    players: list[subprocess.Popen] = field(default_factory=list)

    def pactl(self, *args: str, timeout: float = 10.0) -> str:
        r = subprocess.run(["pactl", *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"pactl {' '.join(args)} failed: {r.stderr.strip()}")
        return r.stdout

    def play(self, path: str | os.PathLike) -> subprocess.Popen:
        """Start ``paplay`` playing ``path`` into the virtual microphone; returns the process."""
        p = subprocess.Popen(
            ["paplay", f"--device={SINK}", str(path)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.players.append(p)
        return p


def _answers(env: dict[str, str]) -> bool:
    try:
        r = subprocess.run(["pactl", "info"], env=env, capture_output=True, timeout=5)
    except subprocess.TimeoutExpired:
        return False
    return r.returncode == 0


def _keep_awake(env: dict[str, str], deadline: float) -> subprocess.Popen:
    """Keep a low-latency recording client on ``virtmic.monitor`` for the server's lifetime.

    An idle null sink renders in 2 s blocks, so the first recording stream after a quiet spell gets
    its first audio only when the current block ends (measured: up to 1.9 s). A permanent 20 ms
    client keeps the sink rendering in small blocks; waiting here for its first bytes takes that
    one-off delay out of the tests."""
    p = subprocess.Popen(
        [
            "parec",
            f"--device={SINK}.monitor",
            "--latency-msec=20",
            "--raw",
            "--format=s16le",
            "--rate=8000",
            "--channels=1",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    first = threading.Event()

    def drain() -> None:
        while p.stdout.read1(4096):
            first.set()

    threading.Thread(target=drain, daemon=True).start()
    if not first.wait(max(0.1, deadline - time.monotonic())):
        p.kill()
        p.wait()
        raise RuntimeError("parec got no audio from virtmic.monitor: the null sink does not run")
    return p


@contextlib.contextmanager
def virtual_microphone(set_environ: bool = True, start_timeout_s: float = 15.0) -> Iterator[VirtualMicrophone]:
    """Start a private PulseAudio server with the ``virtmic`` null sink; stop it on exit.

    With ``set_environ`` this process' ``PULSE_SERVER`` points at it while inside (and is restored
    afterwards), so the ALSA pulse plugin that PortAudio uses finds it.
    """
    reason = pulse_missing_reason()
    if reason:
        raise RuntimeError(reason)
    # short path: unix socket paths are limited to ~107 bytes
    runtime_dir = Path(tempfile.mkdtemp(prefix="edgeser-pa-", dir="/tmp"))
    os.chmod(runtime_dir, 0o700)
    socket = runtime_dir / "pulse" / "native"
    server = f"unix:{socket}"
    env = dict(os.environ)
    env.pop("PULSE_SERVER", None)
    env.update(
        XDG_RUNTIME_DIR=str(runtime_dir),
        XDG_CONFIG_HOME=str(runtime_dir / "config"),  # keep cookie/state files out of $HOME
        XDG_STATE_HOME=str(runtime_dir / "state"),
    )
    server_env = dict(env, HOME=str(runtime_dir))
    env["PULSE_SERVER"] = server
    log = open(runtime_dir / "pulseaudio.log", "wb")
    cmd = [
        "pulseaudio",
        "--daemonize=no",
        "--exit-idle-time=-1",
        "--realtime=no",
        "--high-priority=no",
        "--disable-shm=yes",
        "--use-pid-file=no",
        "--log-target=stderr",
        "-n",  # no default.pa: only the modules below
        "--load=module-native-protocol-unix auth-anonymous=1",
        f"--load=module-null-sink sink_name={SINK} sink_properties=device.description=edgeser-virtmic",
        "--load=module-always-sink",
    ]
    proc = subprocess.Popen(cmd, env=server_env, stdout=log, stderr=log, start_new_session=True)
    vm = VirtualMicrophone(runtime_dir, server, env, proc)
    saved = {k: os.environ.get(k) for k in ("PULSE_SERVER",)}
    try:
        deadline = time.monotonic() + start_timeout_s
        while not (socket.exists() and _answers(env)):
            if proc.poll() is not None:
                log.flush()
                text = (runtime_dir / "pulseaudio.log").read_text(errors="replace").strip()
                raise RuntimeError(f"pulseaudio exited with {proc.returncode}: {text[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"pulseaudio did not answer on {socket} within {start_timeout_s:g} s")
            time.sleep(0.05)
        vm.pactl("set-default-sink", SINK)
        vm.pactl("set-default-source", f"{SINK}.monitor")
        vm.players.append(_keep_awake(env, deadline=time.monotonic() + start_timeout_s))
        if set_environ:
            os.environ["PULSE_SERVER"] = server
        yield vm
    finally:
        if set_environ:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        for p in vm.players:
            if p.poll() is None:
                p.kill()
            p.wait()
        if proc.poll() is None:
            with contextlib.suppress(Exception):
                subprocess.run(["pactl", "exit"], env=env, capture_output=True, timeout=5)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
        shutil.rmtree(runtime_dir, ignore_errors=True)

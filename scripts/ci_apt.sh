#!/usr/bin/env bash
# Install the Debian/Ubuntu packages the test suite needs, only those that are missing:
#   libportaudio2       PortAudio, loaded by the sounddevice wheel (live microphone)
#   pulseaudio          the server the microphone tests start (tests/pulse.py)
#   pulseaudio-utils    pactl, paplay, parec
#   libasound2-plugins  ALSA's pulse plugin: how PortAudio reaches PulseAudio
#   libsndfile1         only when the soundfile of $PYTHON (the project's venv) cannot load its bundled copy
# Fast when everything is there (dpkg-query only, no apt-get update). Needs root or passwordless sudo.
# Usage: PYTHON=.venv/bin/python scripts/ci_apt.sh   (run after the venv has soundfile installed; the
#        Makefile does this. Without PYTHON, libsndfile1 is not considered.)
set -euo pipefail

pkgs=(libportaudio2 pulseaudio pulseaudio-utils libasound2-plugins)
if [ -n "${PYTHON:-}" ] && ! "$PYTHON" -c "import soundfile" >/dev/null 2>&1; then
    pkgs+=(libsndfile1)
fi

missing=()
for p in "${pkgs[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "ci_apt: already installed: ${pkgs[*]}"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ci_apt: apt-get not found; install these yourself: ${missing[*]}" >&2
    exit 1
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo=(sudo -n)
    else
        echo "ci_apt: need root (or passwordless sudo) to install: ${missing[*]}" >&2
        exit 1
    fi
fi

echo "ci_apt: installing ${missing[*]}"
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"

for p in "${missing[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
        || { echo "ci_apt: $p did not install" >&2; exit 1; }
done
echo "ci_apt: done"

#!/usr/bin/env bash
# A virtual microphone: a PulseAudio server whose null sink "virtmic" is played into (paplay) and
# whose monitor "virtmic.monitor" is the default source, recorded by PortAudio/sounddevice through
# ALSA's pulse plugin (the ALSA devices "pulse" and "default").
#
#   eval "$(scripts/pulse_virtmic.sh)"         # start it, or reuse it; sets PULSE_SERVER
#   paplay --device=virtmic some.wav &          # anything played there is "heard"
#   edgeser listen ...                          # or any sounddevice program
#   scripts/pulse_virtmic.sh --stop             # stop the private server again
#
# Idempotent. A server that already answers and has the virtmic sink (PULSE_SERVER, else
# $XDG_RUNTIME_DIR's) is reused as it is. Otherwise a private server is used or started under
# ${EDGESER_PULSE_DIR:-/tmp/edgeser-pulse-<uid>} (anonymous auth, no shm, no idle exit); a desktop
# server without virtmic is never modified. Works as root too (pulseaudio only warns).
# stdout: only `export PULSE_SERVER=unix:<dir>/pulse/native`; progress goes to stderr.
# Note: an idle null sink renders in 2 s blocks, so the first recording after a quiet spell may
# wait up to ~2 s for its first audio.
set -euo pipefail

SINK=virtmic
dir="${EDGESER_PULSE_DIR:-/tmp/edgeser-pulse-$(id -u)}"
server="unix:$dir/pulse/native"

log() { echo "pulse_virtmic: $*" >&2; }
answers() { PULSE_SERVER="$1" pactl info >/dev/null 2>&1; }
has_sink() { PULSE_SERVER="$1" pactl list short sinks 2>/dev/null | cut -f2 | grep -qx "$SINK"; }

for tool in pulseaudio pactl; do
    command -v "$tool" >/dev/null 2>&1 || { log "$tool not found (Debian: scripts/ci_apt.sh)"; exit 1; }
done

if [ "${1:-}" = "--stop" ]; then
    if answers "$server"; then
        PULSE_SERVER="$server" pactl exit || true
        for _ in $(seq 50); do answers "$server" || break; sleep 0.1; done
        log "stopped $server"
    else
        log "no server at $server"
    fi
    exit 0
fi

# 1. reuse a server that already has the virtual microphone
for cand in "${PULSE_SERVER:-}" "${XDG_RUNTIME_DIR:+unix:$XDG_RUNTIME_DIR/pulse/native}" "$server"; do
    [ -n "$cand" ] || continue
    if answers "$cand" && has_sink "$cand"; then
        log "reusing $cand"
        echo "export PULSE_SERVER=$cand"
        exit 0
    fi
done

# 2. our private server: start it unless it runs, then make sure it has the sink
if ! answers "$server"; then
    mkdir -p "$dir"
    chmod 700 "$dir"
    log "starting pulseaudio in $dir"
    env -u PULSE_SERVER XDG_RUNTIME_DIR="$dir" HOME="$dir" XDG_CONFIG_HOME="$dir/config" XDG_STATE_HOME="$dir/state" \
        pulseaudio --daemonize=yes --exit-idle-time=-1 --realtime=no --high-priority=no \
        --disable-shm=yes --log-target="file:$dir/pulseaudio.log" -n \
        --load="module-native-protocol-unix auth-anonymous=1" \
        --load="module-null-sink sink_name=$SINK sink_properties=device.description=edgeser-virtmic" \
        --load=module-always-sink
    for _ in $(seq 100); do answers "$server" && break; sleep 0.1; done
    answers "$server" || { log "pulseaudio did not answer on $server (see $dir/pulseaudio.log)"; exit 1; }
fi
if ! has_sink "$server"; then
    PULSE_SERVER="$server" pactl load-module module-null-sink "sink_name=$SINK" >/dev/null
fi
PULSE_SERVER="$server" pactl set-default-sink "$SINK"
PULSE_SERVER="$server" pactl set-default-source "$SINK.monitor"
log "ready: play into sink '$SINK', record from the default source '$SINK.monitor'"
echo "export PULSE_SERVER=$server"

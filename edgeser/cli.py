"""``edgeser`` command line. Thin: parse options, call the library, print.

predict / stream / listen / devices / bench import only the runtime (never torch); train / adapt /
export / annotate import torch lazily, inside their commands."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import click
import numpy as np

from ._version import __version__
from .errors import EdgeserError


def _fail(msg: str, code: int = 1) -> None:
    click.echo(f"error: {msg}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgeser")
def cli() -> None:
    """On-device speech emotion recognition: emotion distributions from audio files or the microphone,
    and adaptation of the model to your own unlabelled audio."""


# ---------------------------------------------------------------- runtime commands (no torch)

model_option = click.option(
    "--model",
    "-m",
    "model_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="An edgeser .onnx model (default: the bundled model).",
)
threads_option = click.option(
    "--threads", type=click.IntRange(1, 64), default=1, show_default=True, help="ONNX Runtime intra-op threads."
)


def _stream_options(f):
    f = click.option(
        "--window",
        "window_s",
        type=click.FloatRange(0.3, 60),
        default=None,
        help="Window in seconds (default: the model's).",
    )(f)
    f = click.option(
        "--hop",
        "hop_s",
        type=click.FloatRange(0.02, 10),
        default=None,
        help="Seconds between distributions (default: the model's).",
    )(f)
    f = click.option(
        "--smoothing",
        type=click.FloatRange(0, 0.99),
        default=0.5,
        show_default=True,
        help="Weight of the past in the moving average of distributions (0 = none).",
    )(f)
    f = click.option("--no-gate", is_flag=True, help="Emit distributions for silence too (no speech gate).")(f)
    f = click.option("--jsonl", is_flag=True, help="One JSON object per distribution.")(f)
    return f


def _recognizer(model_path: str | None, threads: int = 1):
    from .runtime import Recognizer

    return Recognizer.load(model_path, threads=threads)


def _open_stream(rec, sample_rate: int, window_s, hop_s, smoothing, no_gate):
    """The stream of ``stream`` and ``demo``: the options of :func:`_stream_options`, one set of defaults."""
    return rec.stream(sample_rate=sample_rate, window_s=window_s, hop_s=hop_s, smoothing=smoothing, gate=not no_gate)


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path())
@model_option
@threads_option
@click.option("--jsonl", is_flag=True, help="One JSON object per file instead of a table.")
def predict(files: tuple[str, ...], model_path: str | None, threads: int, jsonl: bool) -> None:
    """Emotion distribution of each audio FILE (any format soundfile reads, any rate, any length).
    A file that cannot be read is reported and the others are still processed; the exit code is 1
    when any file failed."""
    from .display import table

    rec = _recognizer(model_path, threads)
    rows, failed = [], 0
    for r in rec.predict_files(files):
        failed += r.error is not None
        if jsonl:
            obj = {"path": r.path, "error": r.error}
            if r.distribution is not None:
                obj.update(
                    top=r.distribution.top,
                    distribution=r.distribution.to_dict(),
                    speech_fraction=round(r.distribution.speech_fraction or 0.0, 3),
                    duration_s=round(r.duration_s or 0.0, 3),
                    warnings=r.warnings,
                )
            click.echo(json.dumps(obj))
        elif r.distribution is None:
            rows.append([r.path, "ERROR", ""] + [""] * len(rec.labels) + [r.error or ""])
        else:
            d = r.distribution
            rows.append(
                [r.path, d.top, f"{d.confidence:.2f}"] + [f"{d[k]:.3f}" for k in rec.labels] + ["; ".join(r.warnings)]
            )
    if not jsonl:
        click.echo(table(rows, ["file", "top", "conf"] + rec.labels + ["notes"]))
    if failed:
        click.echo(f"error: {failed} of {len(files)} files failed", err=True)
        sys.exit(1)


@cli.command()
@click.argument("file", type=click.Path())
@model_option
@threads_option
@_stream_options
@click.option(
    "--realtime/--fast",
    default=False,
    show_default=True,
    help="Pace the file like a live microphone, or run as fast as possible.",
)
@click.option(
    "--chunk-ms",
    type=click.IntRange(1, 10000),
    default=100,
    show_default=True,
    help="Size of the chunks fed to the stream.",
)
def stream(
    file: str,
    model_path: str | None,
    threads: int,
    window_s,
    hop_s,
    smoothing,
    no_gate,
    jsonl,
    realtime: bool,
    chunk_ms: int,
) -> None:
    """Run the streaming path over an audio FILE, as if it came from a microphone."""
    from .audio import audio_info, iter_audio_blocks
    from .display import EventPrinter

    sr, _, _ = audio_info(file)  # a bad file is reported before the model is loaded
    rec = _recognizer(model_path, threads)
    st = _open_stream(rec, sr, window_s, hop_s, smoothing, no_gate)
    show = EventPrinter(rec.labels, jsonl=jsonl)
    t0, fed = time.monotonic(), 0
    for chunk in iter_audio_blocks(file, sr, chunk_ms / 1000):
        if realtime:
            time.sleep(max(0.0, t0 + fed / sr - time.monotonic()))
        fed += len(chunk)
        for ev in st.feed(chunk):
            show(ev)
    for ev in st.flush():
        show(ev)


@cli.command()
@click.option("--device", "-d", default=None, help="Input device index or name (see 'edgeser devices').")
@model_option
@threads_option
@_stream_options
@click.option(
    "--seconds", type=click.FloatRange(0.1), default=None, help="Stop after this long (default: until Ctrl-C)."
)
@click.option("--block-ms", type=click.IntRange(5, 1000), default=100, show_default=True, help="Capture block size.")
def listen(device, model_path, threads, window_s, hop_s, smoothing, no_gate, jsonl, seconds, block_ms) -> None:
    """Live emotion distributions from the microphone (Ctrl-C stops)."""
    from .display import EventPrinter
    from .runtime.microphone import Microphone, resolve_device

    rec = _recognizer(model_path, threads)
    dev = resolve_device(int(device) if device is not None and device.isdigit() else device)
    show = EventPrinter(rec.labels, jsonl=jsonl)
    st = None
    with Microphone(device=dev.index, block_s=block_ms / 1000) as mic:
        if not jsonl:
            click.echo(f"listening on [{dev.index}] {dev.name} at {mic.samplerate} Hz (Ctrl-C stops)", err=True)
        st = rec.stream(
            sample_rate=mic.samplerate, window_s=window_s, hop_s=hop_s, smoothing=smoothing, gate=not no_gate
        )
        t_end = None if seconds is None else time.monotonic() + seconds
        for chunk, _ in mic:
            for ev in st.feed(chunk):
                show(ev)
            if t_end is not None and time.monotonic() >= t_end:
                break
        if mic.overflows and not jsonl:
            click.echo(f"warning: {mic.overflows} audio blocks were dropped (the CPU did not keep up)", err=True)


def _demo_header(rec, n_clips: int, window_s, hop_s, smoothing, no_gate) -> str:
    """What the demo shows, with the values in use."""
    hop, window = hop_s or rec.model.hop_s, window_s or rec.model.window_s
    smooth = (
        f"bars show {smoothing:g} x the previous distribution + {1 - smoothing:g} x the new window's "
        "(--smoothing 0: raw)"
        if smoothing
        else "none: bars show each window's own distribution"
    )
    gate = (
        "--no-gate: silence is scored too"
        if no_gate
        else "too little sound in the last second: nothing is scored (--no-gate scores anyway)"
    )
    return "\n".join(
        [
            f"edgeser demo: {n_clips} EmoDB clips (CC0; speakers the model was not trained on), each followed by",
            f"0.5 s of silence, streamed through {rec.path.name} as if they came from a microphone.",
            f"  hop, window  every {hop:.2f} s the model scores the last {window:.1f} s of audio; the first score",
            '               comes once enough audio has arrived ("first after" below)',
            f"  smoothing    {smooth}",
            f"  no speech    {gate}",
            "  final        the clip's last distribution shown, after its end; compared with the acted emotion",
            "Options and defaults are those of 'edgeser stream FILE' (--hop, --window, --smoothing, --no-gate).",
        ]
    )


@cli.command()
@model_option
@_stream_options
@click.option(
    "--realtime/--fast", default=True, show_default=True, help="Play at speaking pace, or as fast as possible."
)
def demo(model_path: str | None, window_s, hop_s, smoothing, no_gate, jsonl: bool, realtime: bool) -> None:
    """Stream the bundled EmoDB clips (CC0; speakers the default model was not trained on) through
    the streaming runtime as if they came from a microphone, showing live distributions. Takes the
    same stream options, with the same defaults, as 'edgeser stream'."""
    from .audio import load_audio
    from .demo import demo_clips, demo_manifest
    from .display import EventPrinter
    from .manifest import read_manifest

    rec = _recognizer(model_path)
    truth = {c.path.name: c.label for c in read_manifest(demo_manifest())}
    clips = demo_clips()
    if not jsonl:
        click.echo(_demo_header(rec, len(clips), window_s, hop_s, smoothing, no_gate))
    hits = 0
    for path in clips:
        x = load_audio(path, rec.sample_rate)
        x = np.concatenate([x, np.zeros(rec.sample_rate // 2, np.float32)])  # a short pause after each clip
        st = _open_stream(rec, rec.sample_rate, window_s, hop_s, smoothing, no_gate)
        if not jsonl:
            click.echo(f"\n▶ {path.name}  (acted emotion: {truth.get(path.name)})")
        show = EventPrinter(rec.labels, jsonl=jsonl)
        seen = []

        def on(events, show=show, seen=seen):
            for ev in events:
                show(ev)
                seen.append(ev)

        t0, step = time.monotonic(), rec.sample_rate // 10
        for i in range(0, len(x), step):
            if realtime:
                time.sleep(max(0.0, t0 + i / rec.sample_rate - time.monotonic()))
            on(st.feed(x[i : i + step]))
        on(st.flush())
        first = seen[0].time_s if seen else None
        last = next((ev.distribution for ev in reversed(seen) if ev.distribution is not None), None)
        hits += bool(last and last.top == truth.get(path.name))
        if not jsonl:
            when = f"first after {first:.2f} s of audio" if first is not None else "clip shorter than one window"
            click.echo(f"  final: {last.top if last else '(no speech)'}  ({when})")
    if not jsonl:
        click.echo(f"\n{hits} of {len(clips)} clips ended on the acted emotion.")


@cli.command()
def devices() -> None:
    """List audio input devices."""
    from .runtime.microphone import list_devices

    devs = list_devices()
    if not devs:
        _fail("no audio input devices found")
    for d in devs:
        click.echo(
            f"{'*' if d.is_default else ' '} [{d.index}] {d.name}  ({d.channels} ch, {d.default_samplerate:.0f} Hz)"
        )


@cli.command()
@model_option
@click.option(
    "--seconds",
    type=click.FloatRange(1, 3600),
    default=60.0,
    show_default=True,
    help="Audio streamed for the streaming measurement.",
)
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the results as JSON here.")
def bench(model_path: str | None, seconds: float, out: str | None) -> None:
    """Measure the runtime on this machine: latency per window on one thread, streaming CPU cost per
    second of audio, real-time factor, peak memory, model size."""
    from .runtime.bench import run_benchmark

    res = run_benchmark(model_path, stream_seconds=seconds)
    click.echo(json.dumps(res, indent=2))
    if out:
        Path(out).write_text(json.dumps(res, indent=2) + "\n")


# ---------------------------------------------------------------- evaluation


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("manifest", type=click.Path())
@click.option(
    "--out", "out_dir", type=click.Path(file_okay=False), required=True, help="Folder for report.json and plots."
)
@click.option(
    "--reference",
    type=click.Choice(["labels", "votes", "listener"]),
    default="labels",
    show_default=True,
    help="Compare with hard labels, votes_<label> columns, or EmoDB's listener_recognition_pct soft target.",
)
@threads_option
def evaluate(model: str, manifest: str, out_dir: str, reference: str, threads: int) -> None:
    """UA, WA, macro-F1, per-class recall, confusion matrix, NLL, Brier, ECE (and JS / multi-label F1
    against soft references) of MODEL (.onnx with the runtime only, or .pt) on a labelled MANIFEST."""
    from .evaluate import evaluate_model

    res = evaluate_model(model, manifest, out_dir, reference=reference, threads=threads)
    click.echo(res["table"])
    click.echo(f"report: {res['report']}" + (f" ({res['note']})" if res.get("note") else ""))


# ---------------------------------------------------------------- training, adaptation, export (torch)


_workers_option = click.option(
    "--workers",
    type=click.IntRange(0),
    default=None,
    help="Processes that read, crop and pad the batches (default: 2 with a GPU, 0 on CPU); results do not change.",
)


def _is_main_process() -> bool:
    """False in the data-parallel processes of rank > 0 that ``torchrun`` starts (they do not print)."""
    from .adapt.distributed import world_from_env

    return world_from_env().is_main


def _need_torch() -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        _fail("this command needs the [adapt] extra (torch): pip install '.[adapt]' in the edgeser checkout")


@cli.command()
@click.option(
    "--train",
    "train_manifests",
    multiple=True,
    required=True,
    type=click.Path(),
    help="Labelled manifest CSV (repeatable).",
)
@click.option(
    "--val",
    "val_manifest",
    type=click.Path(),
    default=None,
    help="Validation manifest: its UA is reported every epoch (and picks the epoch with --select best).",
)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Checkpoint to write (.pt).")
@click.option("--labels", default=None, help="Comma-separated label set (default: the labels of the training data).")
@click.option(
    "--targets",
    type=click.Choice(["hard", "listener", "votes-all", "votes-plurality", "votes-majority"]),
    default="hard",
    show_default=True,
    help="Training targets: hard labels or distributions (see docs).",
)
@click.option(
    "--penalty-weight",
    type=float,
    default=0.0,
    show_default=True,
    help="Weight of the co-occurrence penalty loss (needs votes_<label> columns).",
)
@click.option("--epochs", type=click.IntRange(1), default=30, show_default=True)
@click.option(
    "--batch-size",
    type=click.IntRange(2),
    default=32,
    show_default=True,
    help="Clips per step (at least 2: batch norm cannot train on one clip).",
)
@click.option("--lr", type=float, default=3e-3, show_default=True)
@click.option(
    "--select",
    type=click.Choice(["last", "best"]),
    default="last",
    show_default=True,
    help="Checkpoint the last epoch, or the best by validation UA (needs --val).",
)
@click.option(
    "--mixup", type=click.FloatRange(0.0), default=0.4, show_default=True, help="Mixup's Beta(a, a) parameter (0: off)."
)
@click.option(
    "--reverb-prob",
    type=click.FloatRange(0.0, 1.0),
    default=0.3,
    show_default=True,
    help="Share of training crops through a synthetic room (0: off).",
)
@click.option(
    "--band-prob",
    type=click.FloatRange(0.0, 1.0),
    default=0.2,
    show_default=True,
    help="Share of training crops through an 8 kHz telephone channel (0: off).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA when available).")
@_workers_option
@click.option("--fresh", is_flag=True, help="Ignore a saved training state instead of resuming it.")
def train(
    train_manifests,
    val_manifest,
    out,
    labels,
    targets,
    penalty_weight,
    epochs,
    batch_size,
    lr,
    select,
    mixup,
    reverb_prob,
    band_prob,
    seed,
    device,
    workers,
    fresh,
) -> None:
    """Train a source classifier on labelled audio."""
    _need_torch()
    from .adapt.targets import build_targets
    from .adapt.train import TrainConfig, labels_of
    from .adapt.train import train as run_train
    from .manifest import check_labels, read_manifest

    clips = [c for m in train_manifests for c in read_manifest(m)]
    if any(c.label is None for c in clips):
        _fail("every training clip needs a label (manifest column 'label')")
    label_set = labels.split(",") if labels else labels_of(clips)
    check_labels(clips, label_set, "training data")
    val = read_manifest(val_manifest) if val_manifest else None
    if val:
        check_labels(val, label_set, "validation data")
        if any(c.label is None for c in val):
            _fail("every validation clip needs a label")
    if select == "best" and not val:
        _fail("--select best needs validation clips (--val)")
    cfg = TrainConfig(
        epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device, penalty_weight=penalty_weight,
        workers=workers, select=select, mixup=mixup, reverb_prob=reverb_prob, band_prob=band_prob,
    )  # fmt: skip
    clips, t, penalty = build_targets(clips, label_set, targets, cfg.label_smoothing, with_penalty=penalty_weight > 0)
    res = run_train(clips, val, out, cfg, labels=label_set, targets=t, penalty=penalty, resume=not fresh)
    best = res.best_val_ua
    if _is_main_process():
        click.echo(
            f"wrote {res.model}"
            + (f" (epoch {res.summary['best_epoch']}, validation UA {best:.4f})" if best is not None else "")
        )


@cli.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="ONNX file to write.")
@click.option(
    "--parity-clip",
    multiple=True,
    type=click.Path(),
    help="Real clips for the parity check (default: the bundled demo clips).",
)
@click.option("--tol", type=float, default=1e-4, show_default=True, help="Max abs probability difference allowed.")
@click.option(
    "--form",
    type=click.Choice(["incremental", "whole"]),
    default="incremental",
    show_default=True,
    help="incremental: convolution states in and out, each stream hop encodes only its new audio (the bundled "
    "model's form); whole: audio + cache in, each hop re-encodes the receptive field's context too.",
)
@click.option(
    "--weights",
    type=click.Choice(["int8", "fp32"]),
    default=None,
    help="How the learned weights are stored: int8 (about a third of the file, fp32 arithmetic, probabilities "
    "move by ~1e-3 and the parity tolerance becomes at least 0.02; incremental form only) or fp32. "
    "[default: int8 for --form incremental (fp32, with a note, when int8 fails the parity check), fp32 for whole]",
)
def export(checkpoint: str, out: str, parity_clip: tuple[str, ...], tol: float, form: str, weights: str | None) -> None:
    """Export a checkpoint to a self-describing ONNX model (refused if it fails the parity check). The
    default form is the bundled model's: the incremental graph with int8-stored weights."""
    _need_torch()
    chosen = weights
    weights = weights or ("int8" if form == "incremental" else "fp32")
    if weights == "int8" and form != "incremental":
        _fail("--weights int8 needs --form incremental")
    if form == "incremental":
        from .export import ParityError
        from .export.incremental import export_incremental

        try:
            res = export_incremental(checkpoint, out, parity_clip, tol, weights=weights)
        except ParityError as e:
            if chosen is not None or weights != "int8":
                raise
            # the int8 default is a size choice, not the user's: a model it would change too much ships in fp32
            click.echo(f"note: int8-stored weights failed the parity check ({e}); writing fp32 weights", err=True)
            weights = "fp32"
            res = export_incremental(checkpoint, out, parity_clip, tol, weights=weights)
    else:
        from .export import export_onnx

        res = export_onnx(checkpoint, out, parity_clip, tol)
    p = res["parity"]
    click.echo(
        f"wrote {out} ({form}, {weights} weights, {res['bytes'] / 1e6:.2f} MB, labels {','.join(res['labels'])}); "
        f"parity on {p['clips']} clips: "
        f"max |Δp| {p['max_abs_prob_diff']:.1e} whole, {p['max_abs_prob_diff_streamed']:.1e} streamed"
    )


def _lalm_options(f):
    f = click.option("--lalm-url", default=None, help="OpenAI-compatible base URL (e.g. http://host:8000/v1).")(f)
    f = click.option("--lalm-model", default=None, help="Model name at that endpoint.")(f)
    f = click.option(
        "--lalm-predictions",
        type=click.Path(dir_okay=False),
        default=None,
        help="JSON lines of predictions obtained elsewhere (instead of an endpoint).",
    )(f)
    f = click.option(
        "--k-lalm", type=click.IntRange(1, 64), default=5, show_default=True, help="LALM samples per clip."
    )(f)
    f = click.option(
        "--temperature", type=click.FloatRange(0, 2), default=1.0, show_default=True, help="LALM sampling temperature."
    )(f)
    f = click.option(
        "--cache",
        "cache_path",
        type=click.Path(dir_okay=False),
        default=None,
        help="SQLite cache of LALM answers (default: next to --out).",
    )(f)
    f = click.option(
        "--concurrency", type=click.IntRange(1, 64), default=4, show_default=True, help="Parallel LALM requests."
    )(f)
    f = click.option(
        "--lalm-timeout",
        type=click.FloatRange(1, 3600),
        default=60.0,
        show_default=True,
        help="Seconds to wait for one LALM response.",
    )(f)
    f = click.option(
        "--max-calls",
        type=click.IntRange(1),
        default=None,
        help="Stop cleanly after this many LALM HTTP calls (exit 3; the answers so far stay cached, a rerun "
        "continues).",
    )(f)
    f = click.option(
        "--lalm-rpm", type=click.FloatRange(min=0, min_open=True), default=None, help="LALM requests per minute."
    )(f)
    f = click.option(
        "--lalm-tpm",
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        help="LALM tokens per minute (the server's usage counts; else an estimate, see docs/ADAPTATION.md).",
    )(f)
    f = click.option(
        "--dry-run", is_flag=True, help="Print how many LALM calls the run would make (cache-aware) and stop."
    )(f)
    return f


def _lalm_teacher_options(
    lalm_url, lalm_model, lalm_predictions, temperature, cache_path, concurrency, lalm_timeout, max_calls, rpm, tpm
):
    """The LALM options as the teacher factory takes them (``edgeser.adapt.teachers.factory``)."""
    from .adapt.teachers.factory import LALMOptions

    return LALMOptions(
        url=lalm_url,
        model=lalm_model,
        predictions=lalm_predictions,
        temperature=temperature,
        cache_path=cache_path,
        concurrency=concurrency,
        timeout_s=lalm_timeout,
        max_calls=max_calls,
        requests_per_minute=rpm,
        tokens_per_minute=tpm,
    )


def _dry_run(teacher, target: str, k: int, budget: str | None = None) -> None:
    """Print the LALM calls a run would make (``LALMTeacher.plan``) and exit 0, contacting nobody."""
    from .adapt.budget import parse_budget
    from .manifest import read_manifest

    clips = read_manifest(target)
    if not hasattr(teacher, "plan"):
        click.echo(f"dry run: {len(clips)} clips; the predictions file answers them, no LALM calls")
        return
    p = teacher.plan(clips, k)
    line = (
        f"dry run: {p['clips']} clips x {k} answers = {p['answers_wanted']}; {p['answers_cached']} cached; "
        f"the LALM would get {p['calls']} HTTP calls (retries not counted)"
    )
    if p["unreadable_clips"]:
        line += f"; {p['unreadable_clips']} clips cannot be read (skipped)"
    n_budget = parse_budget(budget, p["clips"])
    if n_budget is not None and n_budget < p["clips"]:
        line += f"; with --lalm-budget {budget} only {n_budget} clips are asked, so at most that many of those calls"
    click.echo(line)


def _method_help() -> str:
    from .adapt.registry import METHODS

    return "; ".join(f"{name}: {spec.help}" for name, spec in METHODS.items())


def _method_choice() -> click.Choice:
    from .adapt.registry import METHODS

    return click.Choice(list(METHODS))


def _default_method() -> str:
    from .adapt.registry import DEFAULT_METHOD

    return DEFAULT_METHOD


@cli.command()
@click.option(
    "--source-model",
    default=None,
    type=click.Path(dir_okay=False),
    help="Source checkpoint (.pt). Default: the bundled model (rebuilt from its ONNX weights).",
)
@click.option("--target", required=True, type=click.Path(), help="Target manifest CSV or folder of audio (unlabelled).")
@_lalm_options
@click.option("--method", type=_method_choice(), default=_default_method(), show_default=True, help=_method_help())
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Student checkpoint to write (.pt).")
@click.option("--epochs", type=click.IntRange(1), default=None, help="Override the method's default epochs.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default=None, help="cpu, cuda ... (default: CUDA when available).")
@_workers_option
@click.option(
    "--penalty-weight",
    type=click.FloatRange(0),
    default=None,
    help="Co-occurrence penalty loss weight (penalty from how often the LALM's answers co-occur per clip; "
    "LALM methods only; default 0).",
)
@click.option(
    "--lalm-budget",
    default=None,
    help="Ask the LALM about at most this many clips, or a share like 25% (default: every clip); the other "
    "teachers cover the rest and every clip still trains the student.",
)
@click.option("--fresh", is_flag=True, help="Ignore a saved adaptation state instead of resuming it.")
def adapt(
    source_model,
    target,
    lalm_url,
    lalm_model,
    lalm_predictions,
    k_lalm,
    temperature,
    cache_path,
    concurrency,
    lalm_timeout,
    max_calls,
    lalm_rpm,
    lalm_tpm,
    dry_run,
    method,
    out,
    epochs,
    seed,
    device,
    workers,
    penalty_weight,
    lalm_budget,
    fresh,
) -> None:
    """Adapt a source model to unlabelled target audio (MI-Fuse by default). Target labels, if the
    manifest has them, are only used to report progress; target files that cannot be read are skipped
    and listed at the end."""
    _need_torch()
    from .adapt.run import adaptation_message, run_adaptation
    from .adapt.teachers.factory import TeacherOptionsError

    opts = _lalm_teacher_options(
        lalm_url, lalm_model, lalm_predictions, temperature, cache_path, concurrency, lalm_timeout, max_calls, lalm_rpm,
        lalm_tpm,
    )  # fmt: skip
    main = _is_main_process()  # under torchrun only rank 0 prints
    opts.progress = main
    if dry_run:
        from .adapt.run import source_labels
        from .adapt.teachers.factory import lalm_teacher_from_options

        try:
            teacher = lalm_teacher_from_options(
                source_labels(source_model), opts, Path(out).with_suffix(".lalm-cache.sqlite")
            )
        except TeacherOptionsError as e:
            _fail(str(e), 2)
        if teacher is None:
            click.echo(f"dry run: --method {method} asks no LALM")
            return
        _dry_run(teacher, target, k_lalm, lalm_budget)
        return
    try:
        res = run_adaptation(
            source_model,
            target,
            method,
            out,
            opts,
            k_lalm=k_lalm,
            epochs=epochs,
            seed=seed,
            device=device,
            workers=workers,
            penalty_weight=penalty_weight,
            lalm_budget=lalm_budget,
            resume=not fresh,
            progress=main,
        )
    except TeacherOptionsError as e:
        _fail(str(e), 2)
    if main:
        click.echo(adaptation_message(res))


@cli.command()
@click.option("--target", required=True, type=click.Path(), help="Manifest CSV or folder of audio.")
@_lalm_options
@click.option("--labels", default="angry,happy,neutral,sad", show_default=True, help="Comma-separated label set.")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="Votes CSV to write.")
def annotate(
    target,
    lalm_url,
    lalm_model,
    lalm_predictions,
    k_lalm,
    temperature,
    cache_path,
    concurrency,
    lalm_timeout,
    max_calls,
    lalm_rpm,
    lalm_tpm,
    dry_run,
    labels,
    out,
) -> None:
    """Write the LALM teacher's K samples per clip as synthetic votes (votes_<label> columns). Target
    files that cannot be read are skipped and listed at the end."""
    _need_torch()
    from .adapt.teachers.factory import TeacherOptionsError, lalm_teacher_from_options
    from .annotate import annotate as run_annotate

    opts = _lalm_teacher_options(
        lalm_url, lalm_model, lalm_predictions, temperature, cache_path, concurrency, lalm_timeout, max_calls, lalm_rpm,
        lalm_tpm,
    )  # fmt: skip
    try:
        teacher = lalm_teacher_from_options(labels.split(","), opts, Path(out).with_suffix(".lalm-cache.sqlite"))
    except TeacherOptionsError as e:
        _fail(str(e), 2)
    if teacher is None:
        _fail("annotate needs --lalm-url and --lalm-model, or --lalm-predictions", 2)
    if dry_run:
        _dry_run(teacher, target, k_lalm)
        return
    res = run_annotate(target, teacher, k_lalm, out)
    click.echo(res["message"])


def main() -> None:
    """Entry point: user errors become one line on stderr and a non-zero exit, never a traceback."""
    try:
        cli.main(standalone_mode=False, prog_name="edgeser")
    except click.exceptions.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt) as e:
        eof = e.__cause__
        if isinstance(eof, EOFError):  # click turns any EOFError (a truncated file, say) into Abort: not Ctrl-C
            if os.environ.get("EDGESER_DEBUG"):
                raise eof from None
            _fail(
                f"unexpected EOFError: {(str(eof) or 'end of file').splitlines()[0]} "
                "(set EDGESER_DEBUG=1 for the traceback)"
            )
        click.echo("interrupted", err=True)
        sys.exit(130)
    except EdgeserError as e:
        _fail(str(e), getattr(e, "exit_code", 1))
    except BrokenPipeError:
        sys.exit(0)
    except Exception as e:  # a bug: still one line, the traceback on demand
        if os.environ.get("EDGESER_DEBUG"):
            raise
        _fail(
            f"unexpected {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
            "(set EDGESER_DEBUG=1 for the traceback)"
        )


if __name__ == "__main__":
    main()

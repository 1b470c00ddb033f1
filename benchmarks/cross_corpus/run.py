"""Cross-corpus source-free adaptation benchmark (issue 3): source-only, LALM zero-shot, LALM-SFUDA,
SHOT, NRC and MI-Fuse on four transfers between the corpora of ../shared/data.

    python benchmarks/cross_corpus/run.py --quick      # 1 seed, subsampled sets, few epochs (minutes)
    python benchmarks/cross_corpus/run.py              # full: 3 seeds, full sets

Every (transfer, seed, method) result is written to ``<work>/results/<transfer>/seed<k>/<method>.json``
as it finishes; a rerun skips what is done (source training and the adaptation functions also resume
their own state, and the LALM answers are cached in ``<work>/lalm.sqlite``). The tables go to
``<results>/results_quick.{md,json}`` (``--quick``) or ``<results>/results.{md,json}``. The protocol is
in README.md next to this file and in the results.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from common import DATA, REPO, corpus, machine, write_manifest  # noqa: E402
from standin import StandIn, clip_features, load_standin, make_answer, save_standin, train_standin  # noqa: E402

from edgeser.adapt.checkpoint import load_model  # noqa: E402
from edgeser.adapt.data import load_clips, predict_probs  # noqa: E402
from edgeser.adapt.registry import METHODS as ADAPT_METHODS  # noqa: E402
from edgeser.adapt.teachers import FixedSamples, LALMOptions, lalm_teacher_from_options  # noqa: E402
from edgeser.adapt.train import TrainConfig, train  # noqa: E402
from edgeser.manifest import Clip  # noqa: E402
from edgeser.metrics import evaluate  # noqa: E402
from edgeser.testing.openai_server import serve  # noqa: E402

LABELS = ["angry", "happy", "neutral", "sad"]
#: transfer -> (source corpus, target corpus, the LALM stand-in's training corpus: the third one)
TRANSFERS = {
    "emodb_nemo": ("emodb", "nemo", "turev_db"),
    "nemo_emodb": ("nemo", "emodb", "turev_db"),
    "emodb_turev_db": ("emodb", "turev_db", "nemo"),
    "nemo_turev_db": ("nemo", "turev_db", "emodb"),
}
#: leave-one-corpus-out transfers: the source model is trained on the other two corpora together (the bundled
#: model's recipe without the target corpus); no corpus is left for the acoustic stand-in, so only the regime
#: benchmark's stand-ins (or no LALM) serve them
LOCO_TRANSFERS = {
    "loco_nemo": ("emodb+turev_db", "nemo", None),
    "loco_emodb": ("nemo+turev_db", "emodb", None),
    "loco_turev_db": ("emodb+nemo", "turev_db", None),
}
ALL_TRANSFERS = {**TRANSFERS, **LOCO_TRANSFERS}
TRANSFER_TITLES = {
    "emodb_nemo": "EmoDB→nEMO",
    "nemo_emodb": "nEMO→EmoDB",
    "emodb_turev_db": "EmoDB→TurEV",
    "nemo_turev_db": "nEMO→TurEV",
    "loco_nemo": "EmoDB+TurEV→nEMO",
    "loco_emodb": "nEMO+TurEV→EmoDB",
    "loco_turev_db": "EmoDB+nEMO→TurEV",
}
#: the adaptation methods are the library's registry (edgeser.adapt.registry), one row each, keyed by the
#: name their checkpoints carry ("mi-fuse" -> "mi_fuse"); this benchmark adds two reference rows and one variant
ADAPT = {spec.key.replace("-", "_"): spec for spec in ADAPT_METHODS.values()}
#: variant rows: (registry method, config overrides)
VARIANTS = {"mi_fuse_raw_mi": ("mifuse", {"uncertainty": "mi", "relative_uncertainty": False})}
REFERENCE_TITLES = {"source_only": "Source only", "lalm_zero_shot": "LALM stand-in zero-shot"}
METHODS = [*REFERENCE_TITLES, *ADAPT, *VARIANTS]
METHOD_TITLES = {
    **REFERENCE_TITLES,
    **{k: s.title for k, s in ADAPT.items()},
    "mi_fuse_raw_mi": "MI-Fuse, raw BALD-MI weights",
}
#: rows of MI-Fuse (the method and its variant): they get target labels for *reporting* (their diagnostics)
MIFUSE_ROWS = [k for k, s in ADAPT.items() if s.name == "mifuse"] + [
    k for k, (m, _) in VARIANTS.items() if m == "mifuse"
]
MIFUSE_VARIANTS = {k: (VARIANTS[k][1] if k in VARIANTS else {}) for k in MIFUSE_ROWS}
#: per mode: seeds, source-training epochs, adaptation epochs (the same for every adaptation method),
#: and caps on the number of clips per set (None = every clip)
MODES = {
    "quick": {
        "seeds": [0],
        "source_epochs": 8,
        "adapt_epochs": 2,
        "caps": {"source_train": 300, "source_val": 100, "adapt": 160, "test": 240},
    },
    "full": {"seeds": [0, 1, 2], "source_epochs": 30, "adapt_epochs": 15, "caps": None},
}
LALM_K = ADAPT_METHODS["mifuse"].config().k_lalm  # 5 answers per clip


def log(msg: str) -> None:
    print(f"[cross-corpus {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ splits


def ordered_speakers(clips: list[Clip]) -> list[str]:
    """Speakers sorted by (gender, id): alternating over this list keeps the genders balanced."""
    gender = {c.speaker: c.extra.get("gender", "unknown") for c in clips}
    return sorted(gender, key=lambda s: (gender[s], s))


def target_split(clips: list[Clip]) -> tuple[list[str], list[str]]:
    """(adaptation speakers, test speakers): alternate over the (gender, id)-sorted speakers, first to
    the adaptation half."""
    spk = ordered_speakers(clips)
    return spk[0::2], spk[1::2]


def source_split(clips: list[Clip]) -> tuple[list[str], list[str]]:
    """(training speakers, validation speakers): the last speaker of each gender (by id) is held out
    for checkpoint selection."""
    spk = ordered_speakers(clips)
    gender = {c.speaker: c.extra.get("gender", "unknown") for c in clips}
    val = [max(s for s in spk if gender[s] == g) for g in sorted(set(gender.values()))]
    return [s for s in spk if s not in val], val


def cap(clips: list[Clip], n: int | None) -> list[Clip]:
    """At most ``n`` clips, the same share of every (speaker, label) group, evenly spaced in path order."""
    if n is None or len(clips) <= n:
        return clips
    frac = n / len(clips)
    groups: dict[tuple, list[Clip]] = {}
    for c in sorted(clips, key=lambda c: str(c.path)):
        groups.setdefault((c.speaker, c.label), []).append(c)
    out = []
    for g in groups.values():
        k = max(1, int(round(frac * len(g))))
        out += [g[i] for i in np.linspace(0, len(g) - 1, k).round().astype(int)]
    return sorted(out, key=lambda c: str(c.path))


#: a recipe key with this prefix sets its field for the source training only (``source.reverb_prob=0.3``)
SOURCE_ONLY = "source."


def recipe_for(config: type, recipe: dict, source: bool = False) -> dict:
    """The fields of ``recipe`` that the dataclass ``config`` has: a recipe sets a field for every training that
    has it (``select`` or ``model`` for the source training only, ``reverb_prob`` for every method); a
    ``source.``-prefixed key only when ``source`` (the source training), where it wins over the plain key."""
    names = {f.name for f in fields(config)}
    plain = {k: v for k, v in recipe.items() if k in names}
    if source:
        plain.update({k[len(SOURCE_ONLY) :]: v for k, v in recipe.items() if k.startswith(SOURCE_ONLY)})
    return plain


def check_recipe(recipe: dict) -> dict:
    """``recipe`` itself when each of its fields belongs to the source training's or a method's config."""
    known = {f.name for c in [TrainConfig, *(s.config for s in ADAPT_METHODS.values())] for f in fields(c)}
    known |= {SOURCE_ONLY + f.name for f in fields(TrainConfig)}
    unknown = sorted(set(recipe) - known)
    if unknown:
        raise SystemExit(f"error: no training has the recipe field(s) {', '.join(unknown)}")
    return recipe


# ------------------------------------------------------------------------------------- the benchmark


class Bench:
    def __init__(
        self,
        mode: str,
        work: Path,
        adapt_epochs: int,
        source_epochs: int,
        caps: dict | None,
        onnx_check: bool,
        recipe: dict | None = None,
    ):
        self.mode, self.work, self.caps, self.onnx_check = mode, work, caps, onnx_check
        #: training-config fields, each set for every training whose config has it (empty: library defaults)
        self.recipe = check_recipe(dict(recipe or {}))
        self.adapt_epochs, self.source_epochs = adapt_epochs, source_epochs
        self.corpora = {name: corpus(name) for name in ("emodb", "nemo", "turev_db")}
        self.standins: dict[str, StandIn] = {}
        self.servers: dict[str, tuple] = {}
        self.lalm: dict[str, tuple[np.ndarray, np.ndarray, dict]] = {}
        self.wavs: dict[str, list[np.ndarray]] = {}
        #: where source models and per-run results go (the regime benchmark shares the sources between regimes)
        self.sources_dir = work / "sources"
        self.results_dir = work / "results"

    def settings(self) -> dict:
        """What a stored result must have been made with to be reused."""
        out = {"source_epochs": self.source_epochs, "adapt_epochs": self.adapt_epochs, "caps": self.caps}
        return {**out, "recipe": self.recipe} if self.recipe else out

    # ---- data
    def cap_n(self, key: str) -> int | None:
        return None if self.caps is None else self.caps[key]

    def source_sets(self, src: str) -> tuple[list[Clip], list[Clip], dict]:
        """Training and validation clips of the source ``src``: a corpus, or corpora joined by ``+`` (each split
        and capped on its own)."""
        train_c, val_c, tr, va = [], [], [], []
        for name in src.split("+"):
            clips = self.corpora[name]
            t, v = source_split(clips)
            train_c += cap([c for c in clips if c.speaker in t], self.cap_n("source_train"))
            val_c += cap([c for c in clips if c.speaker in v], self.cap_n("source_val"))
            tr, va = tr + t, va + v
        return train_c, val_c, {"train_speakers": tr, "val_speakers": va, "n_train": len(train_c), "n_val": len(val_c)}

    def target_sets(self, tgt: str) -> tuple[list[Clip], list[Clip], dict]:
        clips = self.corpora[tgt]
        ad, te = target_split(clips)
        adapt_c = cap([c for c in clips if c.speaker in ad], self.cap_n("adapt"))
        test_c = cap([c for c in clips if c.speaker in te], self.cap_n("test"))
        return (
            adapt_c,
            test_c,
            {"adapt_speakers": ad, "test_speakers": te, "n_adapt": len(adapt_c), "n_test": len(test_c)},
        )

    # ---- source models (one per source corpus and seed, shared by both transfers from it)
    def source_model(self, src: str, seed: int) -> tuple[Path, dict]:
        d = self.sources_dir / src / f"seed{seed}"
        done = d / "done.json"
        train_c, val_c, info = self.source_sets(src)
        if done.exists():
            old = json.loads(done.read_text())
            if (
                old.get("epochs") == self.source_epochs
                and old.get("n_train") == info["n_train"]
                and old.get("n_val") == info["n_val"]
                and old.get("recipe", {}) == self.recipe
            ):
                return d / "model.pt", old
            log(f"{done} was made with other settings: retraining")
        write_manifest(train_c, d / "train.csv")
        write_manifest(val_c, d / "val.csv")
        log(
            f"source model {src} seed {seed}: {info['n_train']} training clips, {info['n_val']} validation "
            f"clips ({', '.join(info['val_speakers'])}), {self.source_epochs} epochs"
        )
        t0 = time.monotonic()
        cfg = TrainConfig(
            **{**recipe_for(TrainConfig, self.recipe, source=True), "epochs": self.source_epochs, "seed": seed}
        )
        res = train(train_c, val_c, d / "model.pt", cfg, labels=LABELS)
        out = {
            **info,
            "best_val_ua": res.best_val_ua,
            "best_epoch": res.summary.get("best_epoch"),
            "epochs": self.source_epochs,
            "seconds": round(time.monotonic() - t0, 1),
            "train_config": asdict(cfg),
            **({"recipe": self.recipe} if self.recipe else {}),
        }
        done.write_text(json.dumps(out, indent=1) + "\n")
        log(
            f"source model {src} seed {seed}: best validation UA {out['best_val_ua']:.4f} at epoch "
            f"{out['best_epoch']} [{out['seconds']}s]"
        )
        return d / "model.pt", out

    # ---- LALM stand-in
    def standin(self, name: str) -> StandIn:
        if name in self.standins:
            return self.standins[name]
        path = self.work / "standin" / f"{name}.pt"
        s = load_standin(path)
        if s is None:
            clips = self.corpora[name]
            log(f"LALM stand-in: features of {len(clips)} {name} clips, training the MLP")
            t0 = time.monotonic()
            feats = clip_features(clips, self.work / "standin" / f"features_{name}.npz")
            s = train_standin(feats, [c.label for c in clips], name)
            save_standin(s, path)
            log(
                f"LALM stand-in {s.model_name}: labels {s.labels}, training-set UA {s.train_ua:.3f} "
                f"[{time.monotonic() - t0:.1f}s]"
            )
        self.standins[name] = s
        return s

    def lalm_description(self, transfer: str) -> dict:
        """What answered as the LALM on ``transfer`` (stored with the zero-shot result)."""
        return self.standin(TRANSFERS[transfer][2]).describe()

    def server_url(self, s: StandIn) -> str:
        if s.model_name not in self.servers:
            self.servers[s.model_name] = serve(make_answer(s), "127.0.0.1", 0, model_name=s.model_name)
        return self.servers[s.model_name][2]

    def lalm_samples(
        self, transfer: str, adapt_c: list[Clip], test_c: list[Clip]
    ) -> tuple[np.ndarray, np.ndarray, dict]:
        """(adapt samples, test samples, usage) of the transfer's stand-in, (N, K, C), through HTTP."""
        if transfer not in self.lalm:
            s = self.standin(TRANSFERS[transfer][2])
            self.lalm[transfer] = self.ask_lalm(
                transfer, f"LALM stand-in {s.model_name}", self.server_url(s), s.model_name,
                self.work / "lalm.sqlite", adapt_c, test_c,
            )  # fmt: skip
        return self.lalm[transfer]

    def ask_lalm(
        self, transfer: str, what: str, url: str, model: str, cache: Path, adapt_c: list[Clip], test_c: list[Clip]
    ) -> tuple[np.ndarray, np.ndarray, dict]:
        """K answers per clip of adapt + test from the LALM at ``url`` through the real HTTP client."""
        t0 = time.monotonic()
        opts = LALMOptions(url=url, model=model, temperature=1.0, cache_path=cache, concurrency=2, progress=False)
        teacher = lalm_teacher_from_options(LABELS, opts)
        try:
            both = teacher.sample(adapt_c + test_c, LALM_K)
            usage = asdict(teacher.usage)
        finally:
            teacher.close()
        usage["seconds"] = round(time.monotonic() - t0, 1)
        log(
            f"{transfer}: {what} answered {len(adapt_c) + len(test_c)} clips x {LALM_K} "
            f"({usage['calls']} HTTP calls, {usage['cached']} cached answers, {usage['unparsed_answers']} unparsed) "
            f"[{usage['seconds']}s]"
        )
        return both[: len(adapt_c)], both[len(adapt_c) :], usage

    def close(self) -> None:
        for server, _, _ in self.servers.values():
            server.shutdown()
            server.server_close()

    # ---- one (transfer, seed)
    def test_wavs(self, transfer: str, test_c: list[Clip]) -> list[np.ndarray]:
        if transfer not in self.wavs:
            self.wavs[transfer] = load_clips(test_c, 16000, "test clips", progress=False)
        return self.wavs[transfer]

    def score(self, probs: np.ndarray, test_c: list[Clip]) -> dict:
        y = np.array([LABELS.index(c.label) for c in test_c])
        m = evaluate(probs, LABELS, y)
        return {k: m[k] for k in ("n", "ua", "macro_f1", "wa", "per_class_recall", "confusion_matrix")}

    def run_one(self, transfer: str, seed: int, method: str) -> dict:
        src, tgt, third = ALL_TRANSFERS[transfer]
        out_json = self.results_dir / transfer / f"seed{seed}" / f"{method}.json"
        if out_json.exists():
            old = json.loads(out_json.read_text())
            if old.get("settings") == self.settings():
                return old
            log(f"{out_json} was made with other settings ({old.get('settings')}): redoing it")
        d = self.results_dir.parent / "adapt" / transfer / f"seed{seed}"
        d.mkdir(parents=True, exist_ok=True)
        adapt_c, test_c, split = self.target_sets(tgt)
        write_manifest(adapt_c, self.work / "splits" / transfer / "adapt.csv")
        write_manifest(test_c, self.work / "splits" / transfer / "test.csv")
        src_ckpt, src_info = self.source_model(src, seed)
        log(
            f"{transfer} seed {seed}: {method} ({split['n_adapt']} unlabelled adaptation clips, "
            f"{split['n_test']} test clips)"
        )
        t0 = time.monotonic()
        extra: dict = {}
        ckpt = None
        ep = self.adapt_epochs
        if method == "source_only":
            ckpt = src_ckpt
        elif method == "lalm_zero_shot":
            _, lalm_test, usage = self.lalm_samples(transfer, adapt_c, test_c)
            mean = np.nanmean(np.where(np.isfinite(lalm_test), lalm_test, np.nan), axis=1)
            missing = ~np.isfinite(mean).all(axis=1)
            mean[missing] = 1.0 / len(LABELS)
            # ties between equally voted labels are broken at random (seeded), not towards the first label
            probs = mean + 1e-6 * np.random.default_rng(seed).random(mean.shape)
            probs = probs / probs.sum(axis=1, keepdims=True)
            extra = {
                "answers_missing_clips": int(missing.sum()),
                "lalm_usage": usage,
                "standin": self.lalm_description(transfer),
            }
        elif method in ADAPT or method in VARIANTS:
            spec, over = (
                (ADAPT[method], {}) if method in ADAPT else (ADAPT_METHODS[VARIANTS[method][0]], VARIANTS[method][1])
            )
            cfg = spec.config(**{**recipe_for(spec.config, self.recipe), "epochs": ep, "seed": seed, **over})
            teacher = None
            if spec.needs_teacher:
                lalm_adapt, _, _ = self.lalm_samples(transfer, adapt_c, test_c)
                teacher = FixedSamples(lalm_adapt, name="lalm", labels=LABELS)
            # Only the MI-Fuse rows get the adaptation-half labels, for *reporting only* (teacher/fused/student UA
            # in their summary: the diagnostics of the results); no method lets them reach a loss, a target or a
            # random draw. The others do without (a reporting pass per epoch costs time).
            res = spec.run(
                src_ckpt,
                adapt_c,
                d / f"{method}.pt",
                cfg,
                teacher=teacher,
                progress=True,
                report_labels=method in MIFUSE_ROWS,
            )
            ckpt = d / f"{method}.pt"
            extra = {
                "config": asdict(cfg),
                "teachers": res.summary["details"].get("teachers"),
                "last_epoch": compact(res.history[-1] if res.history else {}),
            }
            if "fusion" in res.summary["details"]:
                extra["diagnostics"] = mifuse_diagnostics(res.summary)
        else:
            raise ValueError(method)
        if ckpt is not None:
            net = load_model(ckpt)
            probs = predict_probs(net, self.test_wavs(transfer, test_c), torch.device("cpu"))
        result = {
            "transfer": transfer,
            "source": src,
            "target": tgt,
            "seed": seed,
            "method": method,
            **self.score(probs, test_c),
            "seconds": round(time.monotonic() - t0, 1),
            "settings": self.settings(),
            "code": code_hash(),
            "adapt_epochs": ep if method not in ("source_only", "lalm_zero_shot") else None,
            "checkpoint": None if ckpt is None else str(ckpt),
            "source_model": src_info,
            "split": split,
            **extra,
        }
        if method == "mi_fuse" and self.onnx_check:
            self.check_onnx(result, ckpt, test_c, probs)
        out_json.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_json.with_name(out_json.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=1) + "\n")
        tmp.replace(out_json)
        log(
            f"{transfer} seed {seed}: {method} test UA {result['ua']:.4f} macro-F1 {result['macro_f1']:.4f} "
            f"[{result['seconds']}s]"
        )
        return result

    def check_onnx(self, result: dict, ckpt: Path, test_c: list[Clip], torch_probs: np.ndarray) -> None:
        """Once per work dir: export this MI-Fuse student to ONNX and score it through the runtime."""
        path = self.work / "results" / "onnx_check.json"
        if path.exists():
            return
        from edgeser.evaluate import predict_probs as runtime_probs
        from edgeser.export import export_onnx

        t0 = time.monotonic()
        onnx = self.work / "onnx" / f"mi_fuse_{result['transfer']}_seed{result['seed']}.onnx"
        onnx.parent.mkdir(parents=True, exist_ok=True)
        exp = export_onnx(ckpt, onnx, parity_audio=[c.path for c in test_c[:4]])
        labels, p = runtime_probs(onnx, test_c, threads=1)
        assert labels == LABELS, labels
        s = self.score(p, test_c)
        check = {
            "transfer": result["transfer"],
            "seed": result["seed"],
            "checkpoint": str(ckpt),
            "onnx": str(onnx),
            "onnx_bytes": exp["bytes"],
            "export_parity": exp["parity"],
            "torch_test_ua": result["ua"],
            "onnx_test_ua": s["ua"],
            "torch_test_macro_f1": result["macro_f1"],
            "onnx_test_macro_f1": s["macro_f1"],
            "max_abs_prob_diff": float(np.abs(p - torch_probs).max()),
            "same_predictions": bool((p.argmax(1) == torch_probs.argmax(1)).all()),
            "ua_matches": abs(s["ua"] - result["ua"]) < 1e-9,
            "seconds": round(time.monotonic() - t0, 1),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(check, indent=1) + "\n")
        log(
            f"ONNX check ({result['transfer']} seed {result['seed']} MI-Fuse student): test UA torch "
            f"{result['ua']:.4f}, ONNX runtime {s['ua']:.4f}, max |dp| {check['max_abs_prob_diff']:.1e}"
        )


ADAPT_CODE = [
    "engine.py",
    "mifuse.py",
    "fusion.py",
    "train.py",
    "data.py",
    "model.py",
    "losses.py",
    "frontend.py",
    "checkpoint.py",
    "baselines/common.py",
    "baselines/shot.py",
    "baselines/nrc.py",
    "teachers/base.py",
    "teachers/classifier.py",
]


def code_hash() -> str:
    """Short hash of the adaptation code the results were made with (parts of it may be uncommitted)."""
    import hashlib

    import edgeser.adapt as pkg

    h = hashlib.sha1()
    root = Path(pkg.__file__).parent
    for name in ADAPT_CODE:
        p = root / name
        h.update(name.encode() + b"\0" + (p.read_bytes() if p.exists() else b"<missing>") + b"\0")
    return h.hexdigest()[:10]


def compact(record: dict) -> dict:
    return {k: v for k, v in record.items() if isinstance(v, (int, float, str)) or v is None}


def mifuse_diagnostics(summary: dict) -> dict:
    """What the MI-Fuse / LALM-SFUDA summary says about the teachers (UAs on the adaptation half,
    reported only), per epoch and at the end."""
    hist = summary.get("history", [])
    initial = summary.get("initial") or {}
    per_epoch = [
        {
            "epoch": r["epoch"],
            "loss": r.get("loss"),
            "ce": r.get("ce"),
            "diversity": r.get("diversity"),
            "target_ua": ({"student": r.get("target_ua"), **r["teacher_ua"]} if "teacher_ua" in r else None),
            "weights": {n: t["mean_weight"] for n, t in r["fusion"]["teachers"].items()},
            "mean_mi": {n: t["mean_mi"] for n, t in r["fusion"]["teachers"].items()},
            "fused_follows": {n: t["fused_follows"] for n, t in r["fusion"]["teachers"].items()},
            "agreement": r["fusion"].get("agreement"),
        }
        for r in hist
    ]
    return {
        "initial": {"source_ua": initial.get("target_ua"), "lalm_ua": (initial.get("teacher_ua") or {}).get("lalm")}
        if initial
        else None,
        "per_epoch": per_epoch,
        "last_fusion": summary["details"].get("fusion"),
        "note": "; ".join(summary.get("notes") or []) or None,
    }


# -------------------------------------------------------------------------------------------- report


def mean_std(xs: list[float]) -> tuple[float, float | None]:
    return float(np.mean(xs)), (float(np.std(xs, ddof=1)) if len(xs) > 1 else None)


def fmt(xs: list[float]) -> str:
    if not xs:
        return "–"
    m, s = mean_std([100 * x for x in xs])
    return f"{m:.1f}" if s is None else f"{m:.1f} ± {s:.1f}"


def collect(work: Path, transfers: list[str], seeds: list[int], methods: list[str]) -> dict:
    res: dict = {}
    for t in transfers:
        for s in seeds:
            for m in methods:
                p = work / "results" / t / f"seed{s}" / f"{m}.json"
                if p.exists():
                    res.setdefault(m, {}).setdefault(t, {})[s] = json.loads(p.read_text())
    return res


def table(res: dict, transfers: list[str], seeds: list[int], methods: list[str], metric: str) -> tuple[str, dict]:
    head = "| method | " + " | ".join(TRANSFER_TITLES[t] for t in transfers) + " | average |"
    rows = [head, "|" + "---|" * (len(transfers) + 2)]
    numbers: dict = {}
    for m in methods:
        cells, nums = [], {}
        for t in transfers:
            xs = [res[m][t][s][metric] for s in seeds if s in res.get(m, {}).get(t, {})]
            cells.append(fmt(xs))
            nums[t] = dict(zip(("mean", "std"), mean_std(xs))) if xs else None
        # average over transfers per seed (seeds with every transfer done), then mean ± std over seeds
        avg = [
            float(np.mean([res[m][t][s][metric] for t in transfers]))
            for s in seeds
            if all(s in res.get(m, {}).get(t, {}) for t in transfers)
        ]
        nums["average"] = dict(zip(("mean", "std"), mean_std(avg))) if avg else None
        numbers[m] = nums
        rows.append(f"| {METHOD_TITLES[m]} | " + " | ".join(cells) + f" | {fmt(avg)} |")
    return "\n".join(rows), numbers


def diagnostics_table(res: dict, transfers: list[str], seeds: list[int]) -> tuple[str, dict]:
    """Per transfer (mean over seeds): stand-in and source UA, and what MI-Fuse's summary says."""
    rows = [
        "| transfer | variant | stand-in UA (test) | stand-in UA (adapt) | source UA (adapt) | classifier teacher UA, "
        "last epoch (adapt) | fused target UA, last epoch (adapt) | MI-Fuse student UA (adapt) | "
        "MI-Fuse student UA (test) | mean fusion weight LALM / classifier, last epoch | "
        "mean MI LALM / classifier (nats) | teachers agree |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    out: dict = {}
    for t, variant in [(t, v) for t in transfers for v in MIFUSE_VARIANTS]:
        runs = [res[variant][t][s] for s in seeds if s in res.get(variant, {}).get(t, {})]
        zs = [res["lalm_zero_shot"][t][s]["ua"] for s in seeds if s in res.get("lalm_zero_shot", {}).get(t, {})]
        if not runs:
            continue
        last = [r["diagnostics"]["per_epoch"][-1] for r in runs]
        ini = [r["diagnostics"]["initial"] or {} for r in runs]

        def avg(xs):
            xs = [x for x in xs if x is not None]
            return float(np.mean(xs)) if xs else None

        d = {
            "standin_test_ua": avg(zs),
            "standin_adapt_ua": avg([i.get("lalm_ua") for i in ini]),
            "source_adapt_ua": avg([i.get("source_ua") for i in ini]),
            "classifier_teacher_adapt_ua": avg([(e["target_ua"] or {}).get("classifier") for e in last]),
            "fused_adapt_ua": avg([(e["target_ua"] or {}).get("fused") for e in last]),
            "student_adapt_ua": avg([(e["target_ua"] or {}).get("student") for e in last]),
            "student_test_ua": avg([r["ua"] for r in runs]),
            "weight_lalm": avg([e["weights"].get("lalm") for e in last]),
            "weight_classifier": avg([e["weights"].get("classifier") for e in last]),
            "mi_lalm": avg([e["mean_mi"].get("lalm") for e in last]),
            "mi_classifier": avg([e["mean_mi"].get("classifier") for e in last]),
            "agreement": avg([e.get("agreement") for e in last]),
        }
        out.setdefault(t, {})[variant] = d

        def p(x):
            return "–" if x is None else f"{100 * x:.1f}"

        def f2(x):
            return "–" if x is None else f"{x:.2f}"

        rows.append(
            f"| {TRANSFER_TITLES[t]} | {METHOD_TITLES[variant]} | {p(d['standin_test_ua'])} | "
            f"{p(d['standin_adapt_ua'])} | "
            f"{p(d['source_adapt_ua'])} | {p(d['classifier_teacher_adapt_ua'])} | {p(d['fused_adapt_ua'])} | "
            f"{p(d['student_adapt_ua'])} | {p(d['student_test_ua'])} | {f2(d['weight_lalm'])} / "
            f"{f2(d['weight_classifier'])} | {f2(d['mi_lalm'])} / {f2(d['mi_classifier'])} | "
            f"{p(d['agreement'])} |"
        )
    return "\n".join(rows), out


def protocol(bench: Bench, transfers: list[str], mode_cfg: dict) -> dict:
    splits = {}
    for t in transfers:
        src, tgt, third = TRANSFERS[t]
        _, _, s_info = bench.source_sets(src)
        _, _, t_info = bench.target_sets(tgt)
        n = t_info["n_adapt"]
        splits[t] = {
            "source": src,
            "target": tgt,
            "standin_trained_on": third,
            "source_split": s_info,
            "target_split": t_info,
            "steps_per_epoch": {
                "shot_nrc_batch64": n // 64 + (n % 64 >= 2),
                "mifuse_sfuda_batch32": n // 32 + (n % 32 >= 2),
            },
        }
    return {
        "labels": LABELS,
        "data": str(DATA),
        "transfers": splits,
        "mode": bench.mode,
        "source_epochs": bench.source_epochs,
        "adapt_epochs": bench.adapt_epochs,
        "clip_caps": mode_cfg["caps"],
        "lalm_k": LALM_K,
        "lalm_temperature": 1.0,
        "library_default_epochs": {
            "source": TrainConfig().epochs,
            **{name: spec.config().epochs for name, spec in ADAPT_METHODS.items()},
        },
        "method_settings": "every adaptation method runs adapt_epochs epochs; all other settings are the "
        "library defaults (MI-Fuse variants: see mifuse_variants)",
        "mifuse_variants": MIFUSE_VARIANTS,
    }


PROTOCOL_MD = """\
* **Transfers** (data: `{data}`): EmoDB→nEMO, nEMO→EmoDB, EmoDB→TurEV-DB, nEMO→TurEV-DB, labels
  angry, happy, neutral, sad. TurEV-DB has no neutral class: its UA and macro-F1 average over the three
  classes it has (`edgeser.metrics`); predicting neutral there is simply a miss.
* **Source model**: `edgeser.adapt.train.train` ({source_epochs_md}) on the source corpus
  only. The last speaker (by id) of each gender is held out of training as validation ({val_speakers}): its UA
  is reported, and picks the epoch kept only with `select="best"` (the default keeps the last). One source
  checkpoint per (source corpus, seed) serves
  every method of both transfers from that corpus.
* **Target split**: the target's speakers, sorted by (gender, id), are assigned alternately to an
  *adaptation* half (first) and a *test* half; this keeps the genders balanced ({target_speakers}; TurEV-DB
  documents no genders). Methods adapt on the adaptation half **without labels**; every number in the tables
  is on the test half (UA = mean recall over the classes present, macro-F1 over the same classes).
  LALM-SFUDA, SHOT and NRC run with `report_labels=False` (they never see the labels).
  MI-Fuse gets `report_labels=True`, which only fills the diagnostics of its summary (UA of the teachers, of the
  fused target and of the student on the adaptation half, shown below); no method lets labels reach a
  loss, a target or a random draw (tested in `tests/test_mifuse.py` and `tests/test_baselines.py`).{caps}
* **Methods**: source only; LALM zero-shot (argmax of the stand-in's mean over its K = {k} sampled answers on the
  test half, ties broken at random with the seed); LALM-SFUDA (`sfuda_adapt`: the student trained on the
  stand-in's soft vote distribution); SHOT (`shot_adapt`); NRC (`nrc_adapt`); MI-Fuse (`mifuse_adapt` with its
  defaults: stand-in + MC-dropout EMA classifier teacher, weights softmax(-u/τ) over teachers with u = {unc}
  {rel}, τ = {tau}); and the same with the literal BALD weighting (`uncertainty="mi",
  relative_uncertainty=False`: u = raw MI, τ = {tau}), the other variant `docs/ADAPTATION.md` discusses.
  All adaptation methods start from the same source
  checkpoint, run **{adapt_epochs} epochs** over the adaptation half ({adapt_epochs_md}) and keep every other
  library default; none selects an epoch (no target labels), the model after the last epoch is scored.
  Steps per epoch (SHOT/NRC at batch 64, MI-Fuse/LALM-SFUDA at batch 32): {steps}.
  Scores come from the torch checkpoints (`edgeser.adapt.data.predict_probs`, whole clips, eval mode).
* **Seeds** {seeds}: the seed sets source training and adaptation (init, batches, crops, dropout). The stand-in
  is one fixed model per training corpus (a real LALM would be fixed too), so LALM zero-shot varies only by
  its tie-breaking. Tables: mean ± sample std over seeds; "average" = mean over the four transfers per seed,
  then mean ± std over seeds.
"""

STANDIN_MD = """\
No real LALM is reachable from this machine. Its place is taken by a **stand-in**: a 3-layer MLP (138 → 128 →
64 → classes, ReLU, dropout 0.3; ~26 k parameters) on 138 handcrafted utterance-level statistics (40-band
log-mel spectral shape, per-band standard deviation over time and of the deltas, frame-energy statistics,
zero-crossing rate, spectral centroid, and a crude autocorrelation pitch track: voiced fraction, log-f0 mean /
std / percentiles / range / mean |delta|), computed after DC removal and peak normalisation
(`benchmarks/cross_corpus/standin.py`). Handcrafted features + MLP: a different architecture from the student
CNN. Each stand-in is trained on every clip of the **third** corpus -- never on the source corpus, never on any
target speaker: TurEV-DB for EmoDB↔nEMO, nEMO for EmoDB→TurEV-DB, EmoDB for nEMO→TurEV-DB (class-balanced
cross-entropy, label smoothing 0.2, input noise 0.5 std, AdamW weight decay 0.1, 200 full-batch steps, seed 0;
this regularisation was picked from three settings by cross-corpus UA on the two corpus pairs that no
stand-in is evaluated on: EmoDB-trained → nEMO and nEMO-trained → EmoDB). Its outputs are the labels of its training
corpus, so **the TurEV-DB-trained stand-in has no neutral output and never answers "neutral"** -- kept on
purpose: it is what a biased LALM looks like, and it caps that teacher's UA on EmoDB and nEMO at 75 %.
It is served by `edgeser.testing.openai_server.serve` on 127.0.0.1 and queried through the real HTTP
client `LALMTeacher` (default prompt, temperature 1.0, K = {k} answers per clip, SQLite answer cache in the work
directory); each answer is one label word sampled from softmax(logits / T).
"""


def write_results(
    bench: Bench,
    args,
    transfers: list[str],
    seeds: list[int],
    methods: list[str],
    mode_cfg: dict,
    wall_s: float,
    load_start: tuple,
) -> None:
    res = collect(bench.work, transfers, seeds, methods)
    ua_md, ua_num = table(res, transfers, seeds, methods, "ua")
    f1_md, f1_num = table(res, transfers, seeds, methods, "macro_f1")
    diag_md, diag = diagnostics_table(res, transfers, seeds)
    standins = {}
    for t in transfers:
        third = TRANSFERS[t][2]
        s = bench.standin(third).describe()
        zs = [res["lalm_zero_shot"][t][x]["ua"] for x in seeds if x in res.get("lalm_zero_shot", {}).get(t, {})]
        standins.setdefault(third, {**s, "zero_shot_test_ua": {}})["zero_shot_test_ua"][t] = (
            float(np.mean(zs)) if zs else None
        )
    onnx_path = bench.work / "results" / "onnx_check.json"
    onnx = json.loads(onnx_path.read_text()) if onnx_path.exists() else None
    compute_s = sum(r["seconds"] for m in res.values() for t in m.values() for r in t.values())
    src_s = sum(json.loads(p.read_text())["seconds"] for p in (bench.work / "sources").glob("*/seed*/done.json"))
    per_seed = {
        m: {
            t: {
                str(s): {k: r[k] for k in ("ua", "macro_f1", "wa", "n", "per_class_recall", "seconds")}
                for s, r in ts.items()
            }
            for t, ts in mt.items()
        }
        for m, mt in res.items()
    }
    missing = [
        f"{t}/seed{s}/{m}" for t in transfers for s in seeds for m in methods if s not in res.get(m, {}).get(t, {})
    ]
    codes = sorted({r.get("code", "?") for m in res.values() for t in m.values() for r in t.values()})
    command = "python benchmarks/cross_corpus/run.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    proto = protocol(bench, transfers, mode_cfg)
    result = {
        "command": command,
        "mode": bench.mode,
        "seeds": seeds,
        "transfers": transfers,
        "methods": methods,
        "protocol": proto,
        "standins": standins,
        "ua": ua_num,
        "macro_f1": f1_num,
        "diagnostics": diag,
        "per_seed": per_seed,
        "onnx_check": onnx,
        "missing": missing,
        "adaptation_code_hashes": codes,
        "adaptation_code_files": ADAPT_CODE,
        "wall_seconds_this_invocation": round(wall_s, 1),
        "load_average_1_5_15_min": {
            "start": [round(x, 2) for x in load_start],
            "end": [round(x, 2) for x in os.getloadavg()],
        },
        "compute_seconds": {"methods": round(compute_s, 1), "source_training": round(src_s, 1)},
        "machine": machine(),
    }
    name = "results_quick" if bench.mode == "quick" else "results"
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    mifuse_defaults = ADAPT_METHODS["mifuse"].config()

    caps = mode_cfg["caps"]
    caps_md = (
        ""
        if caps is None
        else f"\n  **Quick mode subsamples every set** (same share of every speaker × label group): at most "
        f"{caps['source_train']} source-training, {caps['source_val']} source-validation, {caps['adapt']} "
        f"adaptation and {caps['test']} test clips. Quick numbers are a smoke test, not results."
    )
    m = result["machine"]
    la = result["load_average_1_5_15_min"]
    load_md = (
        f"{' / '.join(map(str, la['start']))} at the start, {' / '.join(map(str, la['end']))} at the end, "
        f"over 1 / 5 / 15 min, on {m['cores']} cores"
    )
    val_md = "; ".join(
        f"{c}: {' '.join(v)}"
        for c, v in {TRANSFERS[t][0]: proto["transfers"][t]["source_split"]["val_speakers"] for t in transfers}.items()
    )
    tgt_md = "; ".join(
        f"{c} adapt {' '.join(v['adapt_speakers'])} / test {' '.join(v['test_speakers'])}"
        for c, v in {TRANSFERS[t][1]: proto["transfers"][t]["target_split"] for t in transfers}.items()
    )
    work_md = bench.work.relative_to(REPO) if bench.work.is_relative_to(REPO) else bench.work
    steps_md = "; ".join(
        f"{TRANSFER_TITLES[t]} {v['steps_per_epoch']['shot_nrc_batch64']} / "
        f"{v['steps_per_epoch']['mifuse_sfuda_batch32']}"
        for t, v in proto["transfers"].items()
    )
    standin_rows = "\n".join(
        f"| {s['model_name']} | {k} | {', '.join(s['labels'])} | {100 * s['train_ua']:.1f} | "
        + ", ".join(f"{TRANSFER_TITLES[t]} {100 * v:.1f}" for t, v in s["zero_shot_test_ua"].items() if v is not None)
        + " |"
        for k, s in standins.items()
    )
    onnx_md = (
        "not run in this work directory"
        if onnx is None
        else f"the MI-Fuse student of {TRANSFER_TITLES[onnx['transfer']]} seed {onnx['seed']} was exported with "
        f"`edgeser.export.export_onnx` ({onnx['onnx_bytes'] / 1e6:.2f} MB) and scored through the ONNX "
        f"runtime (`edgeser.evaluate.predict_probs`): test UA {100 * onnx['onnx_test_ua']:.2f} vs "
        f"{100 * onnx['torch_test_ua']:.2f} with torch (match: {onnx['ua_matches']}, same predictions: "
        f"{onnx['same_predictions']}, max |Δp| {onnx['max_abs_prob_diff']:.1e})"
    )
    md = f"""# Cross-corpus source-free adaptation ({"quick mode" if bench.mode == "quick" else "full run"})

Command: `{command}`; git {m.get("git_commit", "?")}; {m.get("cpu", "?")} ({m["cores"]} cores, shared with other
jobs), torch {m.get("torch")}, onnxruntime {m["onnxruntime"]}, Python {m["python"]}.
Adaptation code hash(es) of the results (over the `edgeser/adapt` files listed in the JSON): {", ".join(codes)}.
Wall time of this invocation: {wall_s / 60:.1f} min (load average {
        load_md
    }) (compute recorded in the result files: methods
{compute_s / 60:.1f} min, source training {src_s / 60:.1f} min).{(" Missing: " + ", ".join(missing)) if missing else ""}

## Test-half UA (%)

{ua_md}

## Test-half macro-F1 (%)

{f1_md}

## Protocol

{
        PROTOCOL_MD.format(
            data=proto["data"],
            source_epochs=bench.source_epochs,
            caps=caps_md,
            k=LALM_K,
            val_speakers=val_md,
            target_speakers=tgt_md,
            steps=steps_md,
            tau=mifuse_defaults.tau,
            source_epochs_md=(
                f"library defaults, {TrainConfig().epochs} epochs"
                if bench.source_epochs == TrainConfig().epochs
                else f"library defaults except {bench.source_epochs} epochs instead of {TrainConfig().epochs}"
            ),
            adapt_epochs_md=(
                "the library default of every method"
                if all(bench.adapt_epochs == s.config().epochs for s in ADAPT_METHODS.values())
                else "instead of the library default 15 of every method: reduced identically for "
                "all of them to fit the time budget"
            ),
            unc="H(mean of the teacher's samples)" if mifuse_defaults.uncertainty == "entropy" else "BALD MI",
            rel="centred per teacher (minus its mean over the target clips)"
            if mifuse_defaults.relative_uncertainty
            else "(not centred)",
            adapt_epochs=bench.adapt_epochs,
            seeds=", ".join(map(str, seeds)),
        )
    }
## The LALM stand-in

{STANDIN_MD.format(k=LALM_K)}
| stand-in (model name) | trained on | its labels | training-set UA | zero-shot UA on the target test half |
|---|---|---|---|---|
{standin_rows}

## What the MI-Fuse summaries say (mean over seeds; "adapt" = on the adaptation half, reported only)

{diag_md}

## Export check

{onnx_md}.

Per-seed numbers, per-class recalls and the method configurations are in `{name}.json`; every
(transfer, seed, method) record is in `{work_md}/results/`.
"""
    (args.results / f"{name}.md").write_text(md)
    log(f"wrote {args.results / (name + '.md')} and .json")


# ---------------------------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 seed, subsampled sets, few epochs")
    ap.add_argument("--seeds", type=int, nargs="+", help="default: 0 (quick) or 0 1 2 (full)")
    ap.add_argument("--transfers", nargs="+", choices=list(TRANSFERS), default=list(TRANSFERS))
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=METHODS)
    ap.add_argument("--adapt-epochs", type=int, help="epochs of every adaptation method (mode default otherwise)")
    ap.add_argument("--source-epochs", type=int, help="source-training epochs (mode default otherwise)")
    ap.add_argument("--no-onnx-check", action="store_true", help="skip exporting one MI-Fuse student to ONNX")
    ap.add_argument("--work", type=Path, help="default: runs/cross_corpus/quick or runs/cross_corpus/full")
    ap.add_argument("--results", type=Path, default=HERE, help="where results[_quick].{md,json} go")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    mode = "quick" if args.quick else "full"
    mode_cfg = MODES[mode]
    seeds = args.seeds if args.seeds is not None else mode_cfg["seeds"]
    work = args.work or REPO / "runs" / "cross_corpus" / mode
    work.mkdir(parents=True, exist_ok=True)
    bench = Bench(
        mode,
        work,
        args.adapt_epochs or mode_cfg["adapt_epochs"],
        args.source_epochs or mode_cfg["source_epochs"],
        mode_cfg["caps"],
        not args.no_onnx_check,
    )
    log(
        f"{mode} mode: seeds {seeds}, transfers {args.transfers}, methods {args.methods}, source epochs "
        f"{bench.source_epochs}, adaptation epochs {bench.adapt_epochs}, work dir {work}"
    )
    t0 = time.monotonic()
    load_start = os.getloadavg()
    try:
        for seed in seeds:
            for transfer in args.transfers:
                for method in args.methods:
                    bench.run_one(transfer, seed, method)
        write_results(bench, args, args.transfers, seeds, args.methods, mode_cfg, time.monotonic() - t0, load_start)
    finally:
        bench.close()
    log(f"done in {(time.monotonic() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()

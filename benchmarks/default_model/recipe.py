"""The recipe of the bundled default model: train on the three corpora of ../shared/data with
speakers held out, export to ONNX, evaluate per corpus on the held-out test speakers.

    python benchmarks/default_model/recipe.py            # (make default-model)

Splits (by speaker, fixed): per corpus some speakers are *test* (reported, never seen in training
or model selection), some *validation* (choose the best epoch), the rest train.
Writes runs/default_model/*, edgeser/runtime/default_model/edgeser-default.onnx and
benchmarks/default_model/results.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import REPO, corpus, machine, write_manifest  # noqa: E402

from edgeser.adapt.train import TrainConfig, train  # noqa: E402
from edgeser.evaluate import predict_probs, reference_for  # noqa: E402
from edgeser.export import export_onnx  # noqa: E402
from edgeser.metrics import evaluate  # noqa: E402

LABELS = ["angry", "happy", "neutral", "sad"]
# held-out speakers: one female and one male where gender is known (TurEV-DB documents none)
TEST = {"emodb": {"03", "08"}, "nemo": {"EB0", "KS0"}, "turev_db": {"1358"}}
VAL = {"emodb": {"09", "10"}, "nemo": {"IC0"}, "turev_db": {"1984"}}
ONNX_OUT = REPO / "edgeser" / "runtime" / "default_model" / "edgeser-default.onnx"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "default_model")
    ap.add_argument("--onnx", type=Path, default=ONNX_OUT)
    ap.add_argument("--results", type=Path, default=REPO / "benchmarks" / "default_model")
    args = ap.parse_args()

    splits = {"train": [], "val": []}
    tests = {}
    for name in TEST:
        clips = corpus(name)
        tests[name] = [c for c in clips if c.speaker in TEST[name]]
        splits["val"] += [c for c in clips if c.speaker in VAL[name]]
        splits["train"] += [c for c in clips if c.speaker not in TEST[name] | VAL[name]]
    w = args.work
    for k, v in splits.items():
        write_manifest(v, w / f"{k}.csv")
    for k, v in tests.items():
        write_manifest(v, w / f"test_{k}.csv")

    t0 = time.time()
    cfg = TrainConfig(epochs=args.epochs, seed=args.seed)
    res = train(splits["train"], splits["val"], w / "model.pt", cfg, labels=LABELS)
    train_s = time.time() - t0
    args.onnx.parent.mkdir(parents=True, exist_ok=True)
    card = (
        "Trained on EmoDB (CC0), nEMO (CC BY-NC-SA 4.0) and TurEV-DB (CC BY-NC-ND 4.0): "
        "non-commercial use only; see MODEL_CARD.md"
    )
    exp = export_onnx(w / "model.pt", args.onnx, extra_metadata={"model_card": card, "data": "emodb+nemo+turev_db"})

    per_corpus = {}
    for name, clips in tests.items():
        labels, probs = predict_probs(args.onnx, clips)
        m = evaluate(probs, labels, reference_for(clips, labels))
        per_corpus[name] = {
            k: m[k]
            for k in ("n", "ua", "wa", "macro_f1", "ece", "nll", "brier", "per_class_recall", "confusion_matrix")
        }
        print(f"{name}: UA {m['ua']:.4f} macro-F1 {m['macro_f1']:.4f} (n={m['n']})", file=sys.stderr)
    result = {
        "command": "python benchmarks/default_model/recipe.py " + " ".join(sys.argv[1:]),
        "train_config": {"epochs": args.epochs, "seed": args.seed},
        "splits": {
            "test_speakers": {k: sorted(v) for k, v in TEST.items()},
            "val_speakers": {k: sorted(v) for k, v in VAL.items()},
            "n_train": len(splits["train"]),
            "n_val": len(splits["val"]),
        },
        "best_val_ua": res.best_val_ua,
        "train_seconds": round(train_s, 1),
        "onnx": {
            "path": str(args.onnx.relative_to(REPO)) if args.onnx.is_relative_to(REPO) else str(args.onnx),
            "bytes": exp["bytes"],
            "parity": exp["parity"],
        },
        "test": per_corpus,
        "mean_ua": sum(v["ua"] for v in per_corpus.values()) / len(per_corpus),
        "machine": machine(),
    }
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    rows = "\n".join(
        f"| {k} | {v['n']} | {v['ua']:.3f} | {v['macro_f1']:.3f} | {v['wa']:.3f} | {v['ece']:.3f} |"
        for k, v in per_corpus.items()
    )
    md = f"""# Default model: held-out-speaker results

Command: `{result["command"]}` (git {result["machine"].get("git_commit", "?")}), {args.epochs} epochs, seed {args.seed},
{result["splits"]["n_train"]} training clips, {result["splits"]["n_val"]} validation clips (best epoch by validation UA:
{res.best_val_ua:.3f}), trained in {train_s:.0f} s on {result["machine"].get("cpu", "?")} ({result["machine"]["cores"]} cores).
Evaluated with the exported ONNX model through the runtime (`edgeser.evaluate.predict_probs`).

Test speakers (never used for training or model selection): {result["splits"]["test_speakers"]}.

| corpus | clips | UA | macro-F1 | WA | ECE |
|---|---|---|---|---|---|
{rows}

Mean UA over corpora: {result["mean_ua"]:.3f}. TurEV-DB has no neutral class: its UA is the mean recall over
its three classes. ONNX size {exp["bytes"] / 1e6:.2f} MB; parity with torch on the demo clips: max |Δp|
{exp["parity"]["max_abs_prob_diff"]:.1e} (whole clips), {exp["parity"]["max_abs_prob_diff_streamed"]:.1e} (streamed).
Versions: {json.dumps(result["machine"])}
"""
    (args.results / "results.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()

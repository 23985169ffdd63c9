"""How much a speaker-normalised model needs of its speaker after deployment, on real data:

    python bench/enrolment.py RUN_DIR [RUN_DIR ...] [--bits 8] [--draws 10] [--prior-weight W]

For each run trained with ``data.normalize=speaker`` (use leave-one-speaker-out runs, so the
test speaker was never seen), the run is exported as ``ser export`` does (its LAQ allocation,
or ``--bits N``) and its test utterances are predicted by the numpy runtime (``ser predict``'s
code) with the speaker's statistics taken from

- the training protocol: all of the speaker's test utterances (what results.json measured);
- enrolment: k recordings of the same speaker drawn at random from the speaker's *other*
  test utterances (never the one being predicted), ``--draws`` seeded draws per utterance;
- ``--adapt``: a running estimate over the speaker's utterances in a random order (each
  utterance updates it and is then predicted with it), ``--draws`` seeded orders;
- nothing: the training population's statistics (the fallback).

Accuracy and UAR are pooled over every test utterance of every run (mean ± sd over draws).
``--prior-weight`` overrides the model's shrinkage toward the population at deployment only.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from ser.dsp.audio import load_audio
from ser.export import ExportSource, write_serq
from ser.runtime.features import Extractor
from ser.runtime.model import QuantizedModel

KS = (1, 2, 3, 5, 10, 20)
ADAPT_POSITIONS = ((1, 1), (2, 5), (6, 20), (21, None))


def scores(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> tuple[float, float]:
    """Accuracy and UAR (mean per-class recall over the classes present)."""
    recalls = [np.mean(predicted[labels == c] == c) for c in range(n_classes) if np.any(labels == c)]
    return float(np.mean(predicted == labels)), float(np.mean(recalls))


class Fold:
    """One run's exported model and its test utterances' runtime features."""

    def __init__(self, run_dir: Path, bits: int | None, prior_weight: float | None, work: Path) -> None:
        source = ExportSource.load(run_dir, bits)
        if source.normalize != "speaker":
            raise SystemExit(
                f"{run_dir}: trained with data.normalize={source.normalize}; this bench needs speaker runs"
            )
        write_serq(source, work / f"{run_dir.name}.serq")
        self.model = QuantizedModel.load(work / f"{run_dir.name}.serq")
        if prior_weight is not None:
            self.model.prior_weight = prior_weight
        results = json.loads((run_dir / "results.json").read_text())
        tests = results["test_predictions"]
        assert self.model.classes == results["classes"]
        self.labels = np.array(tests["labels"])
        self.speakers = np.array(tests["speakers"])
        extractor = Extractor(self.model.features)
        self.features = np.stack([extractor(load_audio(p, self.model.features.sample_rate)) for p in tests["paths"]])
        self.torch_predictions = np.array(tests["models"]["laq" if bits is None else f"fixed/{bits}"])
        self.bits = source.bits

    def predict(self, index, stats) -> np.ndarray:
        return self.model.probabilities(self.features[index], stats).argmax(axis=1)

    def training_protocol(self) -> np.ndarray:
        out = np.empty(len(self.labels), dtype=np.int64)
        for speaker in np.unique(self.speakers):
            rows = np.flatnonzero(self.speakers == speaker)
            out[rows] = self.predict(rows, self.model.enrol(self.features[rows]))
        return out

    def population(self) -> np.ndarray:
        return self.predict(np.arange(len(self.labels)), self.model.population)

    def enrolment(self, k: int, rng: np.random.Generator) -> np.ndarray:
        out = np.empty(len(self.labels), dtype=np.int64)
        for i in range(len(self.labels)):
            others = np.flatnonzero((self.speakers == self.speakers[i]) & (np.arange(len(self.labels)) != i))
            if len(others) < k:
                raise SystemExit(f"speaker {self.speakers[i]} has {len(others) + 1} test utterances, too few for k={k}")
            out[i] = self.predict([i], self.model.enrol(self.features[rng.choice(others, size=k, replace=False)]))[0]
        return out

    def adapt(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Predictions and each utterance's position (1-based) in its speaker's random order."""
        out, position = np.empty(len(self.labels), dtype=np.int64), np.empty(len(self.labels), dtype=np.int64)
        for speaker in np.unique(self.speakers):
            running = self.model.running()
            for n, i in enumerate(rng.permutation(np.flatnonzero(self.speakers == speaker)), start=1):
                out[i], position[i] = self.predict([i], running.update(self.features[i]))[0], n
        return out, position


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+", help="run directories of data.normalize=speaker runs")
    parser.add_argument("--bits", type=int, help="export every layer at N bits instead of the run's LAQ allocation")
    parser.add_argument("--draws", type=int, default=10, help="random enrolment draws / adapt orders (default 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prior-weight", type=float, help="override the model's prior weight at deployment")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp())
    folds = [Fold(run, args.bits, args.prior_weight, work) for run in sorted(args.runs)]
    n_classes = len(folds[0].model.classes)
    labels = np.concatenate([f.labels for f in folds])
    pooled = lambda parts: scores(labels, np.concatenate(parts), n_classes)  # noqa: E731

    training = [f.training_protocol() for f in folds]
    agree = np.mean(np.concatenate(training) == np.concatenate([f.torch_predictions for f in folds]))
    rows = [("training protocol: all the speaker's test utterances", "all", [pooled(training)])]
    for k in KS:
        rngs = [np.random.default_rng([args.seed, k, d]) for d in range(args.draws)]
        rows.append(
            (
                f"enrolment: {k} other recording{'s' * (k > 1)} of the speaker",
                str(k),
                [pooled([f.enrolment(k, rng) for f in folds]) for rng in rngs],
            )
        )
    adapted = []
    for d in range(args.draws):
        rng = np.random.default_rng([args.seed, 1000, d])
        adapted.append([f.adapt(rng) for f in folds])
    rows.append(("--adapt: running estimate, random order", "0..i", [pooled([p for p, _ in a]) for a in adapted]))
    for lo, hi in ADAPT_POSITIONS:
        subset = []
        for a in adapted:
            predicted, position = np.concatenate([p for p, _ in a]), np.concatenate([q for _, q in a])
            keep = (position >= lo) & (position <= (hi or position.max()))
            subset.append(scores(labels[keep], predicted[keep], n_classes))
        where = f"{lo}" if lo == hi else f"{lo}–{hi}" if hi else f"{lo}+"
        rows.append((f"  --adapt, utterances {where} of the speaker", "0..i", subset))
    rows.append(("none: training population's statistics", "0", [pooled([f.population() for f in folds])]))

    def cell(values: list[float]) -> str:
        return f"{np.mean(values):.3f}" if len(values) == 1 else f"{np.mean(values):.3f} ± {np.std(values):.3f}"

    bits = (
        "LAQ " + ", ".join(str(sorted(set(f.bits.values()))) for f in folds)
        if args.bits is None
        else f"{args.bits}-bit"
    )
    weight = folds[0].model.prior_weight
    print(
        f"{len(folds)} runs, {len(labels)} test utterances, {bits} .serq, prior weight {weight:g}, "
        f"{args.draws} draws; training protocol agrees with the torch model on {agree:.1%} of utterances\n"
    )
    print("| speaker statistics from | recordings | accuracy | UAR |")
    print("|---|---|---|---|")
    for name, k, values in rows:
        print(f"| {name} | {k} | {cell([a for a, _ in values])} | {cell([u for _, u in values])} |")


if __name__ == "__main__":
    main()

"""Aggregate a multirun directory: mean ± std over seeds/folds, tables, plots, TensorBoard.

    python -m ser.report multirun/2026-11-21_12-00-00      (or: ser report …)

(``ser.report.run`` is the report of a single run, written by the pipeline.)

Every job directory of the sweep (one with ``.hydra/overrides.yaml``) counts: finished jobs
by their ``results.json``, failed ones by ``failed.json`` (or by having neither). Jobs are
grouped by the overrides that vary across the sweep, except the replicate keys (``seed`` and
``data.split.fold`` by default), over which means and standard deviations are taken.

Where jobs kept their test predictions (``test_predictions`` in results.json), each group's
predictions are also pooled: UAR and WA over every test utterance of every fold at once,
which is how k-fold and leave-one-speaker-out results are reported in SER (a mean over
folds weighs a 30-utterance fold like a 70-utterance one). A sweep over seeds too (e.g.
``experiment=kfold seed=0,1,2``, repeated k-fold: the seed also reshuffles the folds) is pooled
per seed as well, and the spread of those pooled scores across seeds is reported beside them:
how much a claim moves when nothing but the random state changes.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402

from ser.errors import SERError  # noqa: E402
from ser.io import atomic_path, write_text  # noqa: E402
from ser.report.plots import accuracy_axes, draw_curve, finish, save_figure  # noqa: E402
from ser.report.run import CLASSIC_NAMES  # noqa: E402
from ser.results import FILENAME, RunResults  # noqa: E402

REPLICATE_KEYS = ("seed", "data.split.fold")
BITS = (8, 7, 6, 5, 4, 3, 2, 1)


@dataclass
class Job:
    path: Path
    overrides: dict[str, str]
    results: RunResults | None
    error: str | None


@dataclass
class Group:
    key: tuple[tuple[str, str], ...]
    jobs: list[Job] = field(default_factory=list)

    @property
    def name(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.key) or "all"


SCORES = ("val_acc", "test_acc", "test_uar", "size_kb", "avg_bits")


def _metrics(results: RunResults) -> dict[str, float]:
    """The numbers that are averaged, flattened to ``section/metric`` names."""
    baseline = results.baseline
    out = {
        f"baseline/{k}": getattr(baseline, k)
        for k in ("val_acc", "val_uar", "test_acc", "test_uar", "size_kb")
        if getattr(baseline, k) is not None
    }
    out["n_params"] = results.n_params
    for row in results.fixed or []:
        out.update({f"fixed{row.bits}/{k}": getattr(row.scores, k) for k in SCORES})
    laq = results.laq
    if laq:
        out.update({f"laq/{k}": getattr(laq.scores, k) for k in SCORES})
        out.update({"laq/evaluations": laq.evaluations, "laq/search_s": laq.search_s})
        if laq.qat:
            out.update({f"laq_qat/{k}": getattr(laq.qat.scores, k) for k in ("val_acc", "test_acc")})
    for record in results.classic or []:
        out.update({f"classic/{record.name}/{k}": getattr(record, k) for k in ("test_acc", "test_uar", "C")})
    greedy = results.greedy
    if greedy:
        out.update({f"greedy/{k}": getattr(greedy.scores, k) for k in ("val_acc", "test_acc", "avg_bits", "size_kb")})
        out["greedy/evaluations"] = greedy.evaluations
    transfer = results.transfer
    if transfer:
        out["transfer/teacher_test_acc"] = transfer.teacher.source_test_acc
        if transfer.zero_shot.test_acc is not None:
            out["transfer/zero_shot_test_acc"] = transfer.zero_shot.test_acc
        for k in ("label_agreement", "chance_agreement", "edges"):
            out[f"transfer/graph_{k}"] = getattr(transfer.graph, k)
    return out


def _natural(path: Path) -> list:
    """Job 2 before job 10: sweep directories are numbered."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in path.parts]


def find_jobs(root: Path) -> list[Job]:
    jobs = []
    for overrides_file in sorted(root.rglob(".hydra/overrides.yaml"), key=_natural):
        job_dir = overrides_file.parent.parent
        overrides = {}
        for item in yaml.safe_load(overrides_file.read_text()) or []:
            key, _, value = str(item).partition("=")
            overrides[key.lstrip("+~")] = value
        results_file, failed_file = job_dir / FILENAME, job_dir / "failed.json"
        results = RunResults.load(results_file) if results_file.exists() else None
        error = None
        if results is None:
            error = (
                json.loads(failed_file.read_text())["error"]
                if failed_file.exists()
                else "no results.json (job did not finish)"
            )
        jobs.append(Job(job_dir, overrides, results, error))
    return jobs


def group_jobs(jobs: Sequence[Job], replicate_keys: Sequence[str] = REPLICATE_KEYS) -> list[Group]:
    keys = sorted({k for j in jobs for k in j.overrides})
    varying = [k for k in keys if k not in replicate_keys and len({j.overrides.get(k) for j in jobs}) > 1]
    groups: dict[tuple, Group] = {}
    for job in jobs:
        key = tuple((k, job.overrides.get(k, "")) for k in varying)
        groups.setdefault(key, Group(key)).jobs.append(job)
    return list(groups.values())


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def summarize(group: Group) -> dict[str, tuple[float, float]]:
    per_job = [_metrics(j.results) for j in group.jobs if j.results is not None]
    names = sorted({k for m in per_job for k in m})
    return {k: mean_std([m[k] for m in per_job if k in m]) for k in names}


# Pooled models in table order: what results.json's test_predictions call them, what the tables say.
POOLED_NAMES = {
    "baseline": "32-bit baseline",
    **{f"fixed/{b}": f"{b}-bit fixed" for b in BITS},
    "laq_before_recovery": "LAQ before recovery",
    "laq": "LAQ",
    "laq_qat": "LAQ + QAT fine-tuning",
    "greedy": "sensitivity greedy",
    **{name: f"{title} (same inputs)" for name, title in CLASSIC_NAMES.items()},
}


@dataclass(frozen=True)
class Pooled:
    """One model's test predictions over all jobs of a group, scored at once."""

    uar: float
    wa: float
    n: int
    jobs: int
    uar_per_job: tuple[float, float]  # mean, sample std
    wa_per_job: tuple[float, float]
    seeds: int = 1
    uar_per_seed: tuple[float, float] = (math.nan, 0.0)  # each seed's jobs pooled on their own: mean, sample std
    wa_per_seed: tuple[float, float] = (math.nan, 0.0)

    @property
    def repeated(self) -> bool:
        """Several seeds, each pooling several jobs (folds): only then do per-seed scores add anything."""
        return 1 < self.seeds < self.jobs


def _uar_wa(truth: Sequence[str], predicted: Sequence[str]) -> tuple[float, float]:
    """Unweighted average recall over the classes present in ``truth``, and accuracy."""
    truth_arr, pred_arr = np.asarray(truth), np.asarray(predicted)
    recalls = [float((pred_arr[truth_arr == c] == c).mean()) for c in np.unique(truth_arr)]
    return float(np.mean(recalls)), float((truth_arr == pred_arr).mean())


def pooled(group: Group) -> dict[str, Pooled]:
    """Pooled UAR and WA of every model that all finished jobs of ``group`` kept predictions for.

    Labels and predictions are compared by class name, so jobs whose class lists differ (e.g.
    corpora with other emotions) still pool correctly.
    """
    jobs = [j.results for j in group.jobs if j.results is not None and j.results.test_predictions]
    if not jobs:
        return {}
    names = [name for name in POOLED_NAMES if all(name in r.test_predictions.models for r in jobs)]
    out = {}
    for name in names:
        truth, predicted, per_job = [], [], []
        by_seed: dict[int, tuple[list[str], list[str]]] = {}
        for r in jobs:
            classes, kept = r.classes, r.test_predictions
            t = [classes[i] for i in kept.labels]
            p = [classes[i] for i in kept.models[name]]
            truth += t
            predicted += p
            per_job.append(_uar_wa(t, p))
            seed_truth, seed_predicted = by_seed.setdefault(r.seed, ([], []))
            seed_truth += t
            seed_predicted += p
        uar, wa = _uar_wa(truth, predicted)
        per_seed = [_uar_wa(t, p) for t, p in by_seed.values()]
        out[name] = Pooled(
            uar,
            wa,
            len(truth),
            len(jobs),
            mean_std([u for u, _ in per_job]),
            mean_std([w for _, w in per_job]),
            len(per_seed),
            mean_std([u for u, _ in per_seed]),
            mean_std([w for _, w in per_seed]),
        )
    return out


def _pooled_lines(group: Group, stats: dict[str, tuple[float, float]]) -> list[str]:
    """The pooled table of one group: every model's UAR and WA over all its test utterances."""
    scores = pooled(group)
    if not scores:
        return []
    first = next(iter(scores.values()))
    seeds = first.repeated
    size_key = {
        "baseline": "baseline/size_kb",
        "laq": "laq/size_kb",
        "laq_before_recovery": "laq/size_kb",
        "greedy": "greedy/size_kb",
    }
    bits_key = {"laq": "laq/avg_bits", "laq_before_recovery": "laq/avg_bits", "greedy": "greedy/avg_bits"}
    if seeds:
        lines = [
            f"Pooled over the {first.n} test predictions of {first.jobs} job(s) from {first.seeds} seeds; beside, "
            "each seed's jobs pooled on their own (mean ± std over the seeds) and the per-job mean ± std:",
            "",
            "| model | pooled UAR (%) | pooled WA (%) | pooled UAR per seed (%) | pooled WA per seed (%) "
            "| UAR per job (%) | WA per job (%) | size (KB) | avg bits |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
    else:
        lines = [
            f"Pooled over the {first.n} test utterances of {first.jobs} job(s) (per-job mean ± std beside):",
            "",
            "| model | pooled UAR (%) | pooled WA (%) | UAR per job (%) | WA per job (%) | size (KB) | avg bits |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
    for name, score in scores.items():
        bits = name.split("/")[1] if name.startswith("fixed/") else None
        size = _num(stats, f"fixed{bits}/size_kb", 1) if bits else _num(stats, size_key.get(name, ""), 1)
        avg_bits = bits or ("32" if name == "baseline" else _num(stats, bits_key.get(name, "")))
        per_seed = (
            (
                f"| {100 * score.uar_per_seed[0]:.2f} ± {100 * score.uar_per_seed[1]:.2f} "
                f"| {100 * score.wa_per_seed[0]:.2f} ± {100 * score.wa_per_seed[1]:.2f} "
            )
            if seeds
            else ""
        )
        lines.append(
            f"| {POOLED_NAMES[name]} | {100 * score.uar:.2f} | {100 * score.wa:.2f} {per_seed}"
            f"| {100 * score.uar_per_job[0]:.2f} ± {100 * score.uar_per_job[1]:.2f} "
            f"| {100 * score.wa_per_job[0]:.2f} ± {100 * score.wa_per_job[1]:.2f} | {size} | {avg_bits} |"
        )
    return lines + [""]


def _pct(stats: dict[str, tuple[float, float]], key: str) -> str:
    if key not in stats:
        return "–"
    mean, std = stats[key]
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def _num(stats: dict[str, tuple[float, float]], key: str, digits: int = 2) -> str:
    if key not in stats:
        return "–"
    mean, std = stats[key]
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _comparison(groups: Sequence[Group]) -> list[str]:
    """One row per group, full precision next to LAQ: how models (or settings) compare at a glance."""
    lines = [
        "## Comparison",
        "",
        "| group | params | fp32 test acc (%) | fp32 size (KB) | LAQ test acc (%) | LAQ size (KB) | LAQ avg bits "
        "| fp32 pooled UAR (%) | LAQ pooled UAR (%) | SVM pooled UAR (%) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for group in groups:
        stats = summarize(group)
        scores = pooled(group)
        uar = {name: f"{100 * scores[name].uar:.2f}" if name in scores else "–" for name in ("baseline", "laq", "svm")}
        params = f"{stats['n_params'][0]:,.0f}" if "n_params" in stats else "–"
        lines.append(
            f"| {group.name} | {params} | {_pct(stats, 'baseline/test_acc')} | {_num(stats, 'baseline/size_kb', 1)} "
            f"| {_pct(stats, 'laq/test_acc')} | {_num(stats, 'laq/size_kb', 1)} | {_num(stats, 'laq/avg_bits')} "
            f"| {uar['baseline']} | {uar['laq']} | {uar['svm']} |"
        )
    return lines + [""]


def render_summary(root: Path, groups: Sequence[Group]) -> str:
    lines = [f"# Summary of {root}", ""]
    if len(groups) > 1:
        lines += _comparison(groups)
    for group in groups:
        stats = summarize(group)
        done = [j for j in group.jobs if j.results is not None]
        lines += [f"## {group.name}", "", f"{len(done)} of {len(group.jobs)} jobs finished; mean ± std over them.", ""]
        if not done:
            continue
        lines += [
            "| model | size (KB) | val acc (%) | test acc (%) | test UAR (%) | avg bits |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        lines.append(
            f"| 32-bit baseline | {_num(stats, 'baseline/size_kb', 1)} | {_pct(stats, 'baseline/val_acc')} "
            f"| {_pct(stats, 'baseline/test_acc')} | {_pct(stats, 'baseline/test_uar')} | 32 |"
        )
        for b in BITS:
            if f"fixed{b}/test_acc" in stats:
                lines.append(
                    f"| {b}-bit fixed | {_num(stats, f'fixed{b}/size_kb', 1)} | {_pct(stats, f'fixed{b}/val_acc')} "
                    f"| {_pct(stats, f'fixed{b}/test_acc')} | {_pct(stats, f'fixed{b}/test_uar')} | {b} |"
                )
        if "laq/test_acc" in stats:
            lines.append(
                f"| LAQ | {_num(stats, 'laq/size_kb', 1)} | {_pct(stats, 'laq/val_acc')} | {_pct(stats, 'laq/test_acc')} "
                f"| {_pct(stats, 'laq/test_uar')} | {_num(stats, 'laq/avg_bits')} |"
            )
        for name, title in CLASSIC_NAMES.items():
            if f"classic/{name}/test_acc" in stats:
                lines.append(
                    f"| {title} (same inputs; C {_num(stats, f'classic/{name}/C', 1)}) | – | – "
                    f"| {_pct(stats, f'classic/{name}/test_acc')} | {_pct(stats, f'classic/{name}/test_uar')} | – |"
                )
        if "greedy/test_acc" in stats:
            lines.append(
                f"| sensitivity greedy | {_num(stats, 'greedy/size_kb', 1)} | {_pct(stats, 'greedy/val_acc')} "
                f"| {_pct(stats, 'greedy/test_acc')} | – | {_num(stats, 'greedy/avg_bits')} |"
            )
        lines += ["", *_pooled_lines(group, stats)]
        if "laq/test_acc" in stats:
            lines += [
                f"LAQ search: {_num(stats, 'laq/evaluations', 1)} evaluations, {_num(stats, 'laq/search_s', 3)} s."
            ]
        if "laq_qat/test_acc" in stats:
            lines.append(f"LAQ + QAT: val {_pct(stats, 'laq_qat/val_acc')}, test {_pct(stats, 'laq_qat/test_acc')}.")
        if "transfer/teacher_test_acc" in stats:
            lines.append(
                f"Transfer: teacher test accuracy on its source {_pct(stats, 'transfer/teacher_test_acc')}, on this "
                f"corpus' shared emotions {_pct(stats, 'transfer/zero_shot_test_acc')}; "
                f"{_num(stats, 'transfer/graph_edges', 0)} graph edges, "
                f"{_pct(stats, 'transfer/graph_label_agreement')} of them join the same emotion "
                f"(chance {_pct(stats, 'transfer/graph_chance_agreement')})."
            )
        lines.append("")
    failed = [j for g in groups for j in g.jobs if j.results is None]
    lines += ["## Failed jobs", ""]
    lines += [f"- `{j.path}` ({' '.join(f'{k}={v}' for k, v in j.overrides.items())}): {j.error}" for j in failed] or [
        "none"
    ]
    return "\n".join(lines) + "\n"


def _with_pooled(group: Group) -> dict[str, tuple[float, float]]:
    """The group's mean ± std metrics plus ``pooled/<model>/{uar,wa}``: the pooled value and the std over jobs;
    with several seeds also ``pooled/<model>/{uar,wa}_per_seed``: mean and std of the seeds' own pooled scores."""
    stats = dict(summarize(group))
    for name, score in pooled(group).items():
        stats[f"pooled/{name}/uar"] = (score.uar, score.uar_per_job[1])
        stats[f"pooled/{name}/wa"] = (score.wa, score.wa_per_job[1])
        if score.repeated:
            stats[f"pooled/{name}/uar_per_seed"] = score.uar_per_seed
            stats[f"pooled/{name}/wa_per_seed"] = score.wa_per_seed
    return stats


def write_csv(path: Path, groups: Sequence[Group]) -> None:
    group_keys = [k for k, _ in groups[0].key] if groups else []
    summaries = [_with_pooled(g) for g in groups]
    metrics = sorted({k for s in summaries for k in s})
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([*group_keys, "n_jobs", "n_finished", *[f"{m}_{s}" for m in metrics for s in ("mean", "std")]])
        for group, stats in zip(groups, summaries):
            finished = sum(j.results is not None for j in group.jobs)
            row = [v for _, v in group.key] + [len(group.jobs), finished]
            for m in metrics:
                row += list(stats.get(m, (math.nan, math.nan)))
            writer.writerow(row)


def accuracy_vs_bits_figure(groups: Sequence[Group]):
    """Fixed-bit curves (mean ± std) and LAQ stars per group, as the paper's Figures 1 and 3."""
    fig, ax = accuracy_axes(size=(6, 4))
    ax.set_ylabel("test accuracy (%), mean ± std")
    for i, group in enumerate(groups):
        stats = summarize(group)
        if "baseline/test_acc" not in stats:
            continue
        bits = [b for b in BITS if f"fixed{b}/test_acc" in stats]
        laq = (
            (
                stats["laq/avg_bits"][0],
                100 * stats["laq/test_acc"][0],
                stats["laq/avg_bits"][1],
                100 * stats["laq/test_acc"][1],
            )
            if "laq/test_acc" in stats
            else None
        )
        draw_curve(
            ax,
            group.name,
            f"C{i % 10}",
            bits,
            [100 * stats[f"fixed{b}/test_acc"][0] for b in bits],
            [100 * stats[f"fixed{b}/test_acc"][1] for b in bits],
            laq,
        )
    finish(fig, ax, legend_size=7)
    return fig


def accuracy_by_group_figure(groups: Sequence[Group]):
    """Baseline and LAQ test accuracy per group (e.g. per depth, Table 2)."""
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(groups)), 3.5))
    x = np.arange(len(groups))
    stats = [summarize(g) for g in groups]
    for offset, key, label in ((-0.2, "baseline/test_acc", "32-bit"), (0.2, "laq/test_acc", "LAQ")):
        means = [100 * s.get(key, (np.nan, 0))[0] for s in stats]
        stds = [100 * s.get(key, (0, 0))[1] for s in stats]
        ax.bar(x + offset, means, 0.4, yerr=stds, capsize=3, label=label)
    ax.set_xticks(x, [g.name for g in groups], rotation=20, ha="right", fontsize=7)
    ax.set_ylabel("test accuracy (%)")
    ax.legend()
    fig.tight_layout()
    return fig


def _tensorboard(root: Path, groups: Sequence[Group], markdown: str, figures: dict[str, Any]) -> None:
    """One HPARAMS row per group (its overrides → its mean metrics), plus the tables and plots."""
    from torch.utils.tensorboard import SummaryWriter

    log_dir = root / "tensorboard_summary"
    with SummaryWriter(str(log_dir)) as writer:
        writer.add_text("summary", markdown)
        for name, figure in figures.items():
            writer.add_figure(name, figure, close=False)
        for i, group in enumerate(groups):
            stats = summarize(group)
            metrics = {
                f"summary/{k}": v[0] for k, v in stats.items() if k.startswith(("baseline/", "laq/", "classic/"))
            }
            if metrics:
                writer.add_hparams(dict(group.key) or {"group": "all"}, metrics, run_name=f"group{i}")


def report(root: str | Path, replicate_keys: Sequence[str] = REPLICATE_KEYS) -> list[Group]:
    """Write summary.md, summary.csv, the plots and TensorBoard views into ``root``."""
    root = Path(root)
    jobs = find_jobs(root)
    if not jobs:
        raise SERError(f"{root}: no Hydra jobs (.hydra/overrides.yaml) under it; pass a multirun directory")
    groups = group_jobs(jobs, replicate_keys)
    markdown = render_summary(root, groups)
    write_text(root / "summary.md", markdown)
    write_csv(root / "summary.csv", groups)
    figures = {
        "accuracy_vs_bits": accuracy_vs_bits_figure(groups),
        "accuracy_by_group": accuracy_by_group_figure(groups),
    }
    for name, figure in figures.items():
        save_figure(figure, root / f"{name}.png")
    _tensorboard(root, groups, markdown, figures)
    for figure in figures.values():
        plt.close(figure)
    return groups


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ser report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("multirun_dir", type=Path)
    parser.add_argument(
        "--over",
        default=",".join(REPLICATE_KEYS),
        help="comma-separated overrides to average over (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    try:
        groups = report(args.multirun_dir, [k for k in args.over.split(",") if k])
    except SERError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    failed = sum(j.results is None for g in groups for j in g.jobs)
    print((args.multirun_dir / "summary.md").read_text())
    print(
        f"wrote {args.multirun_dir / 'summary.md'}, summary.csv, accuracy_vs_bits.png, accuracy_by_group.png, "
        f"tensorboard_summary/ ({failed} failed job(s))"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

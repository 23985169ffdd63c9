"""The paper's Table 4 (size, accuracy, average bits) and Figure 1 (accuracy vs bits) for one run."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ser.report.plots import accuracy_axes, draw_curve, finish
from ser.results import RunResults, Scores

CLASSIC_NAMES = {"svm": "RBF-SVM", "svm_linear": "linear SVM"}  # results.json's classical models, as tables name them


@dataclass(frozen=True)
class Row:
    model: str
    scores: Scores


def table_rows(results: RunResults) -> list[Row]:
    """Baseline, fixed 8…1, LAQ (and its fine-tuned variant and greedy baseline when present)."""
    base = results.baseline
    rows = [
        Row(
            "32-bit baseline",
            Scores(
                val_acc=base.val_acc,
                test_acc=base.test_acc,
                test_uar=base.test_uar,
                size_kb=base.size_kb,
                avg_bits=base.avg_bits,
            ),
        )
    ]
    rows += [Row(f"{f.bits}-bit fixed", f.scores) for f in results.fixed or []]
    laq = results.laq
    if laq:
        if laq.before_recovery:
            rows.append(Row("LAQ before recovery", laq.before_recovery))
        rows.append(Row("LAQ", laq.scores))
        if laq.qat:
            rows.append(Row("LAQ + QAT fine-tuning", laq.qat.scores))
    if results.greedy:
        rows.append(Row("sensitivity greedy", results.greedy.scores))
    return rows


def render_run(results: RunResults) -> str:
    lines = [
        f"# {results.data} (seed {results.seed}, {results.n_params:,} parameters)",
        "",
        "| model | size (KB) | val acc (%) | test acc (%) | avg bits |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in table_rows(results):
        s = row.scores
        lines.append(
            f"| {row.model} | {s.size_kb:.1f} | {100 * s.val_acc:.2f} | {100 * s.test_acc:.2f} | {s.avg_bits:.2f} |"
        )
    for record in results.classic or []:
        lines += [
            "",
            f"Classical reference on the same inputs and split: {CLASSIC_NAMES[record.name]} (C = {record.C:g}, "
            f"chosen by cross-validation on {record.train_utterances} training utterances): test accuracy "
            f"{100 * record.test_acc:.2f} %, UAR {100 * record.test_uar:.2f} % (the 32-bit model: "
            f"{100 * results.baseline.test_acc:.2f} %, {100 * results.baseline.test_uar:.2f} %).",
        ]
    laq = results.laq
    if laq:
        lines += [
            "",
            f"LAQ: T_margin = {laq.t_margin} pp, weights {laq.weights}, "
            f"{laq.evaluations} evaluations in {laq.search_s:.2f} s.",
        ]
        if laq.quantizer:
            signal = None if laq.signal is None else dataclasses.asdict(laq.signal)
            lines.append(f"Quantizer: {dataclasses.asdict(laq.quantizer)}; search signal: {signal}.")
        budget = laq.budget
        if budget:
            verdict = "met" if budget.met else "**NOT met** (the smallest allocation found is shipped)"
            file_kb = budget.file_kb if budget.file_kb is not None else float("nan")
            lines.append(
                f"Size budget: target_kb={budget.target_kb}, target_bits={budget.target_bits}: {verdict}; "
                f"T_margin chosen {budget.t_margin}; the model file needs about {file_kb:.1f} KB "
                "(weights, biases, scales, standardisation and header)."
            )
            steps = budget.refinement or []
            if len(steps) > 1:
                path = " → ".join(
                    f"{list(step.bits.values())} ({100 * step.quality:.2f}, {step.file_kb:.1f} KB)" for step in steps
                )
                lines.append(
                    f"Budget refinement (score, file size): {path}; the widths below are the last, "
                    "their tried drops the T_margin ladder's."
                )
            elif steps:
                lines.append(
                    "Budget refinement: no uniform width or one-width move scored higher; the ladder's allocation is kept."
                )
        recovery = laq.recovery
        if recovery:
            lines.append(
                f"Recovery: {recovery.epochs} epochs (lr {recovery.lr}, distillation weight {recovery.distill}), "
                f"epoch {recovery.chosen_epoch} kept (lowest validation KL to full precision), "
                f"{recovery.seconds:.2f} s; the LAQ row is the recovered model."
            )
        lines += [
            "",
            "| layer | params | N_P | N_E | N_V | importance | rank | margin (pp) | widths tried: drop (pp) | bits |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|",
        ]
        for l in laq.layers:
            tried = ", ".join(f"{t.bits}b: {t.drop:.2f}" for t in l.tried or [])
            flag = " (fallback: no width within the margin)" if l.fallback else ""
            ladder = budget.refinement[0].bits.get(l.name) if budget and budget.refinement else None
            if ladder is not None and ladder != l.bits:
                flag += f" (refined from {ladder})"
            lines.append(
                f"| {l.name} | {l.params:,} | {l.n_p:.4f} | {l.n_e:.4f} | {l.n_v:.4f} "
                f"| {l.importance:.4f} | {l.rank} | {l.margin:.3f} | {tried} | {l.bits}{flag} |"
            )
    quantizer = results.laq.quantizer if results.laq else None
    if quantizer is None or quantizer.bias_bits == 32:
        lines += ["", "Sizes count weights at their bit-width and biases and scales at 32 bits; KB = 1000 bytes."]
    else:
        lines += [
            "",
            f"Sizes count weights at their bit-width, quantized layers' biases at {quantizer.bias_bits} bits "
            "(plus a scale) and scales at 32 bits; KB = 1000 bytes.",
        ]
    return "\n".join(lines) + "\n"


def run_figure(results: RunResults):
    """Test accuracy against average bit-width: the fixed curve and the LAQ star (Figure 1)."""
    fig, ax = accuracy_axes(f"{results.data}, seed {results.seed}")
    fixed = sorted((f.scores for f in results.fixed or []), key=lambda s: s.avg_bits)
    laq = results.laq.scores if results.laq else None
    draw_curve(
        ax,
        "",
        "C0",
        [s.avg_bits for s in fixed],
        [100 * s.test_acc for s in fixed],
        laq=(laq.avg_bits, 100 * laq.test_acc, 0.0, 0.0) if laq else None,
    )
    ax.axhline(100 * results.baseline.test_acc, color="gray", linestyle="--", label="32-bit baseline")
    finish(fig, ax)
    return fig

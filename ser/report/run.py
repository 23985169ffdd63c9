"""The paper's Table 4 (size, accuracy, average bits) and Figure 1 (accuracy vs bits) for one run."""

from __future__ import annotations

from typing import Any

from ser.report.plots import accuracy_axes, draw_curve, finish


def table_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Baseline, fixed 8…1, LAQ (and its fine-tuned variant and greedy baseline when present)."""
    base = results["baseline"]
    rows = [{"model": "32-bit baseline", **{k: base[k] for k in ("size_kb", "val_acc", "test_acc", "avg_bits")}}]
    rows += [{"model": f"{f['bits']}-bit fixed", **f} for f in results.get("fixed", [])]
    laq = results.get("laq")
    if laq:
        if laq.get("before_recovery"):
            rows.append({"model": "LAQ before recovery", **laq["before_recovery"]})
        rows.append({"model": "LAQ", **laq})
        if laq.get("qat"):
            rows.append({"model": "LAQ + QAT fine-tuning", **{**laq, **laq["qat"]}})
    if results.get("greedy"):
        rows.append({"model": "sensitivity greedy", **results["greedy"]})
    return rows


def render_run(results: dict[str, Any]) -> str:
    lines = [
        f"# {results['data']} (seed {results['seed']}, {results['n_params']:,} parameters)",
        "",
        "| model | size (KB) | val acc (%) | test acc (%) | avg bits |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in table_rows(results):
        lines.append(
            f"| {row['model']} | {row['size_kb']:.1f} | {100 * row['val_acc']:.2f} | {100 * row['test_acc']:.2f} "
            f"| {row['avg_bits']:.2f} |"
        )
    laq = results.get("laq")
    if laq:
        lines += ["", f"LAQ: T_margin = {laq['t_margin']} pp, weights {laq['weights']}, "
                      f"{laq['evaluations']} evaluations in {laq['search_s']:.2f} s."]
        if laq.get("quantizer"):
            lines.append(f"Quantizer: {laq['quantizer']}; search signal: {laq.get('signal')}.")
        budget = laq.get("budget")
        if budget:
            verdict = "met" if budget["met"] else "**NOT met** (the smallest allocation found is shipped)"
            lines.append(f"Size budget: target_kb={budget['target_kb']}, target_bits={budget['target_bits']}: {verdict}; "
                         f"T_margin chosen {budget['t_margin']}; the model file needs about {budget.get('file_kb', float('nan')):.1f} KB "
                         "(weights, biases, scales, standardisation and header).")
        recovery = laq.get("recovery")
        if recovery:
            lines.append(f"Recovery: {recovery['epochs']} epochs (lr {recovery['lr']}, distillation weight {recovery['distill']}), "
                         f"epoch {recovery['chosen_epoch']} kept (lowest validation KL to full precision), "
                         f"{recovery['seconds']:.2f} s; the LAQ row is the recovered model.")
        lines += [
            "",
            "| layer | params | N_P | N_E | N_V | importance | rank | margin (pp) | widths tried: drop (pp) | bits |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|",
        ]
        for l in laq["layers"]:
            tried = ", ".join(f"{t['bits']}b: {t['drop']:.2f}" for t in l.get("tried", []))
            flag = " (fallback: no width within the margin)" if l.get("fallback") else ""
            lines.append(
                f"| {l['name']} | {l['params']:,} | {l['n_p']:.4f} | {l['n_e']:.4f} | {l['n_v']:.4f} "
                f"| {l['importance']:.4f} | {l['rank']} | {l['margin']:.3f} | {tried} | {l['bits']}{flag} |"
            )
    lines += ["", "Sizes count weights at their bit-width and biases and scales at 32 bits; KB = 1000 bytes."]
    return "\n".join(lines) + "\n"


def run_figure(results: dict[str, Any]):
    """Test accuracy against average bit-width: the fixed curve and the LAQ star (Figure 1)."""
    fig, ax = accuracy_axes(f"{results['data']}, seed {results['seed']}")
    fixed = sorted(results.get("fixed", []), key=lambda f: f["avg_bits"])
    laq = results.get("laq")
    draw_curve(ax, "", "C0", [f["avg_bits"] for f in fixed], [100 * f["test_acc"] for f in fixed],
               laq=(laq["avg_bits"], 100 * laq["test_acc"], 0.0, 0.0) if laq else None)
    ax.axhline(100 * results["baseline"]["test_acc"], color="gray", linestyle="--", label="32-bit baseline")
    finish(fig, ax)
    return fig

"""Figures of evaluation results: per-class AP50 bar charts (one run, or table rows side by side) and FROC
curves, drawn off-screen (Agg) as PNG."""
import os

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .results_io import CLASSES_WITHOUT_GT_KEY, PER_CLASS_AP50_PREFIX

NOT_AVAILABLE = "n/a (no ground truth)"


def per_class_ap50_rows(bbox_results, class_names=None):
    """[(class name, AP50 or None)] from box metrics; None marks a class without ground truth.

    Order: `class_names` when given (a class with no "AP50-<class>" entry is None), else the
    "AP50-<class>" entries followed by the classes listed under "classes_without_ground_truth".
    """
    if class_names is None:
        class_names = [
            key[len(PER_CLASS_AP50_PREFIX):]
            for key in bbox_results
            if key.startswith(PER_CLASS_AP50_PREFIX)
        ]
        class_names += [
            name for name in bbox_results.get(CLASSES_WITHOUT_GT_KEY, []) if name not in class_names
        ]
    return [(name, bbox_results.get(PER_CLASS_AP50_PREFIX + name)) for name in class_names]


def plot_per_class_ap50(bbox_results, path, title, class_names=None):
    """Write a horizontal bar chart of per-class AP50 (percent) to `path` (PNG) and return `path`.

    Classes without ground truth get no bar but an "n/a" label, so they cannot be read as AP 0; the
    overall AP50, when present, is drawn as a dashed line.
    """
    rows = per_class_ap50_rows(bbox_results, class_names)
    if not rows:
        raise ValueError(f"no per-class AP50 entries ('{PER_CLASS_AP50_PREFIX}<class>') to plot "
                         f"for '{title}'")
    figure = Figure(figsize=(7.0, 1.2 + 0.35 * len(rows)))
    FigureCanvasAgg(figure)
    ax = figure.add_subplot(1, 1, 1)
    positions = range(len(rows))
    values = [0.0 if ap is None else ap for _, ap in rows]
    colors = ["lightgray" if ap is None else "tab:blue" for _, ap in rows]
    ax.barh(positions, values, color=colors)
    for y, (_, ap) in zip(positions, rows):
        label, style = (NOT_AVAILABLE, "italic") if ap is None else (f"{ap:.1f}", "normal")
        ax.text((0 if ap is None else ap) + 1, y, label, va="center", fontsize=8, style=style,
                color="dimgray" if ap is None else "black")
    if bbox_results.get("AP50") is not None:
        ax.axvline(bbox_results["AP50"], color="tab:red", linestyle="--",
                   label=f"mean AP50 = {bbox_results['AP50']:.1f}")
        ax.legend(loc="best", fontsize=8)
    ax.set_yticks(list(positions))
    ax.set_yticklabels([name for name, _ in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 110)
    ax.set_xlabel("AP50 (%)")
    ax.set_title(title, fontsize=10)
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=120, format="png")
    return path


def plot_froc(curves, path, title, fp_rates):
    """Write FROC curves (sensitivity in percent against false positives per image, log2 axis over
    `fp_rates`) to `path` (PNG) and return `path`. `curves`: {label: (fp_per_image, sensitivity, cpm)} with
    sensitivity as fractions; the first curve is drawn thick (the overall one), the rest thin."""
    if not curves:
        raise ValueError(f"no FROC curve to plot for '{title}'")
    figure = Figure(figsize=(7.0, 4.5))
    FigureCanvasAgg(figure)
    ax = figure.add_subplot(1, 1, 1)
    lo, hi = min(fp_rates), max(fp_rates)
    for index, (label, (fppi, sensitivity, cpm)) in enumerate(curves.items()):
        # Extend each step curve to the right edge so that a curve ending early reads as flat, not missing.
        x = list(fppi) + [hi]
        y = [100 * s for s in sensitivity] + [100 * sensitivity[-1]]
        ax.step([max(v, lo / 2) for v in x], y, where="post", linewidth=2.5 if index == 0 else 1.0,
                label=f"{label} (CPM {100 * cpm:.1f})")
    for rate in fp_rates:
        ax.axvline(rate, color="lightgray", linewidth=0.5, zorder=0)
    ax.set_xscale("log", base=2)
    ax.set_xlim(lo / 2, hi)
    ax.set_xticks(list(fp_rates))
    ax.set_xticklabels([f"{r:g}" for r in fp_rates])
    ax.set_ylim(0, 100)
    ax.set_xlabel("false positives per image")
    ax.set_ylabel("sensitivity (%)")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", fontsize=7)
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=120, format="png")


def plot_per_class_ap50_panels(panels, path, title):
    """Write one PNG with a per-class AP50 bar chart per table row, side by side on shared class rows.

    `panels`: [(row label, {class: (mean AP50 or None, 95% half-width or None)})]; None means no ground
    truth (an "n/a" label, no bar) or, for the half-width, fewer than 2 seeds (no error bar). A row without
    any run is drawn empty with "missing".
    """
    if not panels:
        raise ValueError(f"no rows to plot for '{title}'")
    class_names = []
    for _, per_class in panels:
        class_names += [name for name in per_class if name not in class_names]
    figure = Figure(figsize=(1.6 + 2.6 * len(panels), 1.4 + 0.32 * max(len(class_names), 1)))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    positions = list(range(len(class_names)))
    for ax, (label, per_class) in zip(axes, panels):
        for y, name in zip(positions, class_names):
            mean, half_width = per_class.get(name, (None, None))
            if mean is None:
                text = "missing" if not per_class else "n/a"
                ax.text(1, y, text, va="center", fontsize=7, style="italic", color="dimgray")
                continue
            ax.barh(y, mean, color="tab:blue",
                    xerr=None if half_width is None else half_width, ecolor="black", capsize=2)
            ax.text(min(mean + (half_width or 0), 100) + 1, y, f"{mean:.1f}", va="center", fontsize=7)
        ax.set_xlim(0, 118)
        ax.set_xticks([0, 25, 50, 75, 100])
        ax.tick_params(axis="x", labelsize=7)
        ax.set_xlabel("AP50 (%)", fontsize=8)
        ax.set_title(label, fontsize=9)
    axes[0].set_yticks(positions)
    axes[0].set_yticklabels(class_names, fontsize=8)
    axes[0].set_ylim(len(class_names) - 0.5, -0.5)  # first class on top, no row cut off
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=110, format="png")
    return path

"""The plot of CPU per poll and RSS against watched tasks (matplotlib, Agg backend)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def plot_scaling(rows: Sequence[Mapping[str, Any]], reference_us: float | None, path: Path) -> None:
    """Two panels over the number of watched tasks: daemon CPU per poll (with the minimal
    client's CPU per GET as a line) and daemon RSS."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r.get("cpu_us_per_poll") is not None]
    tasks = [r["tasks"] for r in rows]
    fig, (ax_cpu, ax_rss) = plt.subplots(1, 2, figsize=(10, 4))
    ax_cpu.plot(tasks, [r["cpu_us_per_poll"] for r in rows], "o-", label="daemon")
    if reference_us is not None:
        ax_cpu.axhline(reference_us, color="grey", linestyle="--", label="minimal aiohttp loop")
        ax_cpu.axhline(reference_us * 1.3, color="red", linestyle=":", label="target (x1.3)")
    ax_cpu.set_xscale("log")
    ax_cpu.set_xlabel("watched tasks")
    ax_cpu.set_ylabel("CPU per poll (us)")
    ax_cpu.set_ylim(bottom=0)
    ax_cpu.legend()
    ax_cpu.set_title("CPU per upstream poll")
    ax_rss.plot(tasks, [r["rss_mb"] for r in rows], "o-", color="tab:green", label="daemon")
    ax_rss.axhline(250, color="red", linestyle=":", label="target at 100k")
    ax_rss.set_xscale("log")
    ax_rss.set_xlabel("watched tasks")
    ax_rss.set_ylabel("RSS (MB)")
    ax_rss.set_ylim(bottom=0)
    ax_rss.legend()
    ax_rss.set_title("Resident memory while polling")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_polling(workloads: Mapping[str, Mapping[str, Any]], path: Path) -> None:
    """One panel per workload: mean detection delay against requests per task for each
    schedule (the curves of bench.polling_sim)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    styles = {
        "fixed_interval": ("fixed interval", "tab:grey", "-"),
        "adaptive_50": ("adaptive, 50 samples", "tab:cyan", "-"),
        "adaptive_200": ("adaptive, 200 samples", "tab:blue", "-"),
        "adaptive_1000": ("adaptive, 1,000 samples", "navy", "-"),
        "optimum": ("optimum (true distribution)", "black", "--"),
    }
    for ax, result in zip(axes.flat, workloads.values(), strict=False):
        docs = result["docs_schedule"]
        top = docs["requests_per_task"] * 2.4
        for key, (label, color, line) in styles.items():
            curve = [p for p in result["curves"][key] if p[0] <= top]
            ax.plot([p[0] for p in curve], [p[1] for p in curve], line, color=color, label=label)
        ax.plot(
            docs["requests_per_task"],
            docs["delay_s"],
            "x",
            color="red",
            markersize=9,
            label="docs' schedule (3 s, x1.5, max 30 s)",
        )
        fixed = result["fixed_defaults"]
        ax.plot(
            fixed["requests_per_task"],
            fixed["delay_s"],
            "o",
            color="tab:orange",
            label="daemon's fixed settings",
        )
        ax.set_title(result["label"], fontsize=9)
        ax.set_xlabel("requests per task (mean)")
        ax.set_ylabel("detection delay (mean, s)")
        ax.set_xlim(0, top)
        ax.set_ylim(0, max(docs["delay_s"], fixed["delay_s"]) * 1.6)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)

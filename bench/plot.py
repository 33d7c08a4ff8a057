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

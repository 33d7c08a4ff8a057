"""`python -m bench`: run every scenario and print one JSON object on stdout.

Progress goes to stderr; raw data to bench/out/; the plots to docs/performance.png and
docs/polling.png. `python -m bench --only cpu,latency` runs a subset (for profiling sessions;
`paced`, the steady-pace CPU row, takes ~2.5 min: five interleaved rounds of ~30 s,
`BENCH_PACED_ROUNDS=N` for another number); `polling` (the polling simulation) and
`budget` need no network and take ~15 s; `cluster` (several instances on PostgreSQL, see
bench/cluster.py) needs a PostgreSQL server (`BENCH_POSTGRES_URL`) and takes ~5 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import shutil
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog

from bench import budget_sim, cluster, console, polling_sim, report, scenarios
from bench.fixtures import build_tasks
from bench.mirror import mirror
from bench.plot import plot_polling, plot_scaling
from bench.procs import log

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
PLOT = ROOT / "docs" / "performance.png"
POLLING_PLOT = ROOT / "docs" / "polling.png"
ALL = (
    *("rss", "cpu", "paced", "latency", "delivery", "docs", "console", "tasks", "mirror"),
    *("polling", "budget", "cluster"),
)


async def _guard(name: str, fn: Callable[[], Awaitable[Any]]) -> Any:
    """Run one scenario; a failure is reported in the JSON rather than aborting the rest."""
    t0 = time.monotonic()
    log(f"{name}: start")
    try:
        result = await fn()
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        log(f"{name}: FAILED {exc!r}")
        return {"error": f"{type(exc).__name__}: {exc}", "met": None}
    log(f"{name}: done in {time.monotonic() - t0:.1f}s: {json.dumps(result)[:400]}")
    return result


async def _polling(out: Path) -> dict[str, Any]:
    """The polling simulation; its curves go to bench/out/polling.json and the plot."""
    result = polling_sim.run()
    (out / "polling.json").write_text(json.dumps(result))
    plot_polling(result["workloads"], POLLING_PLOT)
    log(f"plot written to {POLLING_PLOT}")
    for workload in result["workloads"].values():
        del workload["curves"]  # in polling.json; too long for the report
    return result


async def _budget_sim() -> dict[str, Any]:
    return budget_sim.run()


async def run(only: set[str]) -> dict[str, Any]:
    started = time.monotonic()
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    upstream = scenarios.Server("bench.upstream")
    receiver = scenarios.Server("bench.receiver")
    env = scenarios.Env(OUT, upstream, receiver, OUT / "base-100k.db")
    sections: dict[str, Any] = {}
    try:
        if only & {"rss", "cpu", "console"}:
            t0 = time.monotonic()
            build_tasks(env.base_100k, 100_000, registered_at=time.time() - 10)
            log(f"store with 100k tasks built in {time.monotonic() - t0:.1f}s")

        if "cpu" in only:
            scaling = []
            for n in (1_000, 10_000, 100_000):
                scaling.append(
                    await _guard(f"cpu_per_poll[{n}]", lambda n=n: scenarios.cpu_per_poll(env, n))
                )
            ref = await _guard("reference_get", lambda: scenarios.reference_get(env))
            main = scaling[0]
            sections["cpu_per_poll"] = report.cpu_section(
                main.get("cpu_us_per_poll"),
                ref.get("cpu_us_per_get"),
                tasks=main.get("tasks"),
                concurrency=32,
                daemon_polls_per_s=main.get("polls_per_s"),
                reference_gets_per_s=ref.get("gets_per_s"),
                upstream_cpu_us_per_poll=main.get("upstream_cpu_us_per_poll"),
            )
            sections["scaling"] = scaling
            (OUT / "scaling.json").write_text(json.dumps({"rows": scaling, "reference": ref}))
            plot_scaling(scaling, ref.get("cpu_us_per_get"), PLOT)
            log(f"plot written to {PLOT}")

        if "paced" in only:
            sections["paced"] = await _guard("paced", lambda: scenarios.paced(env))

        if "rss" in only:
            idle = await _guard("idle_rss", lambda: scenarios.idle_rss(env))
            restart = await _guard("restart_100k", lambda: scenarios.restart_100k(env))
            idle_mb = idle if isinstance(idle, float) else None
            if isinstance(restart, tuple):
                sections["restart_100k"], rss_100k = restart
            else:
                sections["restart_100k"], rss_100k = restart, None
            sections["rss_100k"] = report.rss_section(idle_mb, rss_100k, 100_000)

        if "latency" in only:
            sections["latency"] = await _guard("latency", lambda: scenarios.latency(env))
        if "delivery" in only:
            sections["delivery"] = await _guard("delivery", lambda: scenarios.delivery(env))
        if "docs" in only:
            sections["docs_loop"] = await _guard("docs_loop", lambda: scenarios.docs_loop(env))
        if "console" in only:
            sections["console"] = await _guard("console", lambda: console.console(env))
        if "tasks" in only:
            sections["tasks_file"] = await _guard("tasks_file", lambda: scenarios.tasks_file(env))
        if "mirror" in only:
            sections["mirror"] = await _guard("mirror", lambda: mirror(OUT, receiver.url))
        if "polling" in only:
            sections["polling"] = await _guard("polling", lambda: _polling(OUT))
            sections["polling_live"] = await _guard(
                "polling_live", lambda: scenarios.polling_live(env)
            )
        if "budget" in only:
            simulated = await _guard("budget_sim", _budget_sim)
            live = await _guard("budget_live", lambda: scenarios.budget_live(env))
            sections["budget"] = report.budget_section(simulated, live)
        if "cluster" in only:
            sections["cluster"] = await _guard(
                "cluster", lambda: cluster.cluster(OUT, upstream, receiver)
            )
    finally:
        upstream.close()
        receiver.close()
    meta = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    return report.assemble(sections, meta=meta)


def main() -> None:
    # The store logs through structlog; stdout is reserved for the one JSON object.
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    )
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--only", default=",".join(ALL), help=f"comma list of {','.join(ALL)}")
    args = parser.parse_args()
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    result = asyncio.run(run(only))
    (OUT / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

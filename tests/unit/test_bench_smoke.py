"""The bench's pure helpers: percentiles and the report it prints (no benchmark runs here)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bench import report
from bench.upstream import completion_ms, status_body


def test_percentile_interpolates_between_closest_ranks() -> None:
    values = [0.1 * i for i in range(1, 101)]  # 0.1 .. 10.0
    assert report.percentile(values, 50) == pytest.approx(5.05)
    assert report.percentile(values, 99) == pytest.approx(9.901)
    assert report.percentile(values, 0) == pytest.approx(0.1)
    assert report.percentile(values, 100) == pytest.approx(10.0)
    assert report.percentile([3.0], 99) == 3.0
    assert report.percentile([], 50) is None
    with pytest.raises(ValueError, match="percentile"):
        report.percentile([1.0], 101)


def test_report_says_which_targets_are_met_and_is_one_json_object() -> None:
    sections = {
        "cpu_per_poll": report.cpu_section(120.0, 100.0),
        "rss_100k": report.rss_section(50.0, 300.0, 100_000),
        "latency": report.latency_section([0.1] * 99 + [0.29], 0.2),
        "restart_100k": report.restart_section(None),
        "delivery": report.delivery_section(2500.0, 3000.0),
        "docs_loop": {"p99_ms": 3000.0},
    }
    result = report.assemble(sections, meta={"cpus": 2})

    assert result["cpu_per_poll"]["ratio"] == 1.2
    assert result["targets_met"] == {
        "cpu_per_poll": True,
        "rss_100k": False,
        "latency": True,
        "restart_100k": None,  # not measured
        "delivery": True,
    }
    assert result["all_met"] is False
    assert result["rss_100k"]["bytes_per_task"] == pytest.approx(2621)
    assert json.loads(json.dumps(result)) == result


def test_delivery_needs_both_the_rate_and_the_ratio() -> None:
    assert report.delivery_section(2500.0, 5000.0)["met"] is False  # ratio 0.5
    assert report.delivery_section(1500.0, 1600.0)["met"] is False  # under 2,000/s


def test_fake_upstream_completes_a_task_at_the_instant_in_its_id() -> None:
    assert completion_ms(b"c1700000000500-7") == 1_700_000_000_500
    assert completion_ms(b"p-7") is None
    before = json.loads(status_body(b"c1700000000500-7", 1_700_000_000.4))
    after = json.loads(status_body(b"c1700000000500-7", 1_700_000_000.5))
    assert before["data"]["state"] == "pending"
    assert after["data"]["state"] == "success"
    assert after["data"]["completeTime"] == 1_700_000_000_500
    assert json.loads(after["data"]["resultJson"])["resultUrls"]


def test_console_needs_a_fast_first_page_and_a_small_transfer() -> None:
    fast = [2.0] * 90 + [40.0] * 10
    ok = report.console_section(first_page_ms=fast, transfer_bytes=70_000, usable_ms=[300.0])
    assert ok["met"] is True
    assert ok["first_page_p95_ms"] == 40.0
    assert ok["transfer_kb"] == 70.0
    slow = [2.0] * 90 + [60.0] * 10
    assert (
        report.console_section(first_page_ms=slow, transfer_bytes=70_000, usable_ms=[])["met"]
        is False
    )
    big = report.console_section(first_page_ms=fast, transfer_bytes=150_001, usable_ms=[300.0])
    assert big["met"] is False
    assert (
        report.console_section(first_page_ms=[], transfer_bytes=None, usable_ms=[])["met"] is None
    )


def test_the_tasks_file_row_needs_every_figure_and_no_write() -> None:
    ok = report.tasks_file_section(2.5, 120.0, 0.1, unchanged_reread_wrote=False)
    assert ok["met"] is True
    assert report.tasks_file_section(3.5, 120.0, 0.1)["met"] is False
    assert report.tasks_file_section(2.5, 151.0, 0.1)["met"] is False
    assert report.tasks_file_section(2.5, 120.0, 0.5)["met"] is False
    assert report.tasks_file_section(2.5, 120.0, 0.1, unchanged_reread_wrote=True)["met"] is False
    assert report.tasks_file_section(None, 120.0, 0.1)["met"] is None


def test_mirror_section_compares_with_the_bare_loop_and_reports_added_latency() -> None:
    section = report.mirror_section(
        big_mib_s=800.0,
        ref_big_mib_s=900.0,
        small_mib_s=300.0,
        ref_small_mib_s=400.0,
        rss_growth_mb=5.0,
        lags_on_s=[0.2] * 100,
        lags_off_s=[0.1] * 100,
        cpu_s_per_gib={"big_file": 1.2345, "big_file_reference": 0.5},
    )
    assert section["cpu_s_per_gib"] == {"big_file": 1.23, "big_file_reference": 0.5}
    assert section["big_file_ratio"] == pytest.approx(0.889, abs=1e-3)
    assert section["small_files_ratio"] == 0.75
    assert section["webhook_p99_added_ms"] == pytest.approx(100.0)
    assert section["met"] is False  # the small files are under 0.8
    assert report.mirror_section(
        big_mib_s=800.0,
        ref_big_mib_s=900.0,
        small_mib_s=350.0,
        ref_small_mib_s=400.0,
        rss_growth_mb=5.0,
        lags_on_s=[0.2],
        lags_off_s=[0.1],
    )["met"]


def test_the_budget_simulation_keeps_every_window() -> None:
    from bench import budget_sim

    result = budget_sim.run()
    assert result["met"] is True
    for case in result["cases"]:
        assert case["daemon_worst_1s_window"] <= 21
    section = report.budget_section(result, {"met": True})
    assert section["met"] is True
    assert report.budget_section(result, {"error": "boom", "met": None})["met"] is None


def test_the_polling_simulation_evaluates_a_schedule() -> None:
    import numpy as np  # in the test extras too: this must run in CI, never skip

    from bench import polling_sim

    durations = np.array([1.0, 2.0, 3.0, 10.0])
    requests, delay = polling_sim.evaluate([2.0, 4.0], durations, 5.0)
    # 1 and 2: seen at 2 (1 poll); 3: at 4 (2 polls); 10: at 4, 9, 14 (4 polls)
    assert requests == pytest.approx((1 + 1 + 2 + 4) / 4)
    assert delay == pytest.approx((1 + 0 + 1 + 4) / 4)
    assert polling_sim.at_requests([(1.0, 10.0), (3.0, 2.0)], 2.0) == pytest.approx(6.0)
    assert polling_sim.at_requests([(1.0, 10.0), (3.0, 2.0)], 4.0) is None


def test_the_live_polling_row_needs_the_delay_and_the_requests() -> None:
    fixed = {"requests_per_task": 6.0, "completion_to_webhook_mean_s": 0.7}
    good = {"requests_per_task": 6.3, "completion_to_webhook_mean_s": 0.15}
    assert report.polling_live_section(fixed, good)["met"] is True
    costly = {"requests_per_task": 6.7, "completion_to_webhook_mean_s": 0.15}
    assert report.polling_live_section(fixed, costly)["met"] is False
    slow = {"requests_per_task": 6.0, "completion_to_webhook_mean_s": 0.4}
    assert report.polling_live_section(fixed, slow)["met"] is False
    assert report.polling_live_section(fixed, {})["met"] is None


def test_the_paced_row_compares_cpu_per_request_with_the_paced_bare_loop() -> None:
    section = report.paced_section(230.0, 200.0, tasks=2000)
    assert section["ratio"] == 1.15
    assert section["met"] is True
    assert section["tasks"] == 2000
    assert report.paced_section(240.0, 200.0)["met"] is False
    assert report.paced_section(None, 200.0)["met"] is None
    assert report.assemble({"paced": section}, meta={})["targets_met"] == {"paced": True}


def test_the_paced_row_over_rounds_is_the_ratio_of_the_medians() -> None:
    rounds = [
        {"daemon_cpu_us_per_poll": d, "reference_cpu_us_per_get": r}
        for d, r in ((150.0, 100.0), (160.0, 150.0), (170.0, 160.0), (None, 150.0))
    ]
    section = report.paced_rounds_section(rounds, tasks=2000)
    assert section["daemon_cpu_us_per_poll"] == 160.0  # the median of the three measured
    assert section["reference_cpu_us_per_get"] == 150.0  # of the four
    assert section["ratio"] == round(160 / 150, 3)
    assert section["met"] is True
    assert section["round_ratios"] == [1.5, round(160 / 150, 3), round(170 / 160, 3), None]
    assert (section["ratio_min"], section["ratio_max"]) == (round(170 / 160, 3), 1.5)
    assert section["rounds"] == 4
    assert section["rounds_met"] == 2
    assert section["round_figures"] == rounds
    assert section["tasks"] == 2000
    slow = [{"daemon_cpu_us_per_poll": 120.0, "reference_cpu_us_per_get": 100.0}]
    assert report.paced_rounds_section(slow)["met"] is False
    failed = [{"daemon_cpu_us_per_poll": None, "reference_cpu_us_per_get": 100.0}]
    assert report.paced_rounds_section(failed)["met"] is None


def test_the_cluster_row_needs_three_instances_to_scale_and_postgres_to_cost_little() -> None:
    sqlite = {"daemon_cpu_us_per_poll": 100.0, "polls_per_s": 5000.0}
    single = {"daemon_cpu_us_per_poll": 120.0, "polls_per_s": 4000.0}
    three = {"daemon_cpu_us_per_poll": 125.0, "polls_per_s": 10_400.0}
    unmeasured = {"skipped": "no cgroup cpu controller mounted"}

    def section(**kw: Any) -> dict[str, Any]:
        args = {"sqlite": sqlite, "single": single, "three": three, "equal_hosts": unmeasured}
        return report.cluster_section(**(args | kw))

    shared = section(tasks=100_000)
    assert shared["scale_ratio"] == 2.6
    assert shared["scale_ratio_measured_on"] == "shared cores"
    assert shared["postgres_vs_sqlite_cpu_ratio"] == 1.2
    assert shared["projected_ratio_with_cores"] == 2.88  # 3 x 120 / 125
    assert shared["met"] is True
    assert shared["tasks"] == 100_000
    two_cores = {**three, "polls_per_s": 6000.0}  # 1.5x: three instances on two cores
    assert section(three=two_cores)["met"] is False
    costly = {**single, "daemon_cpu_us_per_poll": 140.0}  # 1.4x SQLite's
    assert section(single=costly)["met"] is False
    assert section(sqlite={})["met"] is None

    # Measured as equal hosts (each instance capped), that figure is the verdict...
    hosts = {
        "scale_ratio": 2.8,
        "cores_per_instance": 0.3,
        "single": {"daemon_cores": [0.3]},
        "three": {"daemon_cores": [0.29, 0.3, 0.3]},
    }
    capped = section(three=two_cores, equal_hosts=hosts)
    assert capped["scale_ratio"] == 2.8
    assert capped["scale_ratio_measured_on"] == "equal hosts"
    assert capped["scale_ratio_shared_cores"] == 1.5
    assert capped["met"] is True
    assert section(equal_hosts={**hosts, "scale_ratio": 2.2})["met"] is False
    # ...unless an instance did not get its cap (the machine ran out of cores): the shared
    # figure is then all there is.
    saturated = {**hosts, "three": {"daemon_cores": [0.3, 0.22, 0.3]}}
    assert section(three=two_cores, equal_hosts=saturated)["scale_ratio_measured_on"] == (
        "shared cores"
    )
    assert section(three=two_cores, equal_hosts=saturated)["met"] is False


def test_fake_upstream_counts_each_instance_and_the_first_polls_after_a_mark() -> None:
    from bench.upstream import Upstream

    upstream = Upstream()
    assert upstream.handle(b"POST", b"/_bench/mark?exclude=i3", b"a\nb")[0] == 200
    for path in (b"/i3/api/v1/statusTask/m?taskId=a", b"/i1/api/v1/statusTask/m?taskId=c"):
        upstream.handle(b"GET", path, b"")
    assert json.loads(upstream.handle(b"GET", b"/_bench/marked", b"")[1])["count"] == 0
    upstream.handle(b"GET", b"/i2/api/v1/statusTask/m?taskId=a", b"")
    upstream.handle(b"GET", b"/i1/api/v1/statusTask/m?taskId=a", b"")
    marked = json.loads(upstream.handle(b"GET", b"/_bench/marked?full=1", b"")[1])
    assert list(marked) == ["a"]  # the first poll of a watched task by another instance
    stats = json.loads(upstream.handle(b"GET", b"/_bench/stats", b"")[1])
    assert stats["polls_by_instance"] == {"i3": 1, "i1": 2, "i2": 1}

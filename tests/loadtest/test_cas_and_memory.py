"""The measuring tools behind the README's numbers, run small against real Redis servers."""

from __future__ import annotations

from pathlib import Path

from loadtest.cas import bench_cas
from loadtest.memory import bench_event_log, bench_memory


def test_cas_comparison_loses_no_update_with_either_method() -> None:
    rows = bench_cas(clients=4, updates=25)
    assert {(row["method"], row["key"]) for row in rows} == {
        (method, key) for method in ("watch", "lua") for key in ("shared", "one per client")}
    for row in rows:
        assert row["lost_updates"] == 0 and row["updates_per_s"] > 0
        if row["key"] == "one per client":
            assert row["retries"] == 0  # no contention, no conflict


def test_memory_measure_counts_every_key_of_sessions_and_users(artifacts: Path) -> None:
    result = bench_memory(artifacts, users=3, past_sessions=2, clicks=12)
    assert result["keys_per_open_session"] == 6.0  # meta, clicks, state, ids, payloads, served
    assert result["keys_per_user"] == 6.0  # meta, history, closed, state, attached, served
    assert result["bytes_per_open_session"] > 12 * 10  # at least the clicks themselves
    assert result["used_memory_per_user_with_sessions"] > result["bytes_per_user"]


def test_event_log_measure_counts_every_logged_click(artifacts: Path) -> None:
    result = bench_event_log(artifacts, events=40, clicks_per_session=4)
    assert result["logged"] == 40
    # each entry holds at least its uuid event id and a recommendation id of 32 hex digits
    assert result["bytes_per_event"] > 36
    assert result["mib_per_million_events"] == round(
        result["bytes"] / 40 * 1_000_000 / 2**20, 1)


def test_a_cached_bench_bundle_is_rebuilt_when_the_model_code_changed(tmp_path: Path) -> None:
    from loadtest.http_load import build_bench_bundle

    root = tmp_path / "artifacts-gru4rec-50"
    first = build_bench_bundle(50, root, "gru4rec")
    assert build_bench_bundle(50, root, "gru4rec") == first  # cached
    stamp = tmp_path / "artifacts-gru4rec-50.source"
    stamp.write_text("built by other code\n")  # as if models/ had changed since
    (first / "old-build").touch()
    rebuilt = build_bench_bundle(50, root, "gru4rec")
    assert (rebuilt / "manifest.json").exists() and not (rebuilt / "old-build").exists()
    assert stamp.read_text() != "built by other code\n"

"""Summaries of what the pipeline did, read from the warehouse (read-only) and the Dagster instance."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from resources.backend import warehouse_from_environment
from smart_home_assets.lib.accounting import unaccounted
from smart_home_assets.lib.reasons import DUPLICATE_EVENT_ID
from smart_home_assets.lib.tables import DEVICE_USAGE, DEVICE_USAGE_QUARANTINE, PREDICTION_FEEDBACK, RAW_USAGE


def _read(warehouse_path: Path, table: str, sql: str) -> pl.DataFrame:
    """``sql`` (a read of ``table``) over the configured warehouse (``resources.backend``: the DuckDB file at
    ``warehouse_path``, or the Delta tables), never taking the write lock; empty when ``table`` does not exist."""
    return warehouse_from_environment(str(warehouse_path)).read_only_query(table, sql)


def partition_accounting(warehouse_path: Path) -> pl.DataFrame:
    """Per partition: raw lines, device_usage rows, quarantined rows, duplicates, and whether they add up."""
    frame = _read(
        warehouse_path,
        RAW_USAGE,
        f"""
            WITH raw AS (SELECT partition_date, count(*) AS raw_lines FROM {RAW_USAGE} GROUP BY ALL),
                 clean AS (SELECT partition_date, count(*) AS device_usage FROM {DEVICE_USAGE} GROUP BY ALL),
                 q AS (SELECT partition_date,
                              count(*) FILTER (WHERE reason <> '{DUPLICATE_EVENT_ID}') AS quarantined,
                              count(*) FILTER (WHERE reason = '{DUPLICATE_EVENT_ID}') AS duplicates
                       FROM {DEVICE_USAGE_QUARANTINE} GROUP BY ALL)
            SELECT raw.partition_date, raw_lines, coalesce(device_usage, 0) AS device_usage,
                   coalesce(quarantined, 0) AS quarantined, coalesce(duplicates, 0) AS duplicates
            FROM raw LEFT JOIN clean USING (partition_date) LEFT JOIN q USING (partition_date)
            ORDER BY partition_date""",
    )
    return frame.with_columns(
        conserved=unaccounted(*(pl.col(c) for c in ("raw_lines", "device_usage", "quarantined", "duplicates"))) == 0
    )


def quarantine_reasons(warehouse_path: Path) -> pl.DataFrame:
    return _read(
        warehouse_path,
        DEVICE_USAGE_QUARANTINE,
        f"SELECT reason, count(*) AS lines FROM {DEVICE_USAGE_QUARANTINE} GROUP BY reason ORDER BY lines DESC",
    )


def check_results(run_ids: list[str] | None = None) -> pl.DataFrame:
    """Latest asset check evaluations per (check, partition) from the Dagster instance at $DAGSTER_HOME."""
    import dagster as dg
    from dagster._core.events import DagsterEventType

    rows = []
    with dg.DagsterInstance.get() as instance:
        for run in instance.get_runs(filters=dg.RunsFilter(run_ids=run_ids) if run_ids else None, limit=200):
            for record in instance.all_logs(run.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION):
                evaluation = record.get_dagster_event().asset_check_evaluation_data
                rows.append(
                    {
                        "check": evaluation.check_name,
                        "partition": evaluation.partition,
                        "passed": evaluation.passed,
                        "severity": evaluation.severity.value,
                        "timestamp": record.timestamp,
                    }
                )
    if not rows:
        return pl.DataFrame(schema={"check": pl.String, "partitions": pl.Int64, "passed": pl.Int64, "failed": pl.Int64})
    latest = pl.DataFrame(rows).sort("timestamp").group_by("check", "partition").last()
    return (
        latest.group_by("check")
        .agg(
            partitions=pl.len(),
            passed=pl.col("passed").sum(),
            failed=(~pl.col("passed")).sum(),
            severity=pl.col("severity").first(),
        )
        .sort("check")
    )


def print_summary(warehouse_path: Path, run_ids: list[str] | None = None) -> bool:
    """Print the accounting, quarantine reasons and check results; True when every partition is conserved."""
    accounting = partition_accounting(warehouse_path)
    reasons = quarantine_reasons(warehouse_path)
    checks = check_results(run_ids)
    with pl.Config(tbl_rows=100, tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
        print("\n== device_usage accounting per partition (raw = device_usage + quarantined + duplicates)")
        print(accounting)
        totals = accounting.select(pl.exclude("partition_date", "conserved").sum())
        print(totals)
        print("\n== quarantine reasons")
        print(reasons)
        print("\n== asset check results (latest per partition)")
        print(checks)
    conserved = bool(accounting["conserved"].all())
    print(f"\nconservation: {'every partition adds up' if conserved else 'SOME PARTITIONS DO NOT ADD UP'}")
    return conserved


def model_summary() -> dict:
    """The champion and the newest trained (LightGBM) version, with the backtest of that version's run."""
    from resources.tracking import CHAMPION_ALIAS, REGISTERED_MODEL_NAME, ModelRegistry
    from smart_home_assets.lib.training import BASELINE_NAMES

    registry = ModelRegistry()
    client = registry.client()
    versions = client.search_model_versions(f"name = '{REGISTERED_MODEL_NAME}'")
    if not versions:
        return {}
    trained = [v for v in versions if v.tags.get("model_kind", "lightgbm") == "lightgbm"] or versions
    newest = max(trained, key=lambda v: int(v.version))
    champion = registry.champion_version()
    metrics = client.get_run(newest.run_id).data.metrics
    folds = sorted({int(k[4:].split("_")[0]) for k in metrics if k.startswith("fold") and k.endswith("_mae")})
    best = newest.tags.get("best_baseline")
    return {
        "champion_version": champion.version if champion else None,
        "champion_kind": champion.tags.get("model_kind", "lightgbm") if champion else None,
        "champion_name": champion.tags.get("model_name", "lightgbm") if champion else None,
        "champion_backtest_mae": float(champion.tags["backtest_mae"])
        if champion and "backtest_mae" in champion.tags
        else None,
        "newest_version": newest.version,
        "newest_promoted": newest.tags.get("promoted"),
        "newest_reason": newest.tags.get("decision_reason"),
        "backtest_mae": metrics.get("backtest_mae"),
        "backtest_skill": metrics.get("backtest_skill"),
        "baselines_mae": {b: metrics[f"backtest_mae_{b}"] for b in BASELINE_NAMES if f"backtest_mae_{b}" in metrics},
        "best_baseline": best,
        "fold_skill": [
            1 - metrics[f"fold{k}_mae"] / metrics[f"fold{k}_mae_{best}"]
            for k in folds
            if best and metrics.get(f"fold{k}_mae_{best}")
        ],
        "versions": len(versions),
        "alias": CHAMPION_ALIAS,
        "tracking_uri": registry.uri(),
    }


def print_model_summary(warehouse_path: Path) -> bool:
    """Print the champion, the newest candidate's backtest against the baselines, and the prediction feedback;
    True when the champion is a trained model (one beat the baselines), False when a baseline serves."""
    summary = model_summary()
    if not summary:
        print("no model registered yet")
        return False
    print(f"\n== model registry ({summary['tracking_uri']})")
    if summary["backtest_mae"] is not None:
        folds = ", ".join(f"{s:+.3f}" for s in summary["fold_skill"])
        print(
            f"newest LightGBM version v{summary['newest_version']}: backtest MAE {summary['backtest_mae']:.1f} Wh, "
            f"skill {summary['backtest_skill']:+.3f} against the best baseline (per fold: {folds})"
        )
        for name, mae in sorted(summary["baselines_mae"].items(), key=lambda kv: kv[1]):
            print(f"  baseline {name:<24} backtest MAE {mae:.1f} Wh")
    print(f"  promoted={summary['newest_promoted']}: {summary['newest_reason']}")
    if summary["champion_version"] is None:
        print("no champion yet")
        return False
    mae = summary["champion_backtest_mae"]
    print(
        f"champion: v{summary['champion_version']} (@{summary['alias']}), {summary['champion_kind']} "
        f"{summary['champion_name']}" + (f", backtest MAE {mae:.1f} Wh" if mae is not None else "")
    )
    if summary["champion_kind"] == "baseline":
        print("  the naive baseline serves: no trained model beats it on this history")
    feedback = _read(
        warehouse_path,
        PREDICTION_FEEDBACK,
        "SELECT partition_date, source, model_version, devices, live_mae, best_baseline, "
        "best_baseline_live_mae, live_skill, interval_coverage, backtest_mae "
        f"FROM {PREDICTION_FEEDBACK} ORDER BY partition_date, source",
    )
    if not feedback.is_empty():
        with pl.Config(
            tbl_rows=40,
            tbl_hide_dataframe_shape=True,
            tbl_hide_column_data_types=True,
            float_precision=3,
            tbl_width_chars=160,
        ):
            print(
                "\n== live error of the predictions once the actuals landed (prediction_feedback; nominal "
                "interval coverage 0.8)"
            )
            print(feedback)
    return summary["champion_kind"] == "lightgbm"

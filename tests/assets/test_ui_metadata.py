"""What the UI shows about each asset: description, owner, group, kinds, column schema; and the metadata helpers."""

import dagster as dg
import polars as pl

from smart_home_assets.assets.metadata import (
    OWNERS,
    mlflow_run_metadata,
    preview_table,
    public_uri,
    quarantine_rate,
)
from smart_home_assets.definitions import defs

GROUP_ORDER = ["ingestion", "cleaning", "features", "training", "scoring"]
WAREHOUSE_TABLES = {
    "raw_usage",
    "device_usage",
    "device_usage_quarantine",
    "usage_features",
    "usage_predictions",
    "online_predictions",
    "prediction_feedback",
}


def nodes():
    graph = defs.resolve_asset_graph()
    return {k.to_user_string(): graph.get(k) for k in graph.get_all_asset_keys()}


def test_every_asset_has_a_description_the_owner_a_group_and_kinds():
    for name, node in nodes().items():
        assert node.description and len(node.description) > 30, name
        assert list(node.owners) == OWNERS, name
        assert node.group_name in GROUP_ORDER, name
        assert node.kinds, name
    kinds = set().union(*(n.kinds for n in nodes().values()))
    assert {"duckdb", "polars", "lightgbm", "mlflow"} <= kinds
    assert {"lightgbm", "mlflow"} <= nodes()["usage_model"].kinds
    assert "mlflow" in nodes()["usage_predictions"].kinds


def test_groups_follow_the_data_left_to_right():
    # Every edge goes from a group to the same or a later group: the graph reads ingest -> ... -> scoring.
    all_nodes = nodes()
    for name, node in all_nodes.items():
        for parent in node.parent_keys:
            assert GROUP_ORDER.index(all_nodes[parent.to_user_string()].group_name) <= GROUP_ORDER.index(
                node.group_name
            ), (parent, name)


def test_warehouse_tables_carry_their_table_name_and_column_schema():
    for name in WAREHOUSE_TABLES:
        metadata = nodes()[name].metadata
        assert metadata["dagster/table_name"] == f"warehouse.main.{name}"
        schema = metadata["dagster/column_schema"]
        assert isinstance(schema, dg.TableSchema) and "partition_date" in {c.name for c in schema.columns}, name


def test_the_ingest_and_clean_job_targets_the_ingestion_and_cleaning_assets():
    job = defs.resolve_job_def("ingest_and_clean")
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} == {
        "raw_usage",
        "device_usage",
        "device_usage_quarantine",
    }
    assert job.partitions_def is not None


def test_public_uri_drops_credentials_and_keeps_the_rest():
    assert public_uri("https://alice:s3cret@mlflow.example:5443/path?x=1") == "https://mlflow.example:5443/path?x=1"
    assert public_uri("http://token@10.0.0.1/") == "http://10.0.0.1/"
    assert public_uri("postgresql://u:p@[::1]:5432/mlflow") == "postgresql://[::1]:5432/mlflow"
    assert public_uri("sqlite:////data/mlflow.db") == "sqlite:////data/mlflow.db"


def test_mlflow_run_metadata_links_the_run_without_credentials():
    remote = mlflow_run_metadata("https://alice:s3cret@mlflow.example", "3", "abc", "smart_home_usage", "7")
    assert remote["mlflow_run_url"].value == "https://mlflow.example/#/experiments/3/runs/abc"
    assert "s3cret" not in str(remote) and "alice" not in str(remote)
    assert remote["mlflow_model_uri"].value == "models:/smart_home_usage/7"
    assert remote["mlflow_run_uri"].value == "runs:/abc"
    local = mlflow_run_metadata("sqlite:////data/mlflow.db", "1", "abc", "smart_home_usage", "7")
    assert local["mlflow_run_url"].value == "http://127.0.0.1:5000/#/experiments/1/runs/abc"  # `mlflow ui`
    assert local["mlflow_tracking_uri"].value == "sqlite:////data/mlflow.db"


def test_preview_table_and_quarantine_rate():
    frame = pl.DataFrame({"device_id": ["a|b", "c"], "energy_wh": [1.23456, 2.0], "note": [None, "x\ny"]})
    text = preview_table(frame, "partition 2026-06-01", rows=1).value
    assert text.splitlines()[0] == "First 1 of 2 rows of partition 2026-06-01:"
    assert "| device_id | energy_wh | note |" in text and "| a\\|b | 1.235 |  |" in text
    assert preview_table(frame.clear(), "partition X").value == "partition X: no rows"
    assert quarantine_rate(200, 3) == 0.015
    assert quarantine_rate(0, 0) == 0.0

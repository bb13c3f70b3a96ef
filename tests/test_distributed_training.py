"""LightGBM's Dask interface on a 2-worker local cluster trains the usage model from the warehouse: each worker
reads its own chunk of days (with the next day for labels), on exactly the rows and split of the local training,
and the model it returns forecasts as well as the one trained in a single process."""

import datetime as dt

import lightgbm
import polars as pl
import pytest

from resources import Warehouse
from smart_home_assets import training
from smart_home_assets.distributed_training import dask_client, feature_days, split_days, train_model_dask
from smart_home_assets.tables import USAGE_FEATURES
from tests.conftest import simulated_features

pytestmark = pytest.mark.slow

START, DAYS = dt.date(2026, 2, 1), 40


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    features = simulated_features(START, DAYS, hubs=20)
    warehouse = Warehouse(database=str(tmp_path_factory.mktemp("dist") / "warehouse.duckdb"))
    keys = sorted({str(d) for d in features.get_column("partition_date").to_list()})
    warehouse.replace_partitions({USAGE_FEATURES: features}, keys)
    return warehouse, features


def test_dask_training_uses_the_same_rows_and_forecasts_as_well_as_local_training(warehouse):
    warehouse, features = warehouse
    train, holdout = training.split_holdout(training.attach_labels(features))
    types = training.device_type_categories(features)
    local = training.train_model(train, device_types=types)

    train_days, holdout_days = split_days(feature_days(warehouse), holdout_days=7)
    assert holdout_days == holdout.get_column("partition_date").unique().sort().to_list()
    with dask_client("local:2") as client:
        assert len(client.scheduler_info()["workers"]) == 2
        model, rows = train_model_dask(client, warehouse, train_days, types)

    assert rows == train.height  # every training row, and only those, reached the cluster
    assert isinstance(model, lightgbm.LGBMRegressor)
    assert getattr(model, training.DEVICE_TYPES_ATTR) == types
    local_mae = training.evaluate(local, holdout)["mae"]
    dask_mae = training.evaluate(model, holdout)["mae"]
    _, best = training.best_baseline(training.baseline_metrics(holdout))
    # data-parallel LightGBM builds its histograms per worker: not bit-identical, but as good
    assert dask_mae == pytest.approx(local_mae, rel=0.1)
    assert dask_mae < best["mae"]


def test_a_training_window_and_too_few_days_are_honoured():
    days = [START + dt.timedelta(days=d) for d in range(30)]
    train, holdout = split_days(days, holdout_days=7, training_window_days=10)
    assert holdout == days[22:29] and train == days[12:22]
    with pytest.raises(ValueError, match="not enough labeled days"):
        split_days(days[:12], holdout_days=7)
    assert pl.Series(train).is_sorted()

"""The model: training time against training rows, batch scoring throughput, one-request serving latency.

* Features of a simulated fleet (full: 200 hubs x 60 days, quick: 20 hubs), built with the pipeline's pure
  functions; labels and the time-based holdout as the usage_model asset makes them.
* Training: :func:`smart_home_assets.lib.training.train_model` (the asset's default parameters: 300 trees) on the
  earliest 25 %, 50 % and 100 % of the training rows, interleaved.
* Backtest: the rolling-origin backtest usage_model runs before its final fit (4 folds of 7 days, each a fit
  on the days before it, plus the baselines), against one fit on every training row.
* Batch scoring: :func:`training.predict` over every feature row (what usage_predictions does per day, at once).
* Serving: :func:`bench.serve_latency.measure_latency`: ``mlflow models serve`` of the champion on loopback,
  500 sequential single-row requests after 20 warm-up ones, a fresh server per repeat.

Training and scoring run in this process (lightgbm with the project's 2 threads); times are wall clock.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from bench import serve_latency
from bench.harness import Scale, median
from smart_home_assets.lib import training

FULL_HUBS, DAYS, EVENTS_PER_HUB = 200, 60, 150
FRACTIONS = (0.25, 0.5, 1.0)


T = TypeVar("T")


def timed(fn: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[float, T]:
    """Seconds of ``fn(*args, **kwargs)`` and its value (the arguments are passed, not captured, so a call in a
    loop times the loop's current values)."""
    started = time.perf_counter()
    value = fn(*args, **kwargs)
    return time.perf_counter() - started, value


def run(scale: Scale) -> dict:
    hubs = scale.hubs(FULL_HUBS, minimum=10)
    build_s, features = timed(
        lambda: serve_latency.simulated_features(seed=0, hubs=hubs, days=DAYS, events_per_hub=EVENTS_PER_HUB)
    )
    labeled = training.attach_labels(features)
    train, holdout = training.split_holdout(labeled)
    sizes = {f: train.head(round(train.height * f)) for f in FRACTIONS}
    # untimed warm-up: the first fit imports lightgbm and scikit-learn (seconds), which is not training time
    training.train_model(train.head(200), params={"n_estimators": 5}, seed=0)
    train_s: dict[float, list[float]] = {f: [] for f in FRACTIONS}
    score_s: list[float] = []
    backtest_s: list[float] = []
    model = None
    for i in range(scale.repeats):
        for f, rows in sizes.items():
            seconds, model = timed(training.train_model, rows, seed=0)
            train_s[f].append(seconds)
            print(f"    train {rows.height} rows #{i + 1}: {seconds:.2f} s", flush=True)
        folds = training.fold_windows(labeled["partition_date"].unique().to_list())
        seconds, _ = timed(
            training.backtest,
            folds,
            lambda fold: labeled.filter(labeled["partition_date"].is_between(fold.first, fold.last)),
            {"candidate": training.fit_before(labeled, lambda before: training.train_model(before, seed=0))},
        )
        backtest_s.append(seconds)
        print(f"    backtest {len(folds)} folds #{i + 1}: {seconds:.2f} s", flush=True)
        seconds, _ = timed(training.predict, model, features)
        score_s.append(seconds)
        print(f"    score {features.height} rows #{i + 1}: {seconds:.2f} s", flush=True)
    mae = training.evaluate(model, holdout)["mae"]

    latencies = []
    previous_uri = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        for i in range(scale.repeats):
            result = serve_latency.measure_latency(requests=500, warmup=20, max_seconds=120.0)
            ms = result.seconds * 1000.0
            latencies.append(
                {
                    "p50_ms": float(np.percentile(ms, 50)),
                    "p99_ms": float(np.percentile(ms, 99)),
                    "mean_ms": float(ms.mean()),
                    "requests": int(ms.size),
                    "ready_s": result.ready_s,
                    "in_process_p50_ms": float(np.percentile(result.in_process_seconds * 1000.0, 50)),
                }
            )
            print(
                f"    serve #{i + 1}: p50 {latencies[-1]['p50_ms']:.2f} ms, p99 {latencies[-1]['p99_ms']:.2f} ms",
                flush=True,
            )
            command = re.sub(r"--port \d+", "--port <free port>", result.command)
    finally:
        if previous_uri is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous_uri
    return {
        "hubs": hubs,
        "days": DAYS,
        "feature_rows": features.height,
        "features_build_s": build_s,
        "holdout_rows": holdout.height,
        "holdout_mae": mae,
        "training": [{"rows": sizes[f].height, "wall_s": median(train_s[f]), "all_s": train_s[f]} for f in FRACTIONS],
        "backtest": {"folds": training.BACKTEST_FOLDS, "wall_s": median(backtest_s), "all_s": backtest_s},
        "scoring": {
            "rows": features.height,
            "wall_s": median(score_s),
            "rows_per_s": features.height / median(score_s),
            "all_s": score_s,
        },
        "serving": {
            "runs": latencies,
            "p50_ms": median([r["p50_ms"] for r in latencies]),
            "p99_ms": median([r["p99_ms"] for r in latencies]),
            "in_process_p50_ms": median([r["in_process_p50_ms"] for r in latencies]),
            "command": command,
        },
    }

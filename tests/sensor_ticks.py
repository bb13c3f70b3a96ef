"""One evaluation of a sensor in a test, keeping why it skipped, so that a test can tell "nothing new" from a
skip caused by an error."""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

# landing_zone_sensor's skip when every upload is already in its cursor: the only skip that means "unchanged".
NOTHING_NEW = "no new or changed uploads"


@dataclass(frozen=True)
class Tick:
    requests: list[tuple[str | None, str | None]]  # (partition key, run key) of each run request
    cursor: str | None  # the cursor Dagster keeps after this tick
    skip: str | None  # the skip message; None when the sensor did not skip


def evaluate(sensor, context: dg.SensorEvaluationContext) -> Tick:
    """Run ``sensor`` once. A bare SkipReason leaves the cursor as it was, as the daemon does."""
    result = sensor(context)
    if isinstance(result, dg.SkipReason):
        return Tick([], context.cursor, result.skip_message)
    assert isinstance(result, dg.SensorResult), f"unexpected sensor result {result!r}"
    skip = result.skip_reason.skip_message if result.skip_reason else None
    requests = [(r.partition_key, r.run_key) for r in result.run_requests or []]
    assert not (skip and requests), f"a skip with run requests: {result!r}"
    return Tick(requests, result.cursor, skip)

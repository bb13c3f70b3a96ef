"""A trivial one-asset Dagster project: the yardstick for the project's fixed cost per run."""

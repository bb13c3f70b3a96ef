"""Dagster assets, one module per stage of the flow, read in the order data moves."""

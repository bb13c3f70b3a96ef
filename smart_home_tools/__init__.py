"""Tools around the code location that Dagster never loads: the ``smart-home`` CLI (demo, pipeline, simulate,
import-csv, recover, summary, serve), the hub simulator, the history importer, the run report and the
prediction service. They import the code location and its pure library; nothing there imports them."""

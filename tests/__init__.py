"""The tests of smart-home-assets.

Pytest imports this package before conftest and every test module. It pins the last daily partition
(``SMART_HOME_PARTITIONS_END``, smart_home_assets/partitions.py) so that the tests' fixed dates are inside
the partitions window, and as far from its end, whatever the machine's clock says; the CLI, run and
``dagster dev`` processes the tests start inherit it.
"""

import os

PARTITIONS_END = "2026-12-31"
os.environ["SMART_HOME_PARTITIONS_END"] = PARTITIONS_END

#!/usr/bin/env bash
# Debian packages that tests use for real, installed only when missing (`make test` runs this first).
set -euo pipefail
# Servers and the browser that tests use for real, from Debian's packages: Chromium for the UI test
# (tests/system/test_ui.py, driven by Playwright: no browser download), PostgreSQL for the production profile's
# instance (tests/system/test_production_instance.py), Prometheus and its Pushgateway for the metrics
# (tests/assets/test_metrics.py; promtool validates deploy/prometheus/).
missing=()
command -v chromium >/dev/null || missing+=(chromium fonts-dejavu-core)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
command -v promtool >/dev/null || missing+=(prometheus)
command -v prometheus-pushgateway >/dev/null || missing+=(prometheus-pushgateway)
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
chromium --version 2>/dev/null || true

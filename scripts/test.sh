#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian/Ubuntu machine, then run it all.
# Real servers (Mosquitto, InfluxDB 1.x, VictoriaMetrics) are installed here and started by the
# tests themselves on free ports; nothing here relies on a service already running.
set -euo pipefail
cd "$(dirname "$0")/.."

DEB_PACKAGES=(mosquitto mosquitto-clients influxdb victoria-metrics socat chromium openssl)
DEB_PACKAGES+=(systemd)  # systemd-analyze verifies the shipped daq@.service (tests/install)
missing=()
for pkg in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
$PYTHON -m pip install -q --disable-pip-version-check -e '.[test]'

$PYTHON -m ruff check .
lint-imports --no-cache
$PYTHON -m pytest -q -p no:cacheprovider "$@"

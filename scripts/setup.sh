#!/usr/bin/env bash
# Installs everything the stack and the tests need on a fresh machine (idempotent).
# System packages come from Debian, Python packages from PyPI (requirements.lock);
# Kafka's jars (Maven Central) and Azurite (npm) are fetched on first start into .state/tools.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v prometheus >/dev/null || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null || need+=(prometheus-alertmanager)
command -v prometheus-redis-exporter >/dev/null || need+=(prometheus-redis-exporter)
command -v java >/dev/null || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need+=(maven)
command -v npm >/dev/null || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  # The stack runs its own Prometheus, Alertmanager and exporter (supervisord.conf) on its
  # own ports: the system services these packages enable would take them (9090, 9093/9094
  # the broker's controller and Alertmanager, 9121).
  if [ -d /run/systemd/system ]; then
    for unit in prometheus prometheus-alertmanager prometheus-redis-exporter; do
      if [[ " ${need[*]} " == *" $unit "* ]]; then systemctl disable --now "$unit" || true; fi
    done
  fi
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ requirements.lock -nt "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing Python packages from requirements.lock"
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.lock
  .venv/bin/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
  touch "$stamp"
fi
echo "setup: done"

#!/usr/bin/env bash
# Installs the host packages walproxy's demo and tests need, when missing:
# Java 17+ (Kafka 4.x), Maven (fetches the Kafka jars), Python 3.11, kcat (a test client),
# fuse3 + libfuse3-dev (the lossy file system the durability tests run Kafka on), promtool
# (Debian's prometheus package: the alert rules' unit tests, tests/unit/test_alert_rules.py).
set -euo pipefail
need=()
command -v java >/dev/null || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need+=(maven)
command -v kcat >/dev/null || need+=(kcat)
command -v python3.11 >/dev/null || need+=(python3.11 python3.11-venv)
# tests/faultfs: a FUSE file system that loses un-fsynced writes (pyfuse3 builds against libfuse3)
command -v fusermount3 >/dev/null || need+=(fuse3)
{ command -v pkg-config >/dev/null && pkg-config --exists fuse3; } || need+=(libfuse3-dev pkg-config)
command -v gcc >/dev/null || need+=(gcc)
command -v promtool >/dev/null || need+=(prometheus)
# The chart tests build helm from the Go module proxy (Makefile: helm); helm v3.19 needs
# Go >= 1.24, newer than Debian 12's golang-go, so Go is expected on the machine.
if ! command -v go >/dev/null && [ ! -x /usr/local/go/bin/go ]; then
  echo "walproxy setup: Go >= 1.24 is needed to build helm for the chart tests" >&2
fi
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "walproxy setup: please install: ${need[*]}" >&2
  exit 1
fi
echo "walproxy setup: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${need[@]}" >/dev/null

#!/usr/bin/env bash
# A Docker engine and the images the container tests use, on a machine that has neither.
#   deploy/containers.sh up      engine reachable (DOCKER_HOST, a running one, or dockerd
#                                started here), then the images built (cached)
#   deploy/containers.sh down    stops the engine if `up` started it
#   deploy/containers.sh run CMD...   up, CMD, then down if this run started the engine
#                                (`make test`); CMD's exit status is the script's
# No image registry is reachable on this project's machines, so the official images are
# stood in for by local builds: a Debian base from debootstrap (the mirror apt uses), tagged
# as deploy/Dockerfile's base, and Kafka and moto images built on it (deploy/images/). Where a
# registry answers, the official images are pulled instead and nothing stands in.
# When no engine can be had the reason is written to .cache/containers/unavailable, which the
# container tests print as their skip reason (CI=true turns that skip into a failure).
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=.cache/containers
mkdir -p "$STATE"
UNAVAILABLE=$STATE/unavailable
PIDFILE=$STATE/dockerd.pid
LOG=$STATE/dockerd.log
BASE=local/debian:bookworm
PYTHON_BASE=$(sed -n 's/^FROM \([^ ]*\).*/\1/p' deploy/Dockerfile | head -1)
WALPROXY_IMAGE=walproxy:0.1.0
KAFKA_IMAGE=walproxy-local/kafka:4.1.1
MOTO_IMAGE=walproxy-local/moto:5.2.5

say() { echo "containers: $*" >&2; }
unavailable() { say "no Docker engine: $*"; echo "$*" >"$UNAVAILABLE"; exit 0; }

engine_up() { timeout 10 docker info >/dev/null 2>&1; }

install_packages() {
  local need=()
  command -v dockerd >/dev/null || need+=(docker.io)
  command -v debootstrap >/dev/null || need+=(debootstrap)
  command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1 \
    || need+=(docker-compose)
  [ ${#need[@]} -eq 0 ] && return 0
  say "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
}

start_engine() {
  if [ -n "${DOCKER_HOST:-}" ]; then
    engine_up || unavailable "DOCKER_HOST=$DOCKER_HOST does not answer"
    return
  fi
  engine_up && return
  [ "$(id -u)" = 0 ] || unavailable "no engine running and not root (cannot start dockerd)"
  command -v apt-get >/dev/null || unavailable "no engine running and no apt-get to install one"
  install_packages || unavailable "installing docker.io failed"
  say "starting dockerd (log: $LOG)"
  # setsid: the engine outlives this script and make's job control; --ip: published
  # ports stay on loopback.
  setsid dockerd --ip=127.0.0.1 --pidfile "$PWD/$PIDFILE.engine" >"$LOG" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  for _ in $(seq 120); do
    engine_up && return
    kill -0 "$(cat "$PIDFILE")" 2>/dev/null || break
    sleep 0.5
  done
  unavailable "dockerd did not come up (see $LOG): $(tail -3 "$LOG" | tr '\n' ' ')"
}

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# An official image when a registry answers (short timeout: here none does).
pulled() { timeout 30 docker pull -q "$1" >/dev/null 2>&1; }

debian_mirror() {
  local uri
  uri=$(grep -rhoE '^(URIs:|deb) +http[^ ]*/debian/?( |$)' /etc/apt/sources.list \
    /etc/apt/sources.list.d/ 2>/dev/null | awk '{print $2}' | head -1)
  echo "${uri:-http://deb.debian.org/debian}"
}

build_base() {
  have_image "$BASE" && return
  local rootfs
  rootfs=$(mktemp -d /var/tmp/walproxy-rootfs.XXXXXX)
  say "debootstrap bookworm from $(debian_mirror) (once; cached as $BASE)"
  debootstrap --variant=minbase --include=python3,python3-pip,ca-certificates \
    bookworm "$rootfs" "$(debian_mirror)" >"$STATE/debootstrap.log" 2>&1 \
    || { tail -20 "$STATE/debootstrap.log" >&2; rm -rf "$rootfs"; exit 1; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | docker import - "$BASE" >/dev/null
  rm -rf "$rootfs"
}

# This machine's extra certificate authorities (HTTPS from containers goes through them):
# handed to the build stages that run pip, never copied into a final image.
extra_ca() { cat /usr/local/share/ca-certificates/*.crt 2>/dev/null || true; }

build() {  # build TAG DOCKERFILE CONTEXT
  say "building $1"
  quiet docker build -q --build-arg EXTRA_CA_CERTS="$(extra_ca)" -t "$1" -f "$2" "$3"
}

# A command's output only when it fails (the legacy builder's deprecation notice otherwise).
quiet() {
  local out
  out=$("$@" 2>&1) || { echo "$out" >&2; return 1; }
}

build_images() {
  if ! have_image "$PYTHON_BASE" && ! pulled "$PYTHON_BASE"; then
    build_base
    quiet docker build -q -t "$PYTHON_BASE" --build-arg BASE="$BASE" \
      -f deploy/images/python-standin.Dockerfile deploy/images
  fi
  build "$WALPROXY_IMAGE" deploy/Dockerfile .
  if pulled apache/kafka:4.1.1; then KAFKA_IMAGE=apache/kafka:4.1.1; else
    make -s deploy/kafka-jars/target/libs/.fetched
    local ctx=$STATE/kafka-context
    rm -rf "$ctx" && mkdir -p "$ctx"
    cp -l deploy/kafka-jars/target/libs/*.jar "$ctx"/ 2>/dev/null \
      || cp deploy/kafka-jars/target/libs/*.jar "$ctx"/
    cp deploy/images/kafka-entrypoint.sh "$ctx"/
    # the dev launcher's Log4j2 configuration, one source for both
    .venv/bin/python -c 'from proxy.dev.cluster import LOG4J2; print(LOG4J2, end="")' \
      >"$ctx/log4j2.properties"
    build "$KAFKA_IMAGE" deploy/images/kafka.Dockerfile "$ctx"
  fi
  build "$MOTO_IMAGE" deploy/images/moto.Dockerfile deploy/images
  # What the tests and compose runs use (sourced by tests/containers).
  cat >"$STATE/images.env" <<EOF
WALPROXY_IMAGE=$WALPROXY_IMAGE
WALPROXY_KAFKA_IMAGE=$KAFKA_IMAGE
WALPROXY_S3_IMAGE=$MOTO_IMAGE
EOF
  docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' \
    | grep -E "^($WALPROXY_IMAGE|$KAFKA_IMAGE|$MOTO_IMAGE|$BASE|$PYTHON_BASE) " >&2 || true
}

stop_engine() {
  [ -f "$PIDFILE" ] || return 0
  local pid
  pid=$(cat "$PIDFILE")
  if kill -0 "$pid" 2>/dev/null; then
    say "stopping the dockerd this script started (pid $pid)"
    kill -TERM "$pid"
    for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  fi
  rm -f "$PIDFILE"
}

up() {
  rm -f "$UNAVAILABLE"
  local start
  start=$(date +%s)
  # One engine start and one build at a time on the machine (several checkouts share it).
  exec 9>/tmp/walproxy-containers.lock
  flock 9
  start_engine
  build_images
  flock -u 9
  say "engine and images ready in $(( $(date +%s) - start )) s"
}

case "${1:-up}" in
  up) (up) ;;
  down) stop_engine ;;
  run)
    shift
    had_engine=$([ -f "$PIDFILE" ] && echo yes || echo no)
    (up)
    rc=0
    "$@" || rc=$?
    [ "$had_engine" = yes ] || stop_engine
    exit $rc
    ;;
  *) echo "usage: $0 up|down|run CMD..." >&2; exit 2 ;;
esac

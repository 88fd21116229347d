# The README's two commands: `make demo` and `make test`. Each sets up what it needs
# (host packages, virtualenv, Kafka jars) and is quick the second time.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
RUNTIME := $(VENV)/.runtime-stamp
STAMP := $(VENV)/.installed-stamp
JARS := deploy/kafka-jars/target/libs/.fetched
HOST := .cache/host-packages-stamp
# helm for the chart tests, built from the Go module proxy (no binary downloads). Its
# Kubernetes version (what `helm template` renders for, what lint checks against) is set
# like helm's own release build does: client-go v0.34 in helm v3.19.0's go.mod.
# Cold build about 7 min on 2 shared cores, 15 s with Go's build cache warm.
HELM_VERSION := v3.19.0
HELM := .cache/helm-$(HELM_VERSION)/helm
GO ?= $(shell command -v go || echo /usr/local/go/bin/go)
HELM_LDFLAGS := -s -w -X helm.sh/helm/v3/internal/version.version=$(HELM_VERSION) \
	-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 \
	-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=34 \
	-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 \
	-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=34

.PHONY: setup demo test test-unit test-integration test-helm helm franz-go lint clean fuzz \
	containers containers-down test-containers test-clients-containers nemesis

# franz-go's own kgo integration tests, run through walproxy by
# tests/integration/test_franz_go_suite.py. The version is pinned in the stub module's go.mod
# (deploy/franz-go-suite); the test binary and Go's test2json (which turns its -test.v output
# into events) are built once into .cache, and the suite runs there. Cold about 30 s.
FRANZ_GO_VERSION := v1.22.3
FRANZ_GO := .cache/franz-go-$(FRANZ_GO_VERSION)
KGO_TEST := $(FRANZ_GO)/kgo.test

setup: $(HOST) $(STAMP) $(JARS) $(HELM) $(KGO_TEST)

$(HOST): deploy/setup-host.sh
	bash deploy/setup-host.sh
	@mkdir -p $(dir $@) && touch $@

# walproxy and its runtime dependencies (all the demo needs), then the test extras on top.
$(RUNTIME): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	@touch $@

$(STAMP): $(RUNTIME)
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

$(JARS): deploy/kafka-jars/pom.xml
	mvn -q -B -f deploy/kafka-jars/pom.xml package
	@touch $@

helm: $(HELM)

$(HELM):
	cd /tmp && GOBIN=$(abspath $(dir $(HELM))) GOFLAGS=-modcacherw $(GO) install \
		-ldflags '$(HELM_LDFLAGS)' helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)

franz-go: $(KGO_TEST)

$(KGO_TEST): deploy/franz-go-suite/go.mod deploy/franz-go-suite/go.sum
	mkdir -p $(FRANZ_GO) && cd /tmp && $(GO) build -o $(abspath $(FRANZ_GO))/test2json cmd/test2json
	@# TestOptValuesCoversEveryOption parses config.go from its working directory.
	cd deploy/franz-go-suite && GOFLAGS=-modcacherw $(GO) mod download github.com/twmb/franz-go
	cp "$$(cd deploy/franz-go-suite && $(GO) list -m -f '{{.Dir}}' github.com/twmb/franz-go)/pkg/kgo/config.go" $(FRANZ_GO)/
	chmod u+w $(FRANZ_GO)/config.go
	cd deploy/franz-go-suite && GOFLAGS=-modcacherw $(GO) test -c \
		github.com/twmb/franz-go/pkg/kgo -o $(abspath $(KGO_TEST))

# The demo runs Kafka and walproxy only: no test extras, no helm (the tests' part of setup).
demo: $(HOST) $(RUNTIME) $(JARS)
	$(BIN)/walproxy dev up --port 9092 --admin-port 9644 --data-dir .demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy

# The container tests (tests/containers) need a Docker engine and local images:
# deploy/containers.sh starts dockerd when none is reachable (as root, on Debian), builds the
# images (cached) and stops the engine it started once pytest is done. Without an engine those
# tests are skipped with the reason (CI=true: they fail).
# Two pytest passes on that engine: the whole suite (the shared broker from the jars), then
# the client matrix again with the broker in a container (CLIENT_MATRIX_CONTAINERS, about
# 3 min). The second runs even when the first failed; make test fails if either did.
test: setup lint
	WALPROXY_HELM=$(abspath $(HELM)) WALPROXY_FRANZ_GO=$(abspath $(FRANZ_GO)) \
		bash deploy/containers.sh run sh -c '$(BIN)/pytest -ra; suite=$$?; \
		$(CLIENT_MATRIX_CONTAINERS); matrix=$$?; \
		echo "make test: suite exit $$suite, client matrix against containers exit $$matrix"; \
		[ $$suite -eq 0 ] && [ $$matrix -eq 0 ]'

containers: $(STAMP) $(JARS)
	bash deploy/containers.sh up

containers-down:
	bash deploy/containers.sh down

test-containers: $(STAMP) $(JARS)
	bash deploy/containers.sh run $(BIN)/pytest -ra tests/containers

# The client matrix (5 clients, 43 tests) with the broker in a container
# (WALPROXY_TEST_KAFKA=testcontainers, tests/kafka_container.py): one container broker and
# its host-side sidecar shared by every test of the session (the `kafka` fixture), about
# 3 min on 2 cores. Part of `make test`; alone: `make test-clients-containers`.
CLIENT_MATRIX := tests/integration/test_clients_*.py
CLIENT_MATRIX_CONTAINERS := env WALPROXY_TEST_KAFKA=testcontainers $(BIN)/pytest -ra \
	--durations=10 $(CLIENT_MATRIX)
test-clients-containers: $(STAMP) $(JARS)
	bash deploy/containers.sh run $(CLIENT_MATRIX_CONTAINERS)

test-helm: $(STAMP) $(HELM)
	WALPROXY_HELM=$(abspath $(HELM)) $(BIN)/pytest -ra tests/helm

# The parser fuzz targets (tests/fuzz), each SECONDS long, from the committed seeds plus the
# corpus kept in .cache/fuzz; findings land in test-artifacts/fuzz. `make test` runs each
# for a bounded number of executions instead (tests/fuzz/test_fuzz.py).
SECONDS ?= 60
fuzz: $(STAMP)
	$(BIN)/python -m tests.fuzz.run --all --seconds $(SECONDS)

# A nemesis run of MINUTES minutes of mixed faults (tests/integration/nemesis.py) with a
# report in test-artifacts/nemesis-SEED; `make test` runs a bounded one
# (tests/integration/test_nemesis.py). WALPROXY_NEMESIS_SEED=N replays a run.
MINUTES ?= 30
nemesis: $(HOST) $(STAMP) $(JARS)
	$(BIN)/python -m tests.integration.nemesis --minutes $(MINUTES)

test-unit: $(STAMP)
	$(BIN)/pytest -ra tests/unit tests/wal

clean:
	rm -rf .demo test-artifacts .pytest_cache

# The README's two commands: `make demo` and `make test`. Each sets up what it needs
# (host packages, virtualenv, Kafka jars) and is quick the second time.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
JARS := deploy/kafka-jars/target/libs/.fetched
HOST := .cache/host-packages-stamp

.PHONY: setup demo test test-unit test-integration lint clean

setup: $(HOST) $(STAMP) $(JARS)

$(HOST): deploy/setup-host.sh
	bash deploy/setup-host.sh
	@mkdir -p $(dir $@) && touch $@

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

$(JARS): deploy/kafka-jars/pom.xml
	mvn -q -B -f deploy/kafka-jars/pom.xml package
	@touch $@

demo: setup
	$(BIN)/walproxy dev up --port 9092 --admin-port 9644 --data-dir .demo

lint: $(STAMP)
	$(BIN)/ruff check .

test: setup lint
	$(BIN)/pytest -ra

test-unit: $(STAMP)
	$(BIN)/pytest -ra tests/unit tests/wal

clean:
	rm -rf .demo test-artifacts .pytest_cache

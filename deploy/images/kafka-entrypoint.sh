#!/bin/sh
# server.properties from the environment the way apache/kafka's image does it: every
# KAFKA_FOO_BAR becomes foo.bar (`__` -> `_`, `___` -> `-`), CLUSTER_ID formats the log
# directories once. With no KAFKA_* set, a single combined broker+controller on 9092.
set -eu
CONF=/opt/kafka/config/server.properties
if ! env | grep -q '^KAFKA_PROCESS_ROLES='; then
  export KAFKA_NODE_ID="${KAFKA_NODE_ID:-1}" KAFKA_PROCESS_ROLES=broker,controller \
    KAFKA_LISTENERS="${KAFKA_LISTENERS:-PLAINTEXT://:9092,CONTROLLER://:9093}" \
    KAFKA_ADVERTISED_LISTENERS="${KAFKA_ADVERTISED_LISTENERS:-PLAINTEXT://localhost:9092}" \
    KAFKA_CONTROLLER_LISTENER_NAMES=CONTROLLER \
    KAFKA_LISTENER_SECURITY_PROTOCOL_MAP=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT \
    KAFKA_CONTROLLER_QUORUM_VOTERS="${KAFKA_CONTROLLER_QUORUM_VOTERS:-1@localhost:9093}" \
    KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR=1 KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR=1 \
    KAFKA_TRANSACTION_STATE_LOG_MIN_ISR=1 KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS=0
fi
: "${KAFKA_LOG_DIRS:=/var/lib/kafka/data}"
export KAFKA_LOG_DIRS
env | grep '^KAFKA_' | grep -vE '^KAFKA_(HEAP_OPTS|OPTS|JVM_PERFORMANCE_OPTS|LOG4J_OPTS|JMX_OPTS)=' \
  | while IFS='=' read -r name value; do
      key=$(echo "${name#KAFKA_}" | tr 'A-Z' 'a-z' | sed -e 's/___/-/g' -e 's/__/@/g' -e 's/_/./g' -e 's/@/_/g')
      printf '%s=%s\n' "$key" "$value"
    done >"$CONF"
CP='/opt/kafka/libs/*'
java -cp "$CP" kafka.tools.StorageTool format -t "${CLUSTER_ID:-5L6g3nShT-eMCtK--X86sw}" \
  -c "$CONF" --ignore-formatted >/dev/null
exec java -server ${KAFKA_HEAP_OPTS:--Xmx512m -Xms512m} -XX:+UseG1GC -Djava.awt.headless=true \
  -Dlog4j2.configurationFile=/opt/kafka/log4j2.properties ${KAFKA_OPTS:-} \
  -cp "$CP" kafka.Kafka "$CONF"

# Apache Kafka (KRaft) configured from KAFKA_* environment variables like the official
# apache/kafka image, so deploy/docker-compose.yml and the chart run on either. Built where
# no registry is reachable: Debian's JRE and the pinned jars of deploy/kafka-jars (the build
# context is deploy/containers.sh's staging of those jars, kafka-entrypoint.sh and the dev
# launcher's log4j2 configuration, proxy.dev.cluster.LOG4J2).
FROM local/debian:bookworm
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      openjdk-17-jre-headless >/dev/null \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 1000 appuser \
 && useradd --system --uid 1000 --gid 1000 --home-dir /opt/kafka --shell /usr/sbin/nologin appuser \
 && mkdir -p /opt/kafka/libs /opt/kafka/config /var/lib/kafka/data \
 && chown -R 1000:1000 /opt/kafka /var/lib/kafka
COPY *.jar /opt/kafka/libs/
COPY kafka-entrypoint.sh /opt/kafka/entrypoint.sh
COPY log4j2.properties /opt/kafka/log4j2.properties
USER 1000:1000
WORKDIR /opt/kafka
VOLUME ["/var/lib/kafka/data"]
EXPOSE 9092 9093
ENTRYPOINT ["/opt/kafka/entrypoint.sh"]

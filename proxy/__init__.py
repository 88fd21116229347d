"""walproxy's Kafka-protocol proxy.

Subpackages, from the bottom layer up (docs/architecture.md has the diagram and the rules):

* :mod:`proxy.kafka`: the wire, sans-IO: framing, the Produce skimmer, record batches, kio
  glue, response rewrites (versions, endpoints), one table of API keys and error codes;
* :mod:`proxy.config`: the configuration's schema, loading, validation and reference;
* :mod:`proxy.client`: walproxy's own Kafka client (upstream, SASL, TLS);
* :mod:`proxy.net`: one client connection paired with one upstream connection;
* :mod:`proxy.durable`: the durable produce path (WAL entries, handler, reconciler);
* :mod:`proxy.gateway`: one walproxy in front of a whole cluster;
* :mod:`proxy.ops`: admin endpoint, health probe, status, metrics, logs;
* :mod:`proxy.app`: the composition root and the ``walproxy`` command;
* :mod:`proxy.dev`: the local Kafka cluster of ``walproxy dev up``, the tests and benches.
"""

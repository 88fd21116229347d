"""walproxy's Kafka-protocol proxy.

What this package owns:

* the wire: :mod:`proxy.framing` (frame boundaries, fixed header fields), :mod:`proxy.codec`
  (kio decode/encode for the few APIs the proxy changes), :mod:`proxy.produce_skim`
  (zero-copy Produce request skimmer) — all sans-IO, plain functions over bytes;
* the policies applied to responses: :mod:`proxy.apiversions` (version clamping, KIP-511)
  and :mod:`proxy.endpoints` (no broker address that bypasses the proxy reaches a client);
* the trio shell: :mod:`proxy.connection` (one client, one upstream, ordered slots, bounded
  in-flight), :mod:`proxy.server` (accept, drain), :mod:`proxy.admin` (/metrics, /healthz,
  /readyz);
* operations: :mod:`proxy.config`, :mod:`proxy.logs`, :mod:`proxy.metrics`,
  :mod:`proxy.cli` (the ``walproxy`` command) and :mod:`proxy.devcluster` (local Kafka
  clusters from Maven Central jars for the demo, tests and benchmarks).
"""

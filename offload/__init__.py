"""walproxy's S3 offload and broker rebuild.

This package owns the off-box copy of every partition a broker leads and the way back from it:

* **Format (sans-IO, plain functions over bytes):** ``layout`` (object keys, targets),
  ``manifest`` (the per-partition commit point and its rules: contiguity, leader epochs,
  writer-epoch fencing), ``segment_codec`` (Kafka ``.log`` bytes, optional zstd, CRC32C),
  ``node_files`` (``lease.json``, ``broker.json``, ``meta.properties``), ``kafka_logdir``
  (the files of a Kafka 4.1 log directory), ``wal_tail`` (acknowledged batches the WAL holds
  beyond the S3 copy, at their recorded offsets), ``txn_tail`` (which EndTxn of the WAL ended
  a transactional batch, and its commit or abort marker).
* **Shells:** ``store`` (``S3Store`` over boto3, ``FileStore`` for ``file://``, both with
  conditional writes), ``s3_calls`` (deadlines, retries with backoff, metrics), ``commit``
  (segment then manifest), ``tailer`` (Fetch from the broker like a consumer), ``uploader``,
  ``partition``, ``offloader`` (runs inside ``walproxy run`` or as ``walproxy offload``),
  ``coverage`` (which WAL entries a committed manifest covers, so the WAL is trimmed only
  after S3 has them), ``verify`` (``walproxy offload verify``), ``rebuild`` and
  ``logdir_writer`` (``walproxy rebuild``).

Formats: docs/offload-format.md; the operator's procedure: docs/rebuild.md.
"""

"""walproxy's S3 offloader (to come, issue 5).

It will own copying each partition's log to object storage as Kafka log segments, the
per-partition manifests that commit them, trimming the WAL after upload, and rebuilding a
replacement broker's log directory from S3 plus the WAL tail (``walproxy rebuild``).
"""

"""The flags of ``walproxy run`` and the settings they override (the CLI and the docs read it)."""

#: ``walproxy run`` flags for the common settings (they win over the environment and file).
RUN_FLAGS = {
    "--listen": "proxy.listen",
    "--advertised": "proxy.advertised",
    "--upstream": "proxy.upstream",
    "--node-id": "proxy.node_id",
    "--wal-dir": "wal.dir",
    "--admin-listen": "admin.listen",
    "--log-format": "log.format",
}

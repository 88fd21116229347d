"""The error of walproxy's own broker connections (the client and its SASL exchange)."""


class UpstreamError(Exception):
    """The broker answered with an error, or the connection failed."""

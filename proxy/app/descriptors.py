"""Fitting the connection limit to the process's open-file limit (the shell of
:func:`proxy.net.limits.plan_descriptors`): read RLIMIT_NOFILE, raise the soft limit as far
as ``proxy.max_connections`` needs, or stop start-up naming the setting."""

from __future__ import annotations

import resource

import structlog

from proxy.config import Config
from proxy.net.limits import RESERVED_DESCRIPTORS, DescriptorPlan, plan_descriptors

log = structlog.get_logger("walproxy.server")


def reserved_descriptors(config: Config) -> int:
    """Descriptors for everything but client connections: the WAL's segment files besides
    :data:`~proxy.net.limits.RESERVED_DESCRIPTORS`."""
    w = config.wal
    segments = w.max_bytes // w.segment_bytes + 1 if w.enabled and w.backend == "file" else 0
    return RESERVED_DESCRIPTORS + segments


def fit_connection_limit(config: Config) -> DescriptorPlan:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    plan = plan_descriptors(config.proxy.max_connections, reserved_descriptors(config), soft, hard)
    if plan.raise_soft_to is not None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (plan.raise_soft_to, hard))
        log.info("raised the open-file limit", soft=plan.raise_soft_to, was=soft, hard=hard)
    return plan

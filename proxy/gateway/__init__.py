"""Gateway mode: one walproxy in front of a whole cluster, one port per broker.

What this package owns: the broker directory (:mod:`.directory`: which broker is where,
bound to which gateway port) with the trio shell that binds the ports, and one offloader per
broker it fronts (:mod:`.offload`). The port plan is derived from the settings and checked
with them (:mod:`proxy.config.gateway`); it is re-exported here.
"""

from proxy.config.gateway import Address, NodePorts, parse_node_id_ranges

from .directory import BrokerDirectory, Gateway, Targets

__all__ = [
    "Address",
    "BrokerDirectory",
    "Gateway",
    "NodePorts",
    "Targets",
    "parse_node_id_ranges",
]

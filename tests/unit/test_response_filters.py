"""ApiVersions clamping, KIP-511 fallback, and broker endpoint rewriting, on kio messages."""

from __future__ import annotations

import datetime

from kio.schema.api_versions.v3.response import ApiVersion, ApiVersionsResponse
from kio.schema.describe_cluster.v1.response import DescribeClusterBroker, DescribeClusterResponse
from kio.schema.errors import ErrorCode
from kio.schema.find_coordinator.v3.response import FindCoordinatorResponse as FindCoordinatorV3
from kio.schema.find_coordinator.v6.response import Coordinator
from kio.schema.find_coordinator.v6.response import FindCoordinatorResponse as FindCoordinatorV6
from kio.schema.metadata.v12.response import MetadataResponse, MetadataResponseBroker
from kio.schema.response_header.v0.header import ResponseHeader as Header0
from kio.schema.response_header.v1.header import ResponseHeader as Header1
from kio.schema.types import BrokerId
from kio.static.primitive import i16, i32

from proxy.kafka import apiversions, endpoints
from proxy.kafka.codec import decode_response, encode
from proxy.net.filters import DECODED_APIS

ZERO = datetime.timedelta(0)


def _api_versions(entries: list[tuple[int, int, int]]) -> bytes:
    body = ApiVersionsResponse(
        error_code=ErrorCode(0),
        api_keys=tuple(
            ApiVersion(api_key=i16(k), min_version=i16(lo), max_version=i16(hi))
            for k, lo, hi in entries
        ),
        throttle_time=ZERO,
    )
    return encode(Header0(correlation_id=i32(5)), body)


def test_clamps_decoded_apis_and_passes_others() -> None:
    limits = apiversions.decoded_api_limits(DECODED_APIS)
    frame = _api_versions([(0, 0, 99), (3, 0, 99), (18, 0, 99), (1, 4, 99), (999, 0, 7)])
    out = apiversions.rewrite_response(3, frame, limits)
    _, body = decode_response(18, 3, out)
    got = {int(a.api_key): (int(a.min_version), int(a.max_version)) for a in body.api_keys}
    assert got[0] == (0, 13)  # produce: what the skimmer covers
    assert got[3] == limits[3]
    assert got[18] == limits[18]
    assert got[1] == (4, 18)  # fetch: decoded for its KIP-951 node endpoints (v16-v18)
    assert got[999] == (0, 7)  # unknown/vendor keys pass through


def test_unchanged_response_is_forwarded_as_is() -> None:
    limits = apiversions.decoded_api_limits(DECODED_APIS)
    frame = _api_versions([(1, 4, 17)])
    assert apiversions.rewrite_response(3, frame, limits) is frame


def test_api_left_without_common_versions_is_dropped() -> None:
    frame = _api_versions([(3, 50, 60), (1, 0, 1)])
    out = apiversions.rewrite_response(3, frame, {3: (0, 13)})
    _, body = decode_response(18, 3, out)
    assert [int(a.api_key) for a in body.api_keys] == [1]


def test_kip511_proxy_answers_newer_client_in_v0_form() -> None:
    frame = apiversions.unsupported_version_response(42)
    header, body = decode_response(18, 0, frame)
    assert header.correlation_id == 42
    assert body.error_code == apiversions.UNSUPPORTED_VERSION
    [entry] = body.api_keys
    assert entry.api_key == 18 and entry.max_version >= 3


def test_kip511_broker_older_than_client_is_decoded_as_v0() -> None:
    frame = apiversions.unsupported_version_response(7)  # what an older broker sends
    out = apiversions.rewrite_response(4, frame, {18: (0, 2)})
    _, body = decode_response(18, 0, out)
    assert body.error_code == apiversions.UNSUPPORTED_VERSION
    assert [(int(a.min_version), int(a.max_version)) for a in body.api_keys] == [(0, 2)]


POLICY = endpoints.SidecarEndpoints(
    upstream=("10.0.0.1", 19092),
    advertised=("proxy-1", 9092),
    node_id=1,
    peers={2: ("proxy-2", 9092)},
)


def _metadata(brokers: list[tuple[int, str, int]]) -> bytes:
    body = MetadataResponse(
        throttle_time=ZERO,
        brokers=tuple(
            MetadataResponseBroker(node_id=BrokerId(n), host=h, port=i32(p)) for n, h, p in brokers
        ),
        cluster_id="c",
        controller_id=BrokerId(1),
        topics=(),
    )
    return encode(Header1(correlation_id=i32(1)), body)


def test_metadata_brokers_are_rewritten_and_unknown_withheld() -> None:
    frame = _metadata([(1, "10.0.0.1", 19092), (2, "10.0.0.2", 19092), (3, "10.0.0.3", 19092)])
    out = endpoints.rewrite_response(3, 12, frame, POLICY)
    _, body = decode_response(3, 12, out)
    assert [(int(b.node_id), b.host, int(b.port)) for b in body.brokers] == [
        (1, "proxy-1", 9092),
        (2, "proxy-2", 9092),
    ]


def test_metadata_already_pointing_at_proxies_is_untouched() -> None:
    frame = _metadata([(1, "proxy-1", 9092), (2, "proxy-2", 9092)])
    assert endpoints.rewrite_response(3, 12, frame, POLICY) is frame


def test_without_peers_only_own_upstream_is_rewritten() -> None:
    policy = endpoints.SidecarEndpoints(upstream=("10.0.0.1", 19092), advertised=("p", 1))
    assert policy(1, "10.0.0.1", 19092) == ("p", 1)
    assert policy(2, "sidecar-2", 9092) == ("sidecar-2", 9092)


def test_find_coordinator_old_and_batched_forms() -> None:
    old = FindCoordinatorV3(
        throttle_time=ZERO,
        error_code=ErrorCode(0),
        error_message=None,
        node_id=BrokerId(1),
        host="10.0.0.1",
        port=i32(19092),
    )
    out = endpoints.rewrite_response(10, 3, encode(Header1(correlation_id=i32(1)), old), POLICY)
    _, body = decode_response(10, 3, out)
    assert (body.host, body.port) == ("proxy-1", 9092)

    batched = FindCoordinatorV6(
        throttle_time=ZERO,
        coordinators=(
            Coordinator(
                key="g1",
                node_id=BrokerId(2),
                host="10.0.0.2",
                port=i32(1),
                error_code=ErrorCode(0),
                error_message=None,
            ),
            Coordinator(
                key="g2",
                node_id=BrokerId(9),
                host="10.0.0.9",
                port=i32(1),
                error_code=ErrorCode(0),
                error_message=None,
            ),
        ),
    )
    out = endpoints.rewrite_response(10, 6, encode(Header1(correlation_id=i32(1)), batched), POLICY)
    _, body = decode_response(10, 6, out)
    c1, c2 = body.coordinators
    assert (c1.host, c1.port) == ("proxy-2", 9092)
    assert c2.error_code == endpoints.COORDINATOR_NOT_AVAILABLE and c2.node_id == -1


def test_describe_cluster() -> None:
    body = DescribeClusterResponse(
        throttle_time=ZERO,
        error_code=ErrorCode(0),
        error_message=None,
        endpoint_type=1,
        cluster_id="c",
        controller_id=BrokerId(1),
        brokers=(DescribeClusterBroker(broker_id=BrokerId(1), host="10.0.0.1", port=i32(19092)),),
    )
    frame = encode(Header1(correlation_id=i32(1)), body)
    out = endpoints.rewrite_response(60, 1, frame, POLICY)
    _, new = decode_response(60, 1, out)
    assert (new.brokers[0].host, new.brokers[0].port) == ("proxy-1", 9092)


def test_end_txn_is_advertised_only_in_the_versions_its_skimmer_reads() -> None:
    from proxy.kafka.protocol import API_VERSIONS
    from proxy.net.filters import build_response_filters

    filters = build_response_filters(lambda node, host, port: None)
    out = filters[API_VERSIONS](3, memoryview(_api_versions([(26, 0, 9), (999, 0, 7)])))
    _, body = decode_response(18, 3, out)
    got = {int(a.api_key): (int(a.min_version), int(a.max_version)) for a in body.api_keys}
    assert got[26] == (0, 5)  # EndTxn: a broker offering v9 is clamped to the skimmer's
    assert got[999] == (0, 7)

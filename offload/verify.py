"""``walproxy offload verify``: scrub the S3 copy and compare it with the live broker.

:func:`scrub` (synchronous, over an :class:`~offload.store.ObjectStore`) reads every
manifest and every object it names and reports anomalies: manifests that do not decode or
break an invariant (gaps, overlaps, log start outside the first segment, ...), missing
objects, size/CRC/batch mismatches, leader epochs that disagree with the batches, segment
epochs above the manifest's writer. Objects no manifest names are listed as garbage
(information, not an anomaly: a fenced writer's or an interrupted upload's leftovers).
:func:`compare` checks the copy against the broker's log start/end offsets: S3 ahead of the
broker, or missing offsets the broker still has, are anomalies; lag is information.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import layout, segment_codec
from . import manifest as mf
from .node_files import NodeFileError, decode_broker_info
from .store import ObjectNotFound, ObjectStore


@dataclass(frozen=True, slots=True)
class Finding:
    anomaly: bool
    where: str
    message: str

    def line(self) -> str:
        return f"{'ANOMALY' if self.anomaly else 'info   '} {self.where}: {self.message}"


@dataclass
class ScrubResult:
    findings: list[Finding] = field(default_factory=list)
    manifests: dict[tuple[str, int], mf.Manifest] = field(default_factory=dict)  # (name, p)
    objects: int = 0
    bytes: int = 0

    @property
    def anomalies(self) -> list[Finding]:
        return [f for f in self.findings if f.anomaly]

    def add(self, anomaly: bool, where: str, message: str) -> None:
        self.findings.append(Finding(anomaly, where, message))


def scrub(store: ObjectStore, cluster_id: str, *, read_objects: bool = True) -> ScrubResult:
    res = ScrubResult()
    prefix = layout.topics_prefix(cluster_id)
    by_dir: dict[str, list[str]] = {}
    for o in store.list(prefix):
        part_dir = "/".join(o.key.split("/")[:5]) + "/"  # v1/<c>/topics/<tid>/<p>/
        by_dir.setdefault(part_dir, []).append(o.key)
    for part_dir, keys in sorted(by_dir.items()):
        mkey = part_dir + layout.MANIFEST
        if mkey not in keys:
            res.add(False, part_dir, f"{len(keys)} object(s) but no manifest (garbage)")
            continue
        try:
            m = mf.decode(store.get(mkey).data)
        except mf.ManifestError as exc:
            res.add(True, mkey, str(exc))
            continue
        where = f"{m.topic}-{m.partition}"
        try:
            path = layout.parse_manifest_key(cluster_id, mkey)
        except layout.LayoutError as exc:
            res.add(True, mkey, str(exc))
            continue
        if (path.topic_id, path.partition) != (m.topic_id, m.partition):
            res.add(True, where, f"manifest under {part_dir} names another partition")
        res.manifests[(m.topic, m.partition)] = m
        named = {s.key for s in m.segments}
        for k in keys:
            if k != mkey and k not in named:
                res.add(False, where, f"unreferenced object {k} (garbage)")
        epochs: tuple[tuple[int, int], ...] = ()
        for s in m.segments:
            name = layout.parse_segment_key(s.key)
            if name.writer_epoch > m.writer_epoch:
                res.add(True, where, f"{s.key}: epoch above the manifest's {m.writer_epoch}")
            if s.key not in keys:
                res.add(True, where, f"{s.key}: named by the manifest but missing")
                continue
            if not read_objects:
                continue
            try:
                log = segment_codec.decode(store.get(s.key).data, s)
            except ObjectNotFound:
                res.add(True, where, f"{s.key}: vanished while reading")
                continue
            except segment_codec.SegmentError as exc:
                res.add(True, where, str(exc))
                continue
            res.objects += 1
            res.bytes += s.size
            epochs = mf.merge_leader_epochs(
                epochs, segment_codec.describe(log, s.base_offset).leader_epochs
            )
        if read_objects and m.segments:
            want = mf.truncate_leader_epochs(epochs, m.log_start_offset)
            have = mf.truncate_leader_epochs(m.leader_epochs, m.segments[0].base_offset)
            if mf.truncate_leader_epochs(have, m.log_start_offset) != want:
                res.add(
                    True,
                    where,
                    f"leader_epochs {list(m.leader_epochs)} but batches say {list(want)}",
                )
    for node in store.list(f"{layout.cluster_prefix(cluster_id)}nodes/"):
        if node.key.endswith("/" + layout.BROKER):
            try:
                info = decode_broker_info(store.get(node.key).data)
            except (NodeFileError, ObjectNotFound) as exc:
                res.add(True, node.key, str(exc))
                continue
            for topic_name, t in info.topics.items():
                for p in t.partitions:
                    found = res.manifests.get((topic_name, p))
                    if found is not None and found.topic_id != t.topic_id:
                        res.add(
                            True,
                            f"{topic_name}-{p}",
                            "broker.json and manifest disagree on topic id",
                        )
    return res


@dataclass(frozen=True, slots=True)
class BrokerPartition:
    topic_id: object
    leader: int
    log_start: int
    log_end: int


def compare(
    res: ScrubResult, broker: dict[tuple[str, int], BrokerPartition], node_id: int | None
) -> None:
    """Add findings from the live broker's view (partitions ``node_id`` leads; None: all,
    as a gateway's offloaders copy every broker's)."""
    for (topic, p), b in sorted(broker.items()):
        if node_id is not None and b.leader != node_id:
            continue
        where = f"{topic}-{p}"
        m = res.manifests.get((topic, p))
        if m is None or m.topic_id != b.topic_id:
            if b.log_end > b.log_start:
                res.add(False, where, f"not offloaded yet (broker {b.log_start}..{b.log_end})")
            continue
        if m.next_offset > b.log_end:
            res.add(
                True,
                where,
                f"S3 has offsets up to {m.next_offset - 1} but the broker's log ends at "
                f"{b.log_end}: the broker lost data (rebuild it from S3)",
            )
        if b.log_start < m.log_start_offset and m.segments:
            res.add(
                True,
                where,
                f"the broker still has offsets from {b.log_start} but S3 starts at "
                f"{m.log_start_offset}",
            )
        lag = b.log_end - m.next_offset
        if lag > 0:
            res.add(False, where, f"S3 trails the broker by {lag} offsets")

"""The Kafka wire, sans-IO: plain functions over bytes and kio values, no sockets, no trio.

What this package owns: frame boundaries and fixed header fields (:mod:`.framing`), the
zero-copy Produce skimmer (:mod:`.produce_skim`), the offset commit skimmer and responses
(:mod:`.commit_skim`, :mod:`.commit_codec`), the EndTxn skimmer and answers
(:mod:`.end_txn`), a group's ``__consumer_offsets`` partition
(:mod:`.groups`), record batch headers and the batch
patching offload needs (:mod:`.record_batch`), kio decode/encode for the few APIs the proxy
changes (:mod:`.codec`, :mod:`.produce_codec`), the response rewrites (:mod:`.apiversions`:
version clamping; :mod:`.endpoints`, :mod:`.node_endpoints`: no broker address that
bypasses the proxy reaches a client; :mod:`.leader_epochs`: a restored partition's epoch ends
where its restored batches end, KIP-320).
"""

from .codec import CodecError, decode_request, decode_response, encode, kio_version_range
from .commit_skim import CommitSkimError, SkimmedCommit, skim_commit
from .framing import FrameDecoder, FrameError, RequestHeader, encode_frame, parse_request_header
from .leader_epochs import RestoredRanges
from .produce_skim import PartitionRecords, SkimError, SkimmedProduce, produce_acks, skim_produce
from .record_batch import BatchError, BatchHeader, build_batch, iter_batches, parse_header

__all__ = [
    "BatchError",
    "BatchHeader",
    "CodecError",
    "CommitSkimError",
    "FrameDecoder",
    "FrameError",
    "PartitionRecords",
    "RequestHeader",
    "RestoredRanges",
    "SkimError",
    "SkimmedCommit",
    "SkimmedProduce",
    "build_batch",
    "decode_request",
    "decode_response",
    "encode",
    "encode_frame",
    "iter_batches",
    "kio_version_range",
    "parse_header",
    "parse_request_header",
    "produce_acks",
    "skim_commit",
    "skim_produce",
]

"""Running an offloader beside the proxy: restarted after failures, stopped when fenced."""

from __future__ import annotations

import structlog
import trio

from offload.manifest import FencedError
from offload.offloader import Offloader, OffloadStartError
from proxy.ops import metrics as ops_metrics

log = structlog.get_logger("walproxy.server")


async def run_offloader(offloader: Offloader) -> None:
    """Fenced, it stops (loudly, /readyz fails) and the proxy goes on; the WAL is then not
    trimmed, so produce waits once it is full."""
    delay = 1.0
    while True:
        try:
            await offloader.run()
            return
        except FencedError:
            return  # logged and exported by the offloader
        except OffloadStartError:
            raise  # a configuration matter: stop start-up, naming the setting
        except Exception as exc:
            # The produce path must outlive an offloader failure: the WAL keeps what S3
            # does not have yet (and back-pressures when full) while the offloader restarts.
            ops_metrics.OFFLOAD_RESTARTS.inc()
            log.error(
                "offloader failed; restarting it",
                error=repr(exc),
                retry_in_s=delay,
                exc_info=True,
            )
            offloader.reset()
            await trio.sleep(delay)
            delay = min(delay * 2, 30.0)


def trim_metrics(trimmed: int, last: int) -> None:
    """The offloader's view of the WAL it trims (its metrics, set by the produce path)."""
    from offload import metrics as om

    om.WAL_TRIMMED_LSN.set(trimmed)
    om.WAL_LAST_LSN.set(last)

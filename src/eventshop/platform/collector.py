"""CPython's cyclic garbage collector, set for a long-running process of the bus (ADR 0022).

Python's defaults suit a short script: a young collection every 700 tracked allocations more
than frees, and every object that outlives one is promoted, to be walked again by the older
generations' collections. A consumer holds a window of up to `prefetch` deliveries (a
delivery's frames, properties, envelope and payload: tens of tracked objects each) across many
thousands of allocations, so at 700 each window was promoted and walked again and again, and
each full collection also walked every object the process built at start-up (its modules, its
models' schemas, its pools). In `bench bus` the collector took about 7 µs of the consumer's
CPU an event.

`tune` is called once a process has started: it collects, moves what survives (the start-up's
objects) out of every collection's reach (`gc.freeze`), and raises the young generation's
threshold above what a window keeps alive. The older generations keep Python's thresholds.
Reference counting frees almost everything as before; the collector is only for cycles, and
a higher threshold lets a cycle live a few more milliseconds. What `gc.freeze` keeps is never
collected, so a start-up object that later becomes cyclic garbage stays: the start-up's heap
bounds that, once.
"""

from __future__ import annotations

import gc

from eventshop.platform.observability.logging import get_logger
from eventshop.platform.settings import PlatformSettings

log = get_logger(__name__)


def tune(settings: PlatformSettings) -> None:
    """Freeze what the process built at start-up, if `gc_freeze`, and collect the young
    generation every `gc_young_threshold` allocations (700: Python's own)."""
    gc.collect()
    if settings.gc_freeze:
        gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(settings.gc_young_threshold, older, oldest)
    log.info(
        "collector.tuned",
        thresholds=list(gc.get_threshold()),
        frozen=gc.get_freeze_count(),
    )

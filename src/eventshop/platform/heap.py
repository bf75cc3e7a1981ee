"""A service process's heap, settled once the process has started.

CPython's cyclic garbage collector walks every container object of the generations it
collects, and a collection of the oldest walks them all: the modules, classes, routes,
validators and schemas built at start-up, which live as long as the process and are never
garbage. A busy process allocates enough to collect its oldest generation every few seconds,
each time walking that start-up heap again. `settle()` collects once, then moves everything
alive into CPython's permanent generation (`gc.freeze()`), which no collection walks: later
collections walk only what was made since. Reference counting frees frozen objects as it
always does; only a reference cycle among them would no longer be found, and a process's
start-up state is not garbage it will make.

`eventshop run` calls it when the service has started and before it serves
(EVENTSHOP_GC_FREEZE, on by default); so do the bus benchmark's processes, which stand in for
a service's.
"""

from __future__ import annotations

import gc


def settle() -> int:
    """Collect, then freeze what is alive; the number of objects now frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()

"""archive: every event ever published, kept immutable, queryable and replayable.

consumes  # (every event type; its queue is bound to the exchange with the key "#")
publishes nothing
HTTP      GET  /events             (admin) query by type, correlation id, aggregate, time range
          GET  /events/{event_id}  (admin) one event
          POST /replay             (admin) re-deliver a slice of history to one service's queue

Each event is stored as received (after upcasting) with a `position` that gives the archive's
order. A replay publishes the stored envelopes, with their original event ids, to the target
service's queue only: the target's inbox turns events it already handled into no-ops, and a
service added later gets the history it missed. `replay.py` is also callable from a CLI.
"""

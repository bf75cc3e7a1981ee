"""loyalty: points per confirmed order.

consumes  order.confirmed
publishes loyalty.points_awarded
HTTP      GET /points (the caller's balance and history)

It exists to prove the point of event-driven design: a capability added by listening to events
that already flow, with no change to any other service.
"""

"""payments: takes the payment of an order, refuses fraud, refunds cancelled orders.

consumes  payment.requested   (fraud check; a fraudulent one fails at once, else it is queued)
          order.cancelled     (never charge it; refund it if captured; a tombstone if early)
publishes payment.succeeded, payment.failed (declined | fraud | provider_error), payment.refunded
HTTP      GET /payments, GET /payments/{payment_id} (the caller's own)
job       charge_payments (jobs.py): calls the payment provider (adapters.py) for queued
          payments and refunds, never inside a consumer's transaction; handlers.py records
          each outcome and emits its event
"""

"""The gateway's entry under services/, so `eventshop run gateway` finds it like any service.

The code lives in eventshop.gateway (it is the public edge, not a service owning data).
"""

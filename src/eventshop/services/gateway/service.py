"""Re-exports the gateway's composition root for the runtime's `<name>.service:definition`."""

from eventshop.gateway.service import definition

__all__ = ["definition"]

"""What every service stands on, and knows no service: the bus, storage, runtime."""

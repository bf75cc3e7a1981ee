"""Benchmarks run against the real broker and database (`eventshop bench ...`)."""

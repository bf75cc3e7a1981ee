"""Operator and developer tooling: programs that run beside the product, never inside it.

No service or platform code imports these; they drive the platform from outside, as an
operator or a developer would:

- `supervise`: `eventshop up` / `down`, every service a process under supervisord, the
  broker's users and permissions provisioned;
- `invariants`: the invariants of docs/DESIGN.md §3, checked read-only against the databases after a
  run (end-to-end tests, the demo, the benchmarks);
- `smtp_sink`: a local SMTP server for development and tests that keeps every mail as a file;
- `shopclient`: a client of the shop's public HTTP API, as the demo and the order benchmark
  use it.
"""

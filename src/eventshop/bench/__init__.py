"""Benchmarks run against the real broker and database (`eventshop bench ...`).

Each benchmark is its own module or package and owns its command and options: `bus/`,
`orders/`, `eventstore` (its command in `eventstore_cli`); `cli` only gathers the commands
into the `bench` group the `eventshop` command registers. Shared by all: `cpu` (CPU by process
and of the machine, psutil) and `output` (tables on stderr, one JSON object on the last line of
stdout). The benchmarks drive the platform from outside, through `eventshop.tooling`; they
never import the `eventshop` command itself (`eventshop.cli`).
"""

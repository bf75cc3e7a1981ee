"""`eventshop cluster up|down|status`: the three-node RabbitMQ cluster of this machine
(tooling/cluster.py, ADR 0013); `EVENTSHOP_BROKER=cluster eventshop up` runs the platform on it."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from eventshop.tooling import cluster
from eventshop.tooling.supervise import project_root

console = Console(stderr=True)
cluster_app = typer.Typer(
    help="a three-node RabbitMQ cluster on this machine (never the broker on 5672)",
    no_args_is_help=True,
)


@cluster_app.command("up")
def cluster_up() -> None:
    """Start whichever node is down and wait until the three are one cluster (idempotent)."""
    try:
        started = cluster.up(project_root(), say=console.print)
    except RuntimeError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    console.print(f"cluster up: {', '.join(n.name for n in started)}")
    console.print(f"EVENTSHOP_BROKER=cluster  (AMQP {', '.join(cluster.addresses())})")


@cluster_app.command("down")
def cluster_down() -> None:
    """Stop the cluster's three nodes, nothing else."""
    stopped = cluster.down(project_root(), say=console.print)
    console.print("stopped" if stopped else "the cluster was not running")


@cluster_app.command("status")
def cluster_status() -> None:
    """Each node (running, pid, port), and each quorum queue's leader and online members."""
    root = project_root()
    all_nodes = cluster.nodes(root)
    seen = cluster.members(root, all_nodes) or {"running_nodes": []}
    table = Table(title="eventshop cluster")
    for col in ("node", "amqp", "pid", "in the cluster"):
        table.add_column(col)
    for node in all_nodes:
        pid = cluster.pid_of(node)
        table.add_row(
            node.name, node.address(), str(pid or "-"),
            "[green]yes[/]" if node.name in seen["running_nodes"] else "[red]no[/]",
        )  # fmt: skip
    console.print(table)
    if not seen["running_nodes"]:
        raise typer.Exit(1)
    queues = Table(title=f"quorum queues of vhost {cluster.VHOST}")
    for col in ("queue", "leader", "online / members"):
        queues.add_column(col)
    for view in cluster.queue_views(root):
        if view.type == "quorum":
            queues.add_row(view.name, view.leader or "-", f"{len(view.online)}/{len(view.members)}")
    console.print(queues)

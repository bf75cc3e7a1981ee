"""The `eventshop` command."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from eventshop.platform.settings import PlatformSettings

app = typer.Typer(help="eventshop: an event-driven e-commerce back end", no_args_is_help=True)
console = Console(stderr=True)


@app.callback()
def _broker() -> None:
    """EVENTSHOP_BROKER=cluster: the operator's tools (and the console) use the cluster's three
    nodes (tooling/cluster.py) unless EVENTSHOP_AMQP_URL names a broker itself."""
    import os

    from eventshop.tooling import broker

    if "EVENTSHOP_AMQP_URL" not in os.environ and (url := broker.operator_amqp_url()):
        os.environ["EVENTSHOP_AMQP_URL"] = url


@app.command()
def selfcheck(pings: int = typer.Option(200, help="how many events to send")) -> None:
    """Send events through the real broker and database; show what happened to them."""
    from eventshop.cli.selfcheck import run_selfcheck

    report = asyncio.run(
        run_selfcheck(PlatformSettings(broker_identity="shared"), pings, say=console.print)
    )
    table = Table(title="bus self-check")
    table.add_column("what")
    table.add_column("count", justify="right")
    for name, value in vars(report).items():
        table.add_row(
            name.replace("_", " "), f"{value:.2f}" if isinstance(value, float) else str(value)
        )
    console.print(table)
    print(json.dumps({**vars(report), "ok": report.ok}))
    raise typer.Exit(0 if report.ok else 1)


@app.command()
def run(
    service: str = typer.Argument(
        ..., help="a service name, or module:attribute of a ServiceDefinition"
    ),
    port: int | None = typer.Option(
        None, envvar="EVENTSHOP_PORT", help="HTTP port (default: the service's own)"
    ),
) -> None:
    """Run one service process: HTTP app, consumer, outbox relay; SIGTERM stops it gracefully."""
    from eventshop.platform.runtime import run as run_service

    run_service(service, port=port)


@app.command()
def probe(
    service: str = typer.Argument(..., help="a service name"),
    path: str = typer.Option("/health/live", help="the probe's path"),
    port: int | None = typer.Option(
        None, envvar="EVENTSHOP_PORT", help="HTTP port (default: the service's own)"
    ),
) -> None:
    """Ask a service on this host whether it is live (exit 0) or not (exit 1): the image's
    HEALTHCHECK, which has no curl."""
    import urllib.request

    from eventshop.services import PORTS

    url = f"http://127.0.0.1:{port or PORTS[service]}{path}"
    try:
        with urllib.request.urlopen(url, timeout=3) as answer:
            ok = answer.status == 200
    except OSError:
        ok = False
    raise typer.Exit(0 if ok else 1)


@app.command("console")
def console_command(
    port: int | None = typer.Option(None, help="default: EVENTSHOP_CONSOLE_PORT (8090)"),
) -> None:
    """Serve the operators' console (admins only, the API's login): the saga live, the
    services, the parking lot, one order's events and trace. `eventshop up` starts it too."""
    from eventshop.console.serve import run
    from eventshop.console.settings import ConsoleSettings

    settings = ConsoleSettings()
    run(settings if port is None else settings.model_copy(update={"port": port}))


@app.command()
def saga(as_json: bool = typer.Option(False, "--json", help="one JSON object")) -> None:
    """The saga as a whole: orders per state, cancellations by reason, the latest orders with
    their steps, orders ended and time to final over the last ten minutes (the console's
    first page)."""
    import asyncio
    import json

    import asyncpg

    from eventshop.console.saga import saga_summary
    from eventshop.platform.settings import PlatformSettings

    async def read() -> dict[str, object]:
        db = await asyncpg.connect(PlatformSettings().database_url)
        try:
            return (await saga_summary(db)).to_json()
        finally:
            await db.close()

    summary = asyncio.run(read())
    if as_json:
        print(json.dumps(summary))
        return
    console.print(f"orders: {summary['total']}  per state: {summary['states']}")
    console.print(f"cancelled by reason: {summary['cancelled_by_reason']}")


@app.command()
def chaos(
    scenario: str = typer.Argument(..., help="a scenario, or all (eventshop.chaos.faults)"),
    orders: int = typer.Option(200, min=1, max=100_000, help="orders to place"),
    rate: float = typer.Option(20.0, min=0.5, max=1_000, help="orders placed per second"),
    seed: int = typer.Option(1, help="the faults' schedule and the load are drawn from it"),
    settle: float = typer.Option(180.0, min=1, help="seconds to wait for every order final"),
    as_json: bool = typer.Option(False, "--json", help="the JSON objects indented"),
    results: Path = typer.Option(Path("var/chaos/results.jsonl"), help="appended to"),
    platform: str = typer.Option(
        "processes",
        help="processes (eventshop up) or compose (scripts/compose.sh up; the project "
        "EVENTSHOP_COMPOSE_PROJECT names, its gateway on EVENTSHOP_GATEWAY_PORT)",
    ),
) -> None:
    """Break the running platform on purpose (eventshop up, or the compose platform) while
    orders are placed, then count lost, duplicated, unexpected and stuck orders and check every
    invariant with queries of its own. Exit 1 on any of them."""
    import asyncio

    from eventshop.chaos.faults import CLUSTER_SCENARIOS, SCENARIOS
    from eventshop.chaos.run import PLATFORMS, platform_named, print_results, record, run_scenario
    from eventshop.tooling import cluster

    if platform not in PLATFORMS:
        raise typer.BadParameter(
            f"unknown platform {platform!r}: one of {', '.join(PLATFORMS)}", param_hint="--platform"
        )
    target = platform_named(platform)
    # on the cluster, its node killed instead of the machine's broker (which it does not use)
    runnable = (
        {**{k: v for k, v in SCENARIOS.items() if k != "kill-broker"}, **CLUSTER_SCENARIOS}
        if cluster.selected()
        else SCENARIOS
    )
    names = list(runnable) if scenario == "all" else [scenario]
    if any(n not in runnable for n in names):
        where = "on the cluster (EVENTSHOP_BROKER=cluster)" if cluster.selected() else "here"
        raise typer.BadParameter(
            f"unknown scenario {scenario!r} {where}: one of {', '.join(runnable)}, all"
        )
    refused = {n: why for n in names if (why := target.refusal(n)) is not None}
    if scenario != "all" and refused:
        raise typer.BadParameter(f"not on the {platform} platform: {refused[scenario]}")
    for name, why in refused.items():
        console.print(f"[yellow]skipped {name}: {why}[/]")
    done = []
    for name in names:
        if name in refused:
            continue
        result = asyncio.run(
            run_scenario(
                name, orders=orders, rate=rate, seed=seed, settle_s=settle, platform=target
            )
        )
        record(result, results)
        done.append(result)
    print_results(done, as_json)
    if not all(r["ok"] for r in done):
        raise typer.Exit(1)


@app.command("chaos-table")
def chaos_table(results: Path = typer.Option(Path("var/chaos/results.jsonl"))) -> None:
    """The chaos results file as the README's markdown table (the last run of each scenario)."""
    import json

    from eventshop.chaos.run import markdown

    print(markdown([json.loads(line) for line in results.read_text().splitlines() if line]))


@app.command()
def up(
    wait: bool = typer.Option(True, help="wait until every service is ready"),
    replicas: str | None = typer.Option(
        None,
        help="processes per service for this start, e.g. inventory=3,payments=2 (1 to 16 each;"
        " every service not named, and every later `up` without it, runs one; ADR 0012)",
    ),
    on_cluster: bool = typer.Option(
        False, "--cluster", help="on the three-node RabbitMQ cluster (EVENTSHOP_BROKER=cluster)"
    ),
) -> None:
    """Start the whole platform, every service a supervised process; wait until all are ready."""
    import os

    from eventshop.services import CONSOLE_PORT, PORTS, SMTP_SINK_HTTP_PORT
    from eventshop.tooling import cluster, supervise

    try:
        counts = supervise.parse_replicas(replicas)
    except supervise.ReplicasError as exc:
        # one line and usage's exit code, before anything is started
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    layout = supervise.Layout(supervise.project_root())
    if on_cluster:
        os.environ["EVENTSHOP_BROKER"] = "cluster"
    env_extra = {}
    if cluster.selected():  # the cluster first: provisioning and the services need it
        try:
            cluster.up(layout.root, say=console.print)
        except RuntimeError as exc:
            console.print(f"[red]{exc}[/]")
            raise typer.Exit(1) from None
        env_extra["EVENTSHOP_BROKER"] = "cluster"
    try:
        supervise.start(layout, env_extra, say=console.print, replicas=counts)
    except supervise.PlatformConflictError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    if not wait:
        return
    state = asyncio.run(supervise.wait_ready(replicas=counts, layout=layout))
    table = Table(title="eventshop")
    table.add_column("service")
    table.add_column("ready")
    table.add_column("port", justify="right")
    table.add_column("processes", justify="right")
    for name, ok in state.items():
        table.add_row(
            name,
            "[green]yes[/]" if ok else "[red]no[/]",
            str(PORTS[name]),
            str(counts.get(name, 1)),
        )
    console.print(table)
    if not all(state.values()):
        console.print(f"[red]not ready; logs in {layout.logs}[/]")
        raise typer.Exit(1)
    console.print(f"API   http://127.0.0.1:{PORTS['gateway']}/api/v1")
    console.print(f"docs  http://127.0.0.1:{PORTS['gateway']}/docs")
    console.print(f"mail  http://127.0.0.1:{SMTP_SINK_HTTP_PORT}/  (what the platform sent)")
    console.print(f"ops   http://127.0.0.1:{CONSOLE_PORT}/  (the operators' console, admins)")
    console.print(f"logs  {layout.logs}")


@app.command()
def down() -> None:
    """Stop every service of the platform."""
    from eventshop.tooling import supervise

    stopped = supervise.stop(supervise.Layout(supervise.project_root()))
    console.print("stopped" if stopped else "the platform was not running")


@app.command()
def demo(
    orders: int = typer.Option(300, help="how many orders to place"),
    concurrency: int = typer.Option(16, help="orders in flight at once"),
    start: bool = typer.Option(
        True, help="start the platform first; --no-start drives one running elsewhere (compose)"
    ),
) -> None:
    """The shopping demo: start the platform, fill the shop, place orders, check the invariants."""
    from eventshop.cli.demo import run_demo

    if start:
        up(wait=True, replicas=None, on_cluster=False)
    result = asyncio.run(run_demo(orders, concurrency, PlatformSettings().database_url, console))
    table = Table(title="shopping demo")
    table.add_column("outcome")
    table.add_column("orders", justify="right")
    table.add_row("CONFIRMED", str(result["confirmed"]))
    for reason, n in sorted(result["cancelled"].items()):
        table.add_row(f"CANCELLED ({reason})", str(n))
    for key in ("events_published", "notifications_sent", "points_awarded", "parked"):
        table.add_row(key.replace("_", " "), str(result[key]))
    table.add_row("invariants", "[green]hold[/]" if result["invariants_ok"] else "[red]VIOLATED[/]")
    console.print(table)
    for v in result["violations"]:
        console.print(f"[red]{v}[/]")
    if start:
        console.print(
            "the platform is still running: http://127.0.0.1:8000/docs ;"
            " stop it with `eventshop down`"
        )
    print(json.dumps(result))
    raise typer.Exit(0 if result["invariants_ok"] and result["final"] == result["orders"] else 1)


from eventshop.cli.operate import dlq as _dlq  # noqa: E402
from eventshop.cli.operate import status as _status  # noqa: E402

app.add_typer(_dlq, name="dlq")
app.command("status")(_status)

from eventshop.cli.trace import trace as _trace  # noqa: E402

app.command("trace")(_trace)

from eventshop.cli.events import events_app  # noqa: E402
from eventshop.cli.projections import rebuild_projection  # noqa: E402, F401 (its commands join events_app)

app.add_typer(events_app, name="events")

from eventshop.cli.archive import archive_app  # noqa: E402

app.add_typer(archive_app, name="archive")


@app.command()
def asyncapi(
    output: str = typer.Option("-", help="file to write, - for stdout"),
    events_md: bool = typer.Option(False, "--events-md", help="write docs/EVENTS.md's table"),
) -> None:
    """Write the AsyncAPI document generated from the contracts and the service definitions
    (or, with --events-md, the table of events, producers and consuming handlers)."""
    from eventshop.asyncapi import build_asyncapi, events_markdown

    text = events_markdown().rstrip("\n") if events_md else json.dumps(build_asyncapi(), indent=2)
    if output == "-":
        print(text)
    else:
        with open(output, "w") as f:
            f.write(text + "\n")
        console.print(f"wrote {output}")


@app.command()
def openapi(output: str = typer.Option("-", help="file to write, - for stdout")) -> None:
    """Write the public API's OpenAPI document: the gateway's routes with what their services
    answer (the gateway serves src/eventshop/services/gateway/openapi.json)."""
    from eventshop.openapi import openapi_json

    text = openapi_json()
    if output == "-":
        print(text, end="")
    else:
        with open(output, "w") as f:
            f.write(text)


@app.command("settings")
def settings_doc(output: str = typer.Option("-", help="file to write, - for stdout")) -> None:
    """Write the table of every setting: environment variable, type, default, meaning."""
    from eventshop.tooling.settings_doc import settings_markdown

    text = settings_markdown()
    if output == "-":
        print(text, end="")
    else:
        with open(output, "w") as f:
            f.write(text)


@app.command()
def k8s(output: str = typer.Option("-", help="file to write, - for stdout")) -> None:
    """Write the Kubernetes manifests of the platform (deploy/k8s/eventshop.yaml)."""
    from eventshop.tooling.k8s import manifests_yaml

    text = manifests_yaml()
    if output == "-":
        print(text, end="")
    else:
        with open(output, "w") as f:
            f.write(text)


@app.command("compose-env")
def compose_env(
    output: str = typer.Option("var/compose/.env", help="the file to write (made 0600)"),
) -> None:
    """Write this installation's passwords as the variables deploy/docker-compose.yml reads."""
    from pathlib import Path

    from eventshop.tooling.compose import write_compose_env

    write_compose_env(Path(output))


@app.command()
def provision() -> None:
    """Inside the compose platform: the broker's users and rights, the database's roles."""
    from eventshop.tooling.compose import provision as provision_all

    for line in provision_all():
        console.print(line)


from eventshop.bench.cli import bench_app  # noqa: E402

app.add_typer(bench_app, name="bench")


if __name__ == "__main__":
    app()

from eventshop.cli.cluster import cluster_app  # noqa: E402

app.add_typer(cluster_app, name="cluster")

"""`eventshop cluster up|down|status`: a three-node RabbitMQ cluster on this machine, beside (and
never touching) the machine's own broker on 5672 (ADR 0013).

    eventshop cluster up       # idempotent: starts whichever node is down, forms the cluster
    EVENTSHOP_BROKER=cluster eventshop up
    eventshop cluster status   # nodes, members, and where each quorum queue's leader is
    eventshop cluster down     # stops these three nodes only

Each node is the RabbitMQ of the machine (scripts/ensure-infra.sh installs it) started with its
own name (`eventshop-rabbit<N>@localhost`), AMQP port (5681-5683, EVENTSHOP_CLUSTER_PORTS),
Erlang distribution port (AMQP + 20000), its own epmd (EVENTSHOP_CLUSTER_EPMD_PORT, 4391), its
own configuration, plugins file and data under var/cluster/node<N>, and an Erlang cookie of this
installation (var/cluster/home/.erlang.cookie, 0400; rabbitmqctl finds it through HOME). The
nodes form the cluster themselves at first boot (peer discovery, `classic_config`): the first
boots alone, the two others join it; later boots rejoin from their data. The administrator
(`rabbitmqctl -n <node>`) needs the cookie, so only whoever started the cluster manages it.

Selected with EVENTSHOP_BROKER=cluster: `eventshop up` then provisions the cluster
(tooling/broker.py) and gives every service, and the operators' tools, all three addresses.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets as _random
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from eventshop.platform.secrets import secret

#: the RabbitMQ scripts themselves, not /usr/sbin's wrappers (those switch to the rabbitmq user,
#: whose HOME holds the machine broker's cookie)
RABBITMQ_BIN = Path(os.environ.get("EVENTSHOP_RABBITMQ_BIN", "/usr/lib/rabbitmq/bin"))
VHOST = "eventshop"
#: the administrator the nodes make at first boot (its password: a secret of this installation)
ADMIN_USER = "eventshop-cluster-admin"


def selected() -> bool:
    """Whether the platform runs on this cluster (EVENTSHOP_BROKER=cluster) or on the machine's
    broker (unset, or `local`)."""
    value = os.environ.get("EVENTSHOP_BROKER", "local")
    if value not in ("local", "cluster"):
        raise ValueError(f"EVENTSHOP_BROKER must be local or cluster, not {value!r}")
    return value == "cluster"


def ports() -> list[int]:
    raw = os.environ.get("EVENTSHOP_CLUSTER_PORTS", "5681,5682,5683")
    found = [int(p) for p in raw.split(",") if p.strip()]
    if len(found) != 3 or len(set(found)) != 3 or 5672 in found:
        raise ValueError(f"EVENTSHOP_CLUSTER_PORTS: three distinct ports, never 5672: {raw!r}")
    return found


def epmd_port() -> int:
    return int(os.environ.get("EVENTSHOP_CLUSTER_EPMD_PORT", "4391"))


@dataclass(frozen=True)
class Node:
    index: int
    port: int
    root: Path

    @property
    def name(self) -> str:
        return f"eventshop-rabbit{self.index}@localhost"

    @property
    def dist_port(self) -> int:
        return self.port + 20_000

    @property
    def dir(self) -> Path:
        return self.root / "var" / "cluster" / f"node{self.index}"

    @property
    def log(self) -> Path:
        return self.dir / "log" / "server.out"

    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def nodes(root: Path) -> list[Node]:
    root = root.resolve()  # a node runs in its own directory
    return [Node(i, port, root) for i, port in enumerate(ports(), start=1)]


def home(root: Path) -> Path:
    """HOME for the nodes and their rabbitmqctl: where Erlang reads the cookie."""
    return root.resolve() / "var" / "cluster" / "home"


def _cookie(root: Path) -> None:
    path = home(root) / ".erlang.cookie"
    if path.exists():
        return
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    with os.fdopen(fd, "w") as f:
        f.write(_random.token_hex(20).upper())


def ctl_env(root: Path) -> dict[str, str]:
    return {
        **os.environ,
        "HOME": str(home(root)),
        "ERL_EPMD_PORT": str(epmd_port()),
        "ERL_EPMD_ADDRESS": "127.0.0.1",
        # never the machine's rabbitmq-env.conf: it names the machine's node
        "RABBITMQ_CONF_ENV_FILE": str(root.resolve() / "var" / "cluster" / "rabbitmq-env.conf"),
    }


def _node_env(node: Node, all_nodes: Sequence[Node]) -> dict[str, str]:
    d = node.dir
    return {
        **ctl_env(node.root),
        "RABBITMQ_NODENAME": node.name,
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(node.port),
        "RABBITMQ_DIST_PORT": str(node.dist_port),
        "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
        "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
        "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
        "RABBITMQ_LOG_BASE": str(d / "log"),
        "RABBITMQ_PID_FILE": str(d / "pid"),
        # the distribution listens on loopback only
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
    }


def _configure(node: Node, all_nodes: Sequence[Node]) -> None:
    d = node.dir
    (d / "log").mkdir(parents=True, exist_ok=True)
    d.chmod(0o700)  # the configuration holds the administrator's password
    (node.root / "var" / "cluster" / "rabbitmq-env.conf").write_text("")
    (d / "enabled_plugins").write_text("[].\n")  # no management listener: rabbitmqctl is enough
    peers = "\n".join(
        f"cluster_formation.classic_config.nodes.{n.index} = {n.name}" for n in all_nodes
    )
    conf = d / "rabbitmq.conf"
    conf.touch(mode=0o600)
    conf.write_text(
        f"listeners.tcp.1 = 127.0.0.1:{node.port}\n"
        "cluster_formation.peer_discovery_backend = classic_config\n"
        f"{peers}\n"
        f"default_user = {ADMIN_USER}\n"
        f"default_pass = {secret('amqp-cluster-admin')}\n"
        "default_user_tags.administrator = true\n"
        "loopback_users = none\n"
        "log.file.level = info\n"
    )


def ctl(
    root: Path, node: Node, *args: str, timeout: float = 60, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """rabbitmqctl against one node of the cluster, with its cookie and epmd (`stdin`: what
    the command reads, a password for instance)."""
    return subprocess.run(
        [str(RABBITMQ_BIN / "rabbitmqctl"), "-q", "-n", node.name, *args], input=stdin,
        capture_output=True, text=True, timeout=timeout, env=ctl_env(root), check=False,
    )  # fmt: skip


def queues_ctl(root: Path, node: Node, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(RABBITMQ_BIN / "rabbitmq-queues"), "-q", "-n", node.name, *args],
        capture_output=True, text=True, timeout=60, env=ctl_env(root), check=False,
    )  # fmt: skip


def pid_of(node: Node) -> int | None:
    """The node's beam.smp process, found by the node name in its environment (RabbitMQ 3.10
    puts it on no command line)."""
    for proc in psutil.process_iter(["name", "environ"]):
        env = proc.info.get("environ") or {}
        if "beam" in (proc.info.get("name") or "") and env.get("RABBITMQ_NODENAME") == node.name:
            with contextlib.suppress(psutil.Error):
                if proc.status() != psutil.STATUS_ZOMBIE:
                    return int(proc.pid)
    return None


def running(root: Path, node: Node) -> bool:
    """The node runs RabbitMQ (not merely its Erlang VM)."""
    return pid_of(node) is not None and ctl(root, node, "status", timeout=30).returncode == 0


def _spawn(node: Node, all_nodes: Sequence[Node]) -> None:
    _configure(node, all_nodes)
    with node.log.open("ab") as out:
        subprocess.Popen(
            [str(RABBITMQ_BIN / "rabbitmq-server")],
            env=_node_env(node, all_nodes), stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, cwd=node.dir,
        )  # fmt: skip


def _await(root: Path, node: Node, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pid_of(node) is None and time.monotonic() > deadline - timeout_s + 5:
            raise RuntimeError(f"{node.name} exited while starting; see {node.log}")
        done = ctl(root, node, "await_startup", "--timeout", "10", timeout=20)
        if done.returncode == 0:
            return
        time.sleep(0.5)
    raise RuntimeError(f"{node.name} did not start within {timeout_s:.0f} s; see {node.log}")


def up(root: Path, say: Callable[[str], object] = print, timeout_s: float = 180.0) -> list[Node]:
    """Start whichever node is not running and wait until all three are one cluster.

    A blank node joins the first one it finds running (peer discovery at first boot), so on a
    fresh cluster the first node boots alone before the others; nodes with data start together
    (after a full stop each waits for the others before it serves)."""
    if shutil.which(str(RABBITMQ_BIN / "rabbitmq-server")) is None:
        raise RuntimeError(f"no RabbitMQ under {RABBITMQ_BIN}: run scripts/ensure-infra.sh")
    _cookie(root)
    all_nodes = nodes(root)
    down = [n for n in all_nodes if pid_of(n) is None]
    blank = [n for n in down if not (n.dir / "mnesia").exists()]
    for node in down:
        if node in blank:
            continue
        say(f"starting {node.name} on 127.0.0.1:{node.port}")
        _spawn(node, all_nodes)
    for node in blank:
        say(f"starting {node.name} on 127.0.0.1:{node.port} (new)")
        _spawn(node, all_nodes)
        _await(root, node, timeout_s)
    for node in all_nodes:
        _await(root, node, timeout_s)
    _wait_members(root, all_nodes, timeout_s)
    first = all_nodes[0]
    if VHOST not in ctl(root, first, "list_vhosts", "name").stdout.split():
        ctl(root, first, "add_vhost", VHOST)
        say(f"vhost {VHOST}")
    return all_nodes


def start(root: Path, name: str, timeout_s: float = 180.0) -> Node:
    """Start one node of a cluster that was up before (its data on disk) and wait until it
    serves; the others are left as they are (`up` starts every node that is down)."""
    all_nodes = nodes(root)
    node = next(n for n in all_nodes if n.name == name)
    if pid_of(node) is None:
        _spawn(node, all_nodes)
    _await(root, node, timeout_s)
    return node


def _wait_members(root: Path, all_nodes: Sequence[Node], timeout_s: float) -> None:
    want = {n.name for n in all_nodes}
    deadline = time.monotonic() + timeout_s
    while True:
        status = members(root, all_nodes)
        if status is not None and set(status["running_nodes"]) == want:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the nodes did not form one cluster: {status}")
        time.sleep(0.5)


def members(root: Path, all_nodes: Sequence[Node]) -> dict[str, list[str]] | None:
    """{"disk_nodes": [...], "running_nodes": [...]} as a running node sees them."""
    for node in all_nodes:
        if pid_of(node) is None:
            continue
        out = ctl(root, node, "cluster_status", "--formatter", "json", timeout=30)
        if out.returncode == 0:
            with contextlib.suppress(ValueError):
                data = json.loads(out.stdout)
                return {
                    "disk_nodes": list(data.get("disk_nodes", [])),
                    "running_nodes": list(data.get("running_nodes", [])),
                }
    return None


def live_node(root: Path, exclude: str | None = None) -> Node:
    """A running node to ask (the first that answers), other than `exclude`."""
    for node in nodes(root):
        if node.name != exclude and pid_of(node) is not None:
            return node
    raise RuntimeError("no node of the cluster is running: eventshop cluster up")


@dataclass(frozen=True)
class QueueView:
    name: str
    type: str
    leader: str | None
    members: list[str]
    online: list[str]


def queue_views(root: Path, exclude: str | None = None, vhost: str = VHOST) -> list[QueueView]:
    """Every queue of the platform's vhost (or `vhost`) with its leader, members and online
    members (the quorum queues'; a classic queue has none of them)."""
    node = live_node(root, exclude)
    out = ctl(
        root, node, "list_queues", "-p", vhost, "name", "type", "leader", "members", "online",
        "--formatter", "json",
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"list_queues on {node.name}: {out.stderr.strip()}")
    views = []
    for row in json.loads(out.stdout or "[]"):
        leader = row.get("leader")
        views.append(
            QueueView(
                name=row["name"],
                type=str(row.get("type", "")),
                leader=leader if isinstance(leader, str) and "@" in leader else None,
                members=_names(row.get("members")),
                online=_names(row.get("online")),
            )
        )
    return views


def _names(value: object) -> list[str]:
    return sorted(v for v in value if isinstance(v, str)) if isinstance(value, list) else []


def leader_of(root: Path, queue: str, exclude: str | None = None, vhost: str = VHOST) -> str | None:
    """The node leading a quorum queue now, as a running node (not `exclude`) sees it."""
    try:
        views = queue_views(root, exclude, vhost)
    except (RuntimeError, subprocess.TimeoutExpired, ValueError):
        return None
    return next((v.leader for v in views if v.name == queue), None)


def node_named(root: Path, name: str) -> Node:
    return next(n for n in nodes(root) if n.name == name)


def kill(node: Node) -> int | None:
    """kill -9 the node's beam.smp; its pid, or None if it was not running."""
    pid = pid_of(node)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pid


def down(root: Path, say: Callable[[str], object] = print) -> list[str]:
    """Stop the cluster's three nodes (and their epmd), nothing else."""
    stopped = []
    for node in nodes(root):
        pid = pid_of(node)
        if pid is None:
            continue
        if ctl(root, node, "stop", timeout=120).returncode != 0:
            kill(node)
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).wait(timeout=60)
        say(f"stopped {node.name}")
        stopped.append(node.name)
    _stop_epmd(root)
    return stopped


def _stop_epmd(root: Path) -> None:
    """The epmd our nodes started on their own port (never the machine's, on 4369)."""
    port = str(epmd_port())
    for proc in psutil.process_iter(["name", "cmdline", "environ"]):
        if proc.info.get("name") != "epmd":
            continue
        env = proc.info.get("environ") or {}
        cmd = proc.info.get("cmdline") or []
        if env.get("ERL_EPMD_PORT") == port or ("-port" in cmd and port in cmd):
            with contextlib.suppress(psutil.Error):
                proc.kill()


def addresses(root: Path | None = None) -> list[str]:
    return [f"127.0.0.1:{p}" for p in ports()]


def amqp_urls(user: str, password: str, vhost: str = VHOST) -> str:
    """The cluster's URLs for one user, comma-separated (PlatformSettings.amqp_url)."""
    return ",".join(f"amqp://{user}:{password}@{a}/{vhost}" for a in addresses())

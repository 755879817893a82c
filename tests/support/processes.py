"""Real processes for tests: redis-server, PostgreSQL, nginx and daphne workers on free
loopback ports.

Every wait here is bounded; every process started is stopped (and killed if it does
not stop) when its fixture ends.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process {process.args!r} exited with {process.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on port {port} after {timeout}s")


def stop(process: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)


class RedisServer:
    """A private redis-server; ``restart`` keeps the port, like an operator's restart."""

    def __init__(self, *, persistent: bool = False, replica_of: RedisServer | None = None) -> None:
        """``replica_of`` starts a replica of that server (for Sentinel failover tests)."""
        self.replica_of = replica_of
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed: run `make test`, which installs it")
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="test-redis-")
        self.persistent = persistent
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        persistence = ["--appendonly", "yes"] if self.persistent else ["--appendonly", "no"]
        if self.replica_of is not None:
            persistence += ["--replicaof", "127.0.0.1", str(self.replica_of.port)]
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                *persistence,
                "--dir",
                self.dir,
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, self.process)

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


class SentinelServer:
    """A Redis Sentinel (redis-server in sentinel mode) watching one master as ``name``."""

    def __init__(self, master: RedisServer, *, name: str = "chat") -> None:
        self.port = free_port()
        self.name = name
        self.dir = Path(tempfile.mkdtemp(prefix="test-sentinel-"))
        config = self.dir / "sentinel.conf"  # Sentinel rewrites its configuration: a file of its own
        config.write_text(
            f"port {self.port}\n"
            "bind 127.0.0.1\n"
            f"dir {self.dir}\n"
            f"sentinel monitor {name} 127.0.0.1 {master.port} 1\n"
            # Quick failover for tests: a master silent for 1 s is down (the default is 30 s).
            f"sentinel down-after-milliseconds {name} 1000\n"
            f"sentinel failover-timeout {name} 5000\n"
        )
        self.process: subprocess.Popen[bytes] | None = subprocess.Popen(
            ["redis-server", str(config), "--sentinel", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, self.process)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
            self.process = None
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisClusterServers:
    """A Redis Cluster on loopback: ``masters`` masters with one replica each, created
    with ``redis-cli --cluster create`` as an operator would. A node silent for 1 s is
    failed over (``cluster-node-timeout``; the default is 15 s)."""

    NODE_TIMEOUT_MS = 1000

    def __init__(self, *, masters: int = 3) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed: run `make test`, which installs it")
        self.dir = Path(tempfile.mkdtemp(prefix="test-redis-cluster-"))
        self.ports = [free_port() for _ in range(masters * 2)]
        # The cluster bus defaults to port + 10000, which a high free port overflows.
        self.bus_ports = {port: free_port() for port in self.ports}
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        for port in self.ports:
            self.start_node(port)
        subprocess.run(
            [
                *("redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports)),
                *("--cluster-replicas", "1", "--cluster-yes"),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        self.wait_healthy()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    @property
    def seed_urls(self) -> str:
        """REDIS_CLUSTER_URL naming three nodes, the first master first."""
        return ",".join(f"redis://127.0.0.1:{port}/0" for port in self.ports[:3])

    def start_node(self, port: int) -> None:
        node_dir = self.dir / str(port)
        node_dir.mkdir(exist_ok=True)
        self.processes[port] = subprocess.Popen(
            [
                *("redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(node_dir)),
                *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
                *("--cluster-port", str(self.bus_ports[port]), "--cluster-node-timeout", str(self.NODE_TIMEOUT_MS)),
                # A replica may take over however long ago it last heard from its master (a
                # cluster just created may not have synced yet: the test decides, not the age).
                *("--cluster-replica-validity-factor", "0"),
                *("--save", "", "--appendonly", "no", "--loglevel", "warning"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(port, self.processes[port])

    def client(self, port: int) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=5)

    def nodes(self, via: int | None = None) -> list[dict[str, Any]]:
        """CLUSTER NODES as seen by ``via`` (any live node by default): id, port, role, slots."""
        for port in [via] if via is not None else self.live_ports():
            try:
                # NEVER_DECODE: the reply as the server sent it, not redis-py's dict of it.
                raw = self.client(port).execute_command("CLUSTER", "NODES", NEVER_DECODE=True)
            except OSError:
                continue
            return _parse_cluster_nodes(raw.decode())
        raise RuntimeError("no live cluster node")

    def live_ports(self) -> list[int]:
        return [port for port, process in self.processes.items() if process.poll() is None]

    def masters(self) -> list[dict[str, Any]]:
        return [node for node in self.nodes() if "master" in node["flags"] and "fail" not in node["flags"]]

    def master_of_slot(self, slot: int) -> dict[str, Any]:
        for node in self.masters():
            if any(low <= slot <= high for low, high in node["slots"]):
                return node
        raise LookupError(f"no master serves slot {slot}")

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Until every live node says cluster_state:ok and a live master serves every slot."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                states = [self.client(port).cluster("info")["cluster_state"] for port in self.live_ports()]
                live = set(self.live_ports())
                covered = sum(high - low + 1 for node in self.masters() if node["port"] in live for low, high in node["slots"])
                replicas_up = all(self.client(port).info("replication").get("master_link_status", "up") == "up" for port in live)
                if all(state == "ok" for state in states) and covered == 16384 and replicas_up:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the Redis Cluster is not healthy after {timeout}s")
            time.sleep(0.1)

    def kill(self, port: int) -> None:
        """SIGKILL one node, as a crash would."""
        process = self.processes[port]
        process.kill()
        process.wait(5)

    def migrate_slot(self, slot: int, *, to_port: int) -> int:
        """Move ``slot`` and its keys to the master on ``to_port`` (CLUSTER SETSLOT
        IMPORTING/MIGRATING, MIGRATE in batches, SETSLOT NODE), as ``redis-cli --cluster
        reshard`` does. Returns the number of keys moved."""
        source = self.master_of_slot(slot)
        target = next(node for node in self.masters() if node["port"] == to_port)
        source_client, target_client = self.client(source["port"]), self.client(to_port)
        target_client.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source["id"])
        source_client.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target["id"])
        moved = 0
        while keys := source_client.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
            source_client.execute_command("MIGRATE", "127.0.0.1", to_port, "", 0, 5000, "REPLACE", "KEYS", *keys)
            moved += len(keys)
        for node in self.masters():
            self.client(node["port"]).execute_command("CLUSTER", "SETSLOT", slot, "NODE", target["id"])
        return moved

    def stop(self) -> None:
        for process in self.processes.values():
            stop(process)
        shutil.rmtree(self.dir, ignore_errors=True)


def _parse_cluster_nodes(text: str) -> list[dict[str, Any]]:
    nodes = []
    for line in text.strip().splitlines():
        fields = line.split()
        slots = []
        for item in fields[8:]:
            if item.startswith("["):  # a slot being imported or migrated
                continue
            low, _, high = item.partition("-")
            slots.append((int(low), int(high or low)))
        port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
        nodes.append({"id": fields[0], "port": port, "flags": fields[2].split(","), "master_id": fields[3], "slots": slots})
    return nodes


class Cluster:
    """Several daphne workers sharing one SQLite database and one Redis."""

    tokens: dict[str, str]  # username -> bearer token, for the users a fixture minted

    def __init__(
        self,
        redis: RedisServer,
        *,
        workers: int = 3,
        env: dict[str, str] | None = None,
        proxy_headers: bool = False,
        access_log: bool = False,
        server: str = "daphne",
    ) -> None:
        """``env`` overrides the defaults (``DATABASE_URL`` from PostgresServer.create_database
        puts the cluster on PostgreSQL); ``proxy_headers`` starts daphne as the Dockerfile
        does, behind a proxy; ``access_log`` writes each worker's access log, line-buffered,
        to ``access<index>.log`` in ``self.dir`` (read with ``access_entries``); ``server`` is
        ``daphne`` (the default, as in production), ``uvicorn`` (WEB_SERVER=uvicorn) or
        ``granian`` (WEB_SERVER=granian: a supervisor process and its one worker, in a
        process group of their own)."""
        assert server in ("daphne", "uvicorn", "granian"), server
        self.server = server
        self.redis = redis
        self.proxy_headers = proxy_headers
        self.access_log = access_log
        self.dir = Path(tempfile.mkdtemp(prefix="test-cluster-"))
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DJANGO_DEBUG": "0",
            "DJANGO_SECRET_KEY": "test-cluster-not-secret",
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DATABASE_URL": f"sqlite:///{self.dir / 'db.sqlite3'}",
            "REDIS_URL": redis.url,
            "WS_HEARTBEAT_SECONDS": "1",
            "CHAT_RATE_LIMIT": "100000",
            "CHAT_RATE_WINDOW": "1",
            "CHAT_MAX_CONNECTIONS_PER_USER": "1000",
            # A short drain (core/drain.py), so that stopping a worker stays quick.
            "DRAIN_SECONDS": "1",
            "LOG_LEVEL": "WARNING",
            **(env or {}),
        }
        self.manage("migrate", "--verbosity", "0")
        self.ports = [free_port() for _ in range(workers)]
        self.processes: list[subprocess.Popen[bytes] | None] = [None] * workers
        self.taskworkers: list[subprocess.Popen[bytes]] = []
        for index in range(workers):
            self.start_worker(index)

    def manage(self, *args: str) -> str:
        result = subprocess.run(
            [PYTHON, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=60, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stderr}")
        return result.stdout

    def mint_tokens(self, *usernames: str, staff: bool = False) -> dict[str, str]:
        """Create the users (in one process, not one per user) and return their tokens."""
        code = (
            "import sys, json\n"
            "from accounts.services import token_create, user_get_or_create\n"
            f"names = {list(usernames)!r}\n"
            f"users = [user_get_or_create(username=n, create=True, staff={staff!r}) for n in names]\n"
            "print(json.dumps({u.username: token_create(user=u)[1] for u in users}))"
        )

        return dict(json.loads(self.manage("shell", "-c", code).strip().splitlines()[-1]))

    def start_worker(self, index: int) -> None:
        log = open(self.dir / f"worker{index}.log", "ab")  # noqa: SIM115 - closed with the process
        port = str(self.ports[index])
        if self.server == "uvicorn":
            options = ["--proxy-headers"] if self.proxy_headers else ["--no-proxy-headers"]
            if not self.access_log:
                options.append("--no-access-log")  # uvicorn logs access to stdout, in the worker's log
            command = ["-m", "uvicorn", "--host", "127.0.0.1", "--port", port, "--log-level", "warning", *options]
        elif self.server == "granian":
            # As deploy/web-server.sh runs it; the proxy headers are config.asgi's (FORWARDED_ALLOW_IPS).
            options = ["--access-log"] if self.access_log else ["--no-access-log"]
            command = ["-m", "granian", "--interface", "asgi", "--host", "127.0.0.1", "--port", port, "--workers", "1"]
            command += ["--log-level", "warning", *options]
        else:
            options = ["--proxy-headers"] if self.proxy_headers else []
            if self.access_log:
                options += ["--access-log", str(self.dir / f"access{index}.log")]
            command = ["-m", "daphne", "-b", "127.0.0.1", "-p", port, *options]
        env = {name: value for name, value in self.env.items() if name != "FORWARDED_ALLOW_IPS"}
        if self.server == "granian" and self.proxy_headers:
            env["FORWARDED_ALLOW_IPS"] = "127.0.0.1"
        process = subprocess.Popen(
            [PYTHON, *command, "config.asgi:application"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            # granian's worker is a child of its supervisor: a SIGKILL must reach both.
            start_new_session=self.server == "granian",
        )
        log.close()
        self.processes[index] = process
        wait_for_port(self.ports[index], process)

    def start_taskworker(self) -> subprocess.Popen[bytes]:
        """A task worker on the cluster's database and Redis (stopped with the cluster)."""
        log = open(self.dir / "taskworker.log", "ab")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            [PYTHON, "manage.py", "taskworker"], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        self.taskworkers.append(process)
        return process

    def kill_worker(self, index: int) -> None:
        process = self.processes[index]
        assert process is not None
        if self.server == "granian":
            os.killpg(process.pid, signal.SIGKILL)  # the supervisor and its worker
        else:
            process.kill()
        process.wait(5)
        self.processes[index] = None

    def rss_kib(self, index: int = 0) -> int:
        """Worker ``index``'s resident memory (VmRSS), in KiB (under granian, of the worker
        process its supervisor started)."""
        process = self.processes[index]
        assert process is not None
        pid = process.pid
        if self.server == "granian":
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            assert len(children) == 1, f"granian's supervisor {pid} has workers {children}"
            pid = int(children[0])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def http(self, index: int = 0) -> str:
        return f"http://127.0.0.1:{self.ports[index]}"

    def ws(self, index: int, path: str) -> str:
        return f"ws://127.0.0.1:{self.ports[index]}{path}"

    def access_entries(self, index: int) -> list[str]:
        """Lines of worker ``index``'s access log (with ``access_log=True``)."""
        path = self.dir / f"access{index}.log"
        return path.read_text(errors="replace").splitlines() if path.exists() else []

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(self.dir.glob("*worker*.log")))

    def stop(self) -> None:
        for process in [*self.processes, *self.taskworkers]:
            if process is not None:
                stop(process)
                if self.server == "granian" and process in self.processes:
                    with contextlib.suppress(ProcessLookupError):  # a worker its supervisor left behind
                        os.killpg(process.pid, signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)


def _postgres_bin_dir() -> Path:
    """The newest PostgreSQL server binaries of Debian's packages (or initdb on PATH)."""
    candidates = sorted(
        (Path(d) for d in glob.glob("/usr/lib/postgresql/*/bin") if (Path(d) / "initdb").exists()),
        key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0,
    )
    if candidates:
        return candidates[-1]
    initdb = shutil.which("initdb")
    if initdb is None:
        raise RuntimeError("PostgreSQL is not installed: run `make test`, which installs it")
    return Path(initdb).resolve().parent


class PostgresServer:
    """A private PostgreSQL cluster on a free loopback port, trust authentication, no fsync.

    PostgreSQL refuses to run as root: as root, initdb and the server run as Debian's
    ``postgres`` system user (the package creates it), in a temporary directory that
    user owns. ``create_database`` gives each test cluster a database of its own.
    """

    USER = "chat"  # the password-less (trust) role the application connects as

    def __init__(self) -> None:
        self.bin = _postgres_bin_dir()
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="test-postgres-"))
        self.data = self.dir / "data"
        self.log_path = self.dir / "postgres.log"
        self._user: str | None = None  # who runs initdb and the server: this process's user, or
        if os.geteuid() == 0:  # as root, Debian's postgres system user
            try:
                shutil.chown(self.dir, user="postgres", group="postgres")
            except LookupError:
                raise RuntimeError("no `postgres` system user: run `make test`, which installs PostgreSQL") from None
            self._user = "postgres"
        self.process: subprocess.Popen[bytes] | None = None
        self._databases = 0
        try:
            self._run(
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "--username=postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            )
            self.start()
            self._sql(f"CREATE ROLE {self.USER} LOGIN CREATEDB")
        except BaseException:
            self.stop()
            raise

    def _run(self, *args: str) -> None:
        result = subprocess.run(
            list(args),
            cwd=self.dir,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            user=self._user,
            group=self._user,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed:\n{result.stdout}{result.stderr}")

    def _sql(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", autocommit=True, connect_timeout=10
        ) as connection:
            connection.execute(statement)

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [
                str(self.bin / "postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-k",
                str(self.dir),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=300",
            ],
            cwd=self.dir,
            stdout=log,
            stderr=subprocess.STDOUT,
            user=self._user,
            group=self._user,
        )
        log.close()
        assert self.process is not None
        wait_for_port(self.port, self.process)
        deadline = time.monotonic() + 30
        while True:  # the port opens before the server accepts logins
            try:
                self._sql("SELECT 1")
                return
            except Exception:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"PostgreSQL did not start:\n{self.logs()}") from None
                time.sleep(0.1)

    def create_database(self, prefix: str = "test") -> str:
        """A new, empty database owned by the application's role; its DATABASE_URL."""
        self._databases += 1
        name = re.sub(r"[^a-z0-9_]", "_", f"{prefix}_{self._databases}".lower())
        self._sql(f"CREATE DATABASE {name} OWNER {self.USER}")
        return f"postgres://{self.USER}@127.0.0.1:{self.port}/{name}"

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:] if self.log_path.exists() else ""

    def shut_down(self) -> None:
        """Stop the server but keep its data (``start`` brings it back on the same port):
        a fast shutdown, which rolls back open transactions and closes every connection."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(15)
        self.process = None

    def restart(self) -> None:
        self.shut_down()
        self.start()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # fast shutdown: roll back, close connections
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None
        shutil.rmtree(self.dir, ignore_errors=True)


NGINX_TEMPLATE = ROOT / "deploy" / "nginx.conf.template"
_NGINX_PLACEHOLDER = re.compile(r"\$\{(NGINX_[A-Z0-9_]+)\}")


def nginx_placeholders(template: str | None = None) -> set[str]:
    """The ``${NGINX_...}`` variables the project's nginx template needs."""
    text = NGINX_TEMPLATE.read_text() if template is None else template
    return set(_NGINX_PLACEHOLDER.findall(text))


def render_nginx_site(values: dict[str, str]) -> str:
    """deploy/nginx.conf.template with its variables filled in, as the nginx image's
    envsubst does at start-up in docker-compose.yml (only the ``NGINX_`` variables)."""
    text = NGINX_TEMPLATE.read_text()
    missing = nginx_placeholders(text) - set(values)
    if missing:
        raise KeyError(f"no value for {sorted(missing)} in the nginx template")
    return _NGINX_PLACEHOLDER.sub(lambda match: values[match.group(1)], text)


class NginxServer:
    """nginx from Debian's package serving one site configuration (an http-context file,
    like the nginx image's conf.d) under a test-only main configuration: in the foreground,
    everything (logs, pid, temporary files) in its own directory."""

    def __init__(self, site: str, *, port: int) -> None:
        nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
        if nginx is None:
            raise RuntimeError("nginx is not installed: run `make test`, which installs it")
        self.port = port
        self.dir = Path(tempfile.mkdtemp(prefix="test-nginx-"))
        self.dir.chmod(0o755)  # its worker processes run as an unprivileged user when started as root
        (self.dir / "site.conf").write_text(site)
        mime_types = "include /etc/nginx/mime.types;" if Path("/etc/nginx/mime.types").exists() else ""
        temp_paths = "\n".join(
            f"    {kind}_temp_path {self.dir / ('temp-' + kind)};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        (self.dir / "nginx.conf").write_text(
            f"""\
daemon off;
master_process on;
worker_processes 1;
error_log {self.dir / "error.log"} info;
pid {self.dir / "nginx.pid"};
events {{
    worker_connections 1024;
}}
http {{
    {mime_types}
    default_type application/octet-stream;
    # Which worker answered each request: what tests check to see round-robin at work.
    log_format upstream '$remote_addr [$time_local] "$request" $status $body_bytes_sent upstream=$upstream_addr';
    access_log {self.dir / "access.log"} upstream;
{temp_paths}
    include {self.dir / "site.conf"};
}}
"""
        )
        check = subprocess.run(
            [nginx, "-t", "-p", str(self.dir), "-c", str(self.dir / "nginx.conf")],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if check.returncode != 0:
            raise RuntimeError(f"nginx rejected the configuration:\n{check.stderr}")
        self.process: subprocess.Popen[bytes] | None = subprocess.Popen(
            [nginx, "-p", str(self.dir), "-c", str(self.dir / "nginx.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(port, self.process)
        except BaseException:
            self.stop()
            raise

    def access_entries(self) -> list[str]:
        """nginx's access log: one line per finished request, ending ``upstream=<host:port>``."""
        path = self.dir / "access.log"
        return path.read_text(errors="replace").splitlines() if path.exists() else []

    def logs(self) -> str:
        parts = []
        for name in ("error.log", "access.log"):
            path = self.dir / name
            if path.exists():
                parts.append(f"--- nginx {name}\n" + path.read_text(errors="replace")[-3000:])
        return "\n".join(parts)

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)  # SIGTERM: nginx's fast shutdown, long-lived connections included
            self.process = None
        shutil.rmtree(self.dir, ignore_errors=True)

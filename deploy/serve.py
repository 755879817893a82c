"""Run N daphne workers on one port with no sticky sessions, plus the task worker (``make serve``).

supervisor's ``fcgi-program`` opens the listening socket once and hands it to every
worker as file descriptor 0 (``daphne --fd 0``), which is how the Channels deployment
docs run several daphne processes; the kernel spreads new connections across them, so
any connection may land on any worker, and the Redis-backed hub makes that correct.

``make serve`` is for running several workers on one machine without hand-set secrets:
without ``DJANGO_SECRET_KEY`` it makes a random key for the run and says so (sign-ins
end when it stops). A deployment (the image, docker-compose.yml) sets the key; without
it the settings refuse to load and name the variable.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


SERVERS = {
    # Both serve the same ASGI application from the socket supervisor hands them as fd 0.
    "daphne": "{bin}/daphne --fd 0 --proxy-headers -v 1 config.asgi:application",
    "uvicorn": "{bin}/uvicorn --fd 0 --proxy-headers --no-access-log --log-level warning config.asgi:application",
}


def supervisor_config(*, workers: int, host: str, port: int, run_dir: Path, server: str = "daphne") -> str:
    bin_dir = Path(sys.executable).parent
    command = SERVERS[server].format(bin=bin_dir)
    return f"""\
[supervisord]
nodaemon=true
logfile={run_dir}/supervisord.log
pidfile={run_dir}/supervisord.pid
childlogdir={run_dir}

[unix_http_server]
file={run_dir}/supervisor.sock

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{run_dir}/supervisor.sock

[fcgi-program:web]
socket=tcp://{host}:{port}
socket_backlog=2048
directory={ROOT}
command={command}
numprocs={workers}
process_name=web%(process_num)d
autostart=true
autorestart=true
startsecs=2
; SIGTERM drains a worker over DRAIN_SECONDS (10 by default, core/drain.py), then it exits
stopwaitsecs=15
stopasgroup=true
killasgroup=true
stdout_logfile=/dev/stdout
stdout_logfile_maxbytes=0
redirect_stderr=true

[program:taskworker]
directory={ROOT}
command={sys.executable} manage.py taskworker
autostart=true
autorestart=true
stopwaitsecs=10
stopasgroup=true
killasgroup=true
stdout_logfile=/dev/stdout
stdout_logfile_maxbytes=0
redirect_stderr=true
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--server", choices=sorted(SERVERS), default=os.environ.get("WEB_SERVER", "daphne"))
    parser.add_argument("--migrate", action="store_true", help="run manage.py migrate first (make serve)")
    args = parser.parse_args()
    if not any(os.environ.get(name) for name in ("REDIS_URL", "REDIS_URLS", "REDIS_SENTINELS", "REDIS_CLUSTER_URL")):
        sys.exit("serve: set REDIS_URL (or REDIS_URLS, REDIS_SENTINELS or REDIS_CLUSTER_URL); workers share rooms through Redis")
    if not os.environ.get("DJANGO_SECRET_KEY"):
        # Every worker and the task worker inherit this environment, so they share the key.
        os.environ["DJANGO_SECRET_KEY"] = secrets.token_urlsafe(50)
        print(
            "serve: DJANGO_SECRET_KEY is not set: using a random key made for this run "
            "(sign-ins end when it stops; set DJANGO_SECRET_KEY to keep them)",
            flush=True,
        )
    if args.migrate:
        migrated = subprocess.run([sys.executable, "manage.py", "migrate", "--verbosity", "0"], cwd=ROOT, check=False)
        if migrated.returncode != 0:
            sys.exit(migrated.returncode)
    run_dir = Path(tempfile.mkdtemp(prefix="serve-"))
    # Every worker writes its metrics here and /metrics on any of them sums them all
    # (prometheus-client's multiprocess mode): a scrape that lands on one worker of
    # several must not report that worker's share alone.
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        (run_dir / "metrics").mkdir()
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(run_dir / "metrics")
    config = run_dir / "supervisord.conf"
    config.write_text(
        supervisor_config(workers=args.workers, host=args.host, port=args.port, run_dir=run_dir, server=args.server)
    )
    print(f"serving {args.workers} {args.server} workers on http://{args.host}:{args.port}/ (config {config})", flush=True)
    supervisord = shutil.which("supervisord", path=str(Path(sys.executable).parent)) or "supervisord"
    os.execv(supervisord, [supervisord, "-c", str(config)])


if __name__ == "__main__":
    main()

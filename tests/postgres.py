"""A throwaway PostgreSQL server for tests: initdb into a temporary folder, start on a free local port.

Usage: ``with postgres_server() as url: ...`` yields a SQLAlchemy URL
(``postgresql://postgres@127.0.0.1:PORT/fastfcnn``, trust authentication, loopback only); the
server is stopped and its folder removed on exit. PostgreSQL refuses to run as root, so as root
initdb and pg_ctl run as an unprivileged user (``nobody``, or a ``fastfcnn-pg`` system user made
when there is no nobody) that owns the temporary folder. ``available()`` says whether the server
binaries are installed (.ci/run installs them when missing).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

DATABASE = "fastfcnn"


def server_bin(name: str) -> str | None:
    """The newest /usr/lib/postgresql/*/bin/NAME (Debian's layout), else NAME on the PATH."""
    def version(path):
        m = re.search(r"/postgresql/(\d+)", path)
        return int(m.group(1)) if m else 0
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=version, reverse=True)
    return found[0] if found else shutil.which(name)


def available() -> bool:
    return all(server_bin(n) for n in ("initdb", "pg_ctl"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_user() -> dict:
    """Popen arguments that run a command as an unprivileged user (nothing when not root)."""
    if os.geteuid() != 0:
        return {}
    try:
        pw = pwd.getpwnam("nobody")
    except KeyError:
        try:
            pw = pwd.getpwnam("fastfcnn-pg")
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "fastfcnn-pg"],
                           check=True, capture_output=True)
            pw = pwd.getpwnam("fastfcnn-pg")
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


def _run(cmd: list, as_user: dict, **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, LC_ALL="C", LANG="C")
    env.pop("PGDATA", None)
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, **as_user, **kwargs)


@contextlib.contextmanager
def postgres_server():
    """Start a PostgreSQL server in a temporary folder; yield its URL; stop it and remove the folder."""
    initdb, pg_ctl = server_bin("initdb"), server_bin("pg_ctl")
    if not (initdb and pg_ctl):
        raise FileNotFoundError("the PostgreSQL server (initdb, pg_ctl) is not installed")
    as_user = _server_user()
    root = Path(tempfile.mkdtemp(prefix="fastfcnn-pg-"))      # under /tmp, which the server user can reach
    data, sockets, log = root / "data", root / "sockets", root / "server.log"
    sockets.mkdir()
    if as_user:
        for path in (root, sockets):
            os.chown(path, as_user["user"], as_user["group"])
    started = False
    try:
        r = _run([initdb, "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"],
                 as_user, cwd=root)
        if r.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{r.stdout}\n{r.stderr}")
        for _ in range(3):          # another process may take the free port between the check and the start
            port = free_port()
            options = (f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off "
                       "-c synchronous_commit=off -c full_page_writes=off")
            r = _run([pg_ctl, "-D", data, "-l", log, "-o", options, "-w", "-t", "30", "start"], as_user, cwd=root)
            if r.returncode == 0:
                started = True
                break
        if not started:
            raise RuntimeError(f"pg_ctl start failed:\n{r.stdout}\n{r.stderr}\n{_tail(log)}")
        _create_database(port)
        yield f"postgresql://postgres@127.0.0.1:{port}/{DATABASE}"
    finally:
        if started:
            _run([pg_ctl, "-D", data, "-m", "fast", "-w", "-t", "30", "stop"], as_user, cwd=root)
        shutil.rmtree(root, ignore_errors=True)


def _create_database(port: int) -> None:
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", connect_timeout=10)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {DATABASE}")
    finally:
        conn.close()


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text().splitlines()[-lines:])
    except OSError:
        return ""

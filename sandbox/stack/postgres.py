"""A private PostgreSQL cluster on loopback: the platform database and Prefect's."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
from pathlib import Path

import psycopg
from psycopg import sql

from sandbox.stack.processes import port_open, wait_until

__all__ = ["PostgresCluster", "find_bindir"]


def find_bindir() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version_key, reverse=True)
    if candidates:
        return Path(candidates[0]).parent
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True)
        return Path(out.stdout.strip())
    raise RuntimeError(
        "PostgreSQL server binaries not found; install Debian's `postgresql` package "
        "(scripts/bootstrap does this)"
    )


def _version_key(path: str) -> int:
    try:
        return int(Path(path).parent.parent.name)
    except ValueError:
        return 0


class PostgresCluster:
    """initdb/start/stop of one cluster. As root, it runs as the `postgres` user (initdb refuses root)."""

    def __init__(self, datadir: Path, rundir: Path, port: int, superuser_password: str) -> None:
        self.datadir = datadir
        self.rundir = rundir
        self.port = port
        self.password = superuser_password
        self.bindir = find_bindir()
        self.log_file = rundir.parent / "logs" / "postgres.log"

    # --- privileges -------------------------------------------------------------------------
    def _as_owner(self, argv: list[str]) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *argv]
        return argv

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(path, pw.pw_uid, pw.pw_gid)

    # --- lifecycle --------------------------------------------------------------------------
    @property
    def initialised(self) -> bool:
        return (self.datadir / "PG_VERSION").exists()

    def init(self) -> None:
        if self.initialised:
            return
        for d in (self.datadir, self.rundir, self.log_file.parent):
            d.mkdir(parents=True, exist_ok=True)
            self._chown(d)
        pwfile = self.rundir / ".pgpass-init"
        pwfile.write_text(self.password + "\n")
        self._chown(pwfile)
        pwfile.chmod(0o600)
        try:
            subprocess.run(
                self._as_owner([
                    str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", "postgres",
                    "--pwfile", str(pwfile), "-A", "scram-sha-256", "--auth-local=peer",
                    "-E", "UTF8", "--locale=C.UTF-8",
                ]),
                check=True, capture_output=True, text=True,
            )
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"initdb failed: {exc.stderr.strip()}") from exc
        finally:
            pwfile.unlink(missing_ok=True)

    def running(self) -> bool:
        return port_open("127.0.0.1", self.port)

    def start(self) -> None:
        self.init()
        if self.running():
            return
        self.rundir.mkdir(parents=True, exist_ok=True)
        self._chown(self.rundir)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self._chown(self.log_file.parent)
        opts = (
            f"-p {self.port} -k {self.rundir} -c listen_addresses=127.0.0.1 "
            "-c max_connections=300 -c shared_buffers=256MB -c fsync=on "
            "-c log_min_duration_statement=-1 -c idle_in_transaction_session_timeout=0"
        )
        subprocess.run(
            self._as_owner([
                str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-o", opts,
                "-l", str(self.log_file), "-w", "-t", "60", "start",
            ]),
            check=True, capture_output=True, text=True,
        )
        wait_until(self.running, timeout_s=30, what="PostgreSQL", log_file=self.log_file)

    def stop(self) -> bool:
        if not self.initialised or not (self.datadir / "postmaster.pid").exists():
            return False
        subprocess.run(
            self._as_owner([str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "stop"]),
            check=False, capture_output=True, text=True,
        )
        return True

    def restart(self) -> None:
        """A real server restart (used by crash-safety tests)."""
        self.stop()
        self.start()

    # --- roles and databases ----------------------------------------------------------------
    def superuser_dsn(self, dbname: str = "postgres") -> str:
        return psycopg.conninfo.make_conninfo(
            host="127.0.0.1", port=self.port, user="postgres", password=self.password, dbname=dbname
        )

    def ensure_database(self, dbname: str, owner: str, owner_password: str) -> str:
        """Create role and database if missing (idempotent); return the owner's DSN."""
        with psycopg.connect(self.superuser_dsn(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (owner,)).fetchone()
            stmt = sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}" if exists else "CREATE ROLE {} LOGIN PASSWORD {}")
            conn.execute(stmt.format(sql.Identifier(owner), sql.Literal(owner_password)))
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone():
                conn.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(dbname), sql.Identifier(owner))
                )
        return psycopg.conninfo.make_conninfo(
            host="127.0.0.1", port=self.port, user=owner, password=owner_password, dbname=dbname
        )

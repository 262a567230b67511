"""One object that brings the whole local stack up and down, idempotently, and knows where it is."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
from pydantic import SecretStr

from sandbox.config import ROLES, SLOW_WRITE_FILE, SandboxSettings
from sandbox.release_faults import bad_deploy_patch
from sandbox.stack import people
from sandbox.stack.host import DeployHost, NothingToCommit
from sandbox.stack.info import StackInfo
from sandbox.stack.postgres import PostgresCluster
from sandbox.stack.prefect_server import PrefectServer, prefect_client_env
from sandbox.stack.processes import is_running, port_open, stop
from sandbox.stack.rabbitmq import MONITOR_USER, RabbitMqServer
from sandbox.stack.redis import RedisServer, fill_to_maxmemory, seed_target, unfill
from sandbox.stack.runners import FAST_POOL, WORK_POOL, AlertReceiver, WarmRunnerProcess
from sandbox.stack.s3 import MotoS3
from sandbox.stack.services import SERVICES, ServiceRunner
from sandbox.stack.sshd import SshServer

__all__ = ["PROJECT_DIR", "Stack"]

Log = Callable[[str], object]

PROJECT_DIR = Path(__file__).resolve().parents[2]
S3_BUCKET = "rp-evidence"
S3_REGION = "us-east-1"
#: Where runs on any replica persist task results (Prefect's S3Bucket block of this name), so a
#: retry picked up by another host reads what the first attempt completed.
RESULTS_BUCKET = "rp-results"


class Stack:
    def __init__(self, settings: SandboxSettings | None = None) -> None:
        self.settings = settings or SandboxSettings()
        self.home = self.settings.home
        self.secrets = self._load_or_make_secrets()
        s = self.settings
        self.pg = PostgresCluster(self.home / "pg", self.home / "pgrun", s.pg_port, self.secrets["pg_superuser"])
        self.sshd = SshServer(self.home, s.sshd_port)
        self.s3 = MotoS3(self.home, s.s3_port, S3_REGION)
        self.host = DeployHost(self.home)
        #: The target's own Redis and RabbitMQ (seed 003's evidence sources), not Prefect's Redis.
        self.target_redis = RedisServer(self.home, s.target_redis_port, name="target-redis",
                                        password=self.secrets["target_redis_password"],
                                        maxmemory_mb=s.target_redis_maxmemory_mb, persistent=False)
        self.rabbitmq = RabbitMqServer(self.home, port=s.rabbitmq_port, management_port=s.rabbitmq_management_port,
                                       dist_port=s.rabbitmq_dist_port, epmd_port=s.rabbitmq_epmd_port,
                                       admin_password=self.secrets["rabbitmq_admin_password"],
                                       monitor_password=self.secrets["rabbitmq_monitor_password"])
        if s.prefect_db == "postgresql":
            prefect_db: str | None = (
                f"postgresql+asyncpg://prefect:{self.secrets['pg_prefect']}@127.0.0.1:{s.pg_port}/prefect"
            )
            prefect_home = self.home / "prefect"
        else:
            prefect_db, prefect_home = None, PROJECT_DIR / ".prefect"
        self.prefect = PrefectServer(prefect_home, s.prefect_port, prefect_db, self.home,
                                     api_ports=s.prefect_api_ports, redis_port=s.redis_port)
        self.warm_runner = WarmRunnerProcess(self.home, self.prefect.api_url, PROJECT_DIR)
        #: Two replicas on the runbook pool, as two hosts would run them.
        self.runners = [WarmRunnerProcess(self.home, self.prefect.api_url, PROJECT_DIR, pool=WORK_POOL,
                                          name=f"runner-{n}", limit=12) for n in ("a", "b")]
        self.receiver = AlertReceiver(self.home, self.prefect.api_url, PROJECT_DIR, s.alert_receiver_port)
        self.info_file = self.home / "stack.json"

    # --- generated credentials -------------------------------------------------------------
    def _load_or_make_secrets(self) -> dict[str, str]:
        path = self.home / "secrets.json"
        if self.home.exists() and self.home.stat().st_uid != os.geteuid():
            # A fixed path under /tmp: never trust one that another user created first.
            raise RuntimeError(f"{self.home} belongs to another user; remove it or set SANDBOX_HOME")
        if path.exists():
            known = dict(json.loads(path.read_text()))
            # Credentials added by later versions of the stack, for a state dir made before them.
            added = {k: v for k, v in _later_secrets().items() if k not in known}
            if added:
                known.update(added)
                path.write_text(json.dumps(known, indent=2))
                path.chmod(0o600)
            return known
        self.home.mkdir(parents=True, exist_ok=True)
        self.home.chmod(0o755)
        made = {
            "pg_superuser": secrets.token_urlsafe(18),
            "pg_wallet": secrets.token_urlsafe(18),
            "pg_prefect": secrets.token_urlsafe(18),
            "s3_access_key": "RPSANDBOX" + secrets.token_hex(6).upper(),
            "s3_secret_key": secrets.token_urlsafe(30),
            **{f"token_{role}": secrets.token_urlsafe(24) for role in ROLES},
            **_later_secrets(),
        }
        path.write_text(json.dumps(made, indent=2))
        path.chmod(0o600)
        return made

    @property
    def tokens(self) -> dict[str, str]:
        return {role: self.secrets[f"token_{role}"] for role in ROLES}

    def services(self, platform_dsn: str) -> ServiceRunner:
        return ServiceRunner(self.settings, platform_dsn, self.tokens, self.host.checkout)

    # --- up / down -------------------------------------------------------------------------
    def up(self, *, with_prefect: bool = True, with_worker: bool = True, log: Log = print) -> StackInfo:
        log(f"stack home: {self.home}")
        self.home.mkdir(parents=True, exist_ok=True)
        # Erlang boots for 10-15 s: RabbitMQ starts first, in the background, and is waited for last.
        if self.rabbitmq.start():
            log("rabbitmq: starting (in the background)")
        log("postgresql: starting")
        self.pg.start()
        platform_dsn = self.pg.ensure_database("wallet", "wallet_app", self.secrets["pg_wallet"])
        self.pg.ensure_database("prefect", "prefect", self.secrets["pg_prefect"])
        if with_prefect:
            log(f"prefect server: starting (on {self.settings.prefect_db})")
            self.prefect.start(wait=False)
        log("platform schema: applying")
        subprocess.run(
            [sys.executable, "-m", "sandbox.db", "init"],
            env={**self.services(platform_dsn).env()}, check=True,
        )
        log("sshd: starting")
        self.sshd.start()
        log("s3 (moto): starting")
        self.s3.start()
        self.s3.ensure_bucket(S3_BUCKET, self.secrets["s3_access_key"], self.secrets["s3_secret_key"])
        self.s3.ensure_bucket(RESULTS_BUCKET, self.secrets["s3_access_key"], self.secrets["s3_secret_key"],
                              object_lock=False)
        if self.target_redis.start():
            with self.target_redis.client() as client:
                seed_target(client)
            log(f"target redis: started on :{self.settings.target_redis_port}, seeded")
        log("deploy host: preparing servers_v2")
        self.host.create()
        people.ensure_keys(self.home)
        runner = self.services(platform_dsn)
        for name in SERVICES:
            log(f"sandbox {name}: starting")
            runner.start(name)
        info = self.info(platform_dsn)
        info.dump(self.info_file)
        if with_prefect:
            self.prefect.wait()
            log(f"prefect server: ready at {self.prefect.api_url}")
            if with_worker:
                self.ensure_work_pool()
                self.ensure_result_storage()
                for replica in self.runners:
                    self.start_runner(replica, info)
                    log(f"warm runner {replica.name}: started on pool '{WORK_POOL}'")
                # capture-evidence is read-only and must work while S3 is down (its bundle waits locally
                # for `evidence sync`): its results stay on its own host.
                self.warm_runner.start(info.env())
                log(f"warm runner: started on pool '{FAST_POOL}'")
                self.receiver.start({**info.env(), **self.receiver_env()})
                log(f"alert receiver: http://127.0.0.1:{self.settings.alert_receiver_port}")
        seeded = self.rabbitmq.wait()
        log(f"rabbitmq: ready at {self.rabbitmq.management_url}" + (", queues seeded" if seeded else ""))
        return info

    def ensure_work_pool(self) -> None:
        # Looked up over the API, since every test session's `up` asks and a CLI start costs 2.5 s; created
        # by the CLI, which fills in the process type's default job template.
        env = {**_os_environ(), **prefect_client_env(self.home, self.prefect.api_url)}
        prefect = str(Path(sys.executable).with_name("prefect"))
        for pool in (WORK_POOL, FAST_POOL):
            if httpx.get(f"{self.prefect.api_url}/work_pools/{pool}", timeout=30).status_code != 200:
                subprocess.run(
                    [prefect, "work-pool", "create", pool, "--type", "process"],
                    env=env, check=True, capture_output=True,
                )

    def ensure_result_storage(self) -> None:
        """The S3Bucket block the runners persist results to (on the stack's S3; AWS S3 in production)."""
        if self.result_storage_current():
            return
        from prefect.settings import PREFECT_API_URL, temporary_settings
        from prefect_aws import AwsClientParameters, AwsCredentials, S3Bucket

        credentials = AwsCredentials(
            aws_access_key_id=self.secrets["s3_access_key"], aws_secret_access_key=self.secrets["s3_secret_key"],
            region_name=S3_REGION, aws_client_parameters=AwsClientParameters(endpoint_url=self.s3.endpoint),
        )
        with temporary_settings(updates={PREFECT_API_URL: self.prefect.api_url}):
            S3Bucket(bucket_name=RESULTS_BUCKET, credentials=credentials, bucket_folder="results").save(
                RESULTS_BUCKET, overwrite=True)

    def result_storage_current(self) -> bool:
        """Whether the saved block already points where `ensure_result_storage` would point it (saving it
        costs seconds of imports and schema building). The secret key comes with the access key."""
        got = httpx.get(f"{self.prefect.api_url}/block_types/slug/s3-bucket/block_documents/name/{RESULTS_BUCKET}",
                        timeout=30)
        if got.status_code != 200:
            return False
        data = got.json().get("data", {})
        creds = data.get("credentials") or {}
        return (data.get("bucket_name"), data.get("bucket_folder"), creds.get("aws_access_key_id"),
                creds.get("region_name"), (creds.get("aws_client_parameters") or {}).get("endpoint_url")) == (
            RESULTS_BUCKET, "results", self.secrets["s3_access_key"], S3_REGION, self.s3.endpoint)

    def start_runner(self, replica: WarmRunnerProcess, info: StackInfo | None = None) -> None:
        """Start a runbook-pool replica (again, after a fault drill killed it)."""
        replica.start({**(info or self.loaded_info()).env(), **self.results_env()})

    @staticmethod
    def results_env() -> dict[str, str]:
        return {"PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK": f"s3-bucket/{RESULTS_BUCKET}"}

    def receiver_env(self) -> dict[str, str]:
        # One token per source: a token leaked from one sender cannot post as another.
        return {"RP_ALERT_TOKEN": self.secrets["alert_token"],
                "RP_GRAFANA_ALERT_TOKEN": self.secrets["grafana_alert_token"],
                "RP_GENERIC_ALERT_TOKEN": self.secrets["generic_alert_token"],
                "RP_SENTRY_CLIENT_SECRET": self.secrets["sentry_client_secret"]}

    def down(self, log: Log = print) -> None:
        run = self.home / "run"
        self.rabbitmq.begin_stop()  # its orderly shutdown takes seconds: it runs while the rest stop
        if self.receiver.stop():
            log("alert receiver: stopped")
        for replica in self.runners:
            if replica.stop():
                log(f"warm runner {replica.name}: stopped")
        if self.warm_runner.stop():
            log("warm runner: stopped")
        for name in reversed(SERVICES):
            if stop(run / f"{name}.pid"):
                log(f"sandbox {name}: stopped")
        if self.prefect.stop():
            log("prefect server: stopped")
        if self.target_redis.stop():
            log("target redis: stopped")
        if self.rabbitmq.stop():
            log("rabbitmq: stopped (node and its epmd)")
        # Anything else that left a pid file (fault holders, a second worker) goes too.
        for pid_file in sorted(run.glob("*.pid")) if run.exists() else []:
            if pid_file.name == "sshd.pid":
                continue
            if stop(pid_file):
                log(f"{pid_file.stem}: stopped")
        if self.sshd.stop():
            log("sshd: stopped")
        if self.pg.stop():
            log("postgresql: stopped")
        left = [name for name, up in self.status().items() if up]
        s = self.settings
        ports = (s.pg_port, s.sshd_port, s.s3_port, s.prefect_port, *s.prefect_api_ports, s.redis_port,
                 s.gateway_port, s.admin_port, s.wallet_port, s.wallet_2_port, s.alert_receiver_port,
                 s.target_redis_port, s.rabbitmq_port, s.rabbitmq_management_port, s.rabbitmq_dist_port,
                 s.rabbitmq_epmd_port)
        left += [f"port {p}" for p in ports if port_open(s.host, p)]
        if left:
            raise RuntimeError(f"still running after down: {', '.join(left)}")

    def status(self) -> dict[str, bool]:
        run = self.home / "run"
        return {
            "postgresql": self.pg.running(),
            "sshd": self.sshd.running(),
            "s3": self.s3.running(),
            "target-redis": self.target_redis.running(),
            "rabbitmq": self.rabbitmq.running(),
            **{f"sandbox-{n}": is_running(run / f"{n}.pid") for n in SERVICES},
            "prefect-server": self.prefect.running(),
            **self.prefect.status(),
            **{f"warm-runner-{r.name}": r.running() for r in self.runners},
            "warm-runner": self.warm_runner.running(),
            "alert-receiver": self.receiver.running(),
        }

    def info(self, platform_dsn: str | None = None) -> StackInfo:
        s = self.settings
        dsn = platform_dsn or self.pg.ensure_database("wallet", "wallet_app", self.secrets["pg_wallet"])
        return StackInfo(
            home=self.home, host=s.host, pg_port=s.pg_port,
            platform_dsn=SecretStr(dsn),
            superuser_dsn=SecretStr(self.pg.superuser_dsn("wallet")),
            prefect_db_url=SecretStr(self.prefect.db_url or f"sqlite:///{self.prefect.prefect_home}/prefect.db"),
            gateway_url=s.gateway_url, admin_url=s.admin_url, wallet_url=s.wallet_url,
            admin_tokens={k: SecretStr(v) for k, v in self.tokens.items()},
            ssh_port=s.sshd_port, ssh_user=self.sshd.user, ssh_client_key=self.sshd.client_key,
            ssh_known_hosts=self.sshd.known_hosts, host_checkout=self.host.checkout,
            git_remote=self.host.remote, s3_endpoint=self.s3.endpoint, s3_bucket=S3_BUCKET,
            s3_region=S3_REGION, s3_access_key=SecretStr(self.secrets["s3_access_key"]),
            s3_secret_key=SecretStr(self.secrets["s3_secret_key"]),
            prefect_api_url=self.prefect.api_url,
            totp_secrets={h: SecretStr(self.secrets[f"totp_{h}"]) for h in people.PEOPLE},
            audit_signing_key=SecretStr(self.secrets["audit_signing_key"]),
            target_redis_url=self.target_redis.url,
            target_redis_password=SecretStr(self.secrets["target_redis_password"]),
            rabbitmq_url=self.rabbitmq.management_url, rabbitmq_user=MONITOR_USER,
            rabbitmq_password=SecretStr(self.secrets["rabbitmq_monitor_password"]),
            rabbitmq_admin_password=SecretStr(self.secrets["rabbitmq_admin_password"]),
        )

    # --- process and release faults --------------------------------------------------------
    def loaded_info(self) -> StackInfo:
        return StackInfo.load(self.info_file)

    def restart_gateway(self) -> None:
        self.services(self.loaded_info().platform_dsn.get_secret_value()).restart("gateway")

    def admin_down(self, down: bool) -> None:
        runner = self.services(self.loaded_info().platform_dsn.get_secret_value())
        runner.stop("admin") if down else runner.start("admin")

    def admin_slow_write(self, on: bool, delay_s: float = 30) -> None:
        """The admin service commits a write, then holds its answer back `delay_s` (sandbox/admin.py)."""
        path = self.home / SLOW_WRITE_FILE
        if on:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(str(delay_s))
        else:
            path.unlink(missing_ok=True)

    def redis_maxmemory(self, on: bool) -> dict[str, object]:
        """The target Redis at maxmemory under `noeviction` (writes refused with OOM), or back to normal."""
        client = self.target_redis.client()
        try:
            return fill_to_maxmemory(client) if on else unfill(client)
        finally:
            client.close()

    def bad_deploy(self) -> str:
        """Push a bad commit and deploy it the way the host's pipeline does: pull, rebuild."""
        change = bad_deploy_patch(), "gateway: read upstream settings from the release config"
        try:
            sha = self.host.push_commit(*change)
        except NothingToCommit:
            # A drill stopped before its rollback left the bad change on main: start again from the seed.
            self.reset_release()
            sha = self.host.push_commit(*change)
        self.host.pull()
        subprocess.run([str(self.host.rebuild_script)], cwd=self.host.checkout, check=True)
        return sha

    def reset_release(self) -> None:
        """Back to the seeded history on origin and host, and the gateway restarted from it."""
        self.host.create(force=True)
        self.restart_gateway()


def _later_secrets() -> dict[str, str]:
    return {"alert_token": secrets.token_urlsafe(24), "sentry_client_secret": secrets.token_urlsafe(24),
            "grafana_alert_token": secrets.token_urlsafe(24), "generic_alert_token": secrets.token_urlsafe(24),
            "audit_signing_key": secrets.token_hex(32),
            "target_redis_password": secrets.token_urlsafe(24),
            "rabbitmq_admin_password": secrets.token_urlsafe(24),
            "rabbitmq_monitor_password": secrets.token_urlsafe(24),
            **people.make_totp_secrets()}


def _os_environ() -> dict[str, str]:
    return dict(os.environ)

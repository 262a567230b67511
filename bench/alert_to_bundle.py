"""Alert POST → evidence bundle verified in S3, through the stack as deployed; and a plain shell script.

    uv run python -m sandbox.stack up          # the receiver, the warm runner, the sandbox target
    uv run python bench/alert_to_bundle.py [--runs 20] [--script-runs 5]

1. `--runs` times, one at a time: a generic alert is POSTed to the stack's receiver
   (`:18090`), which creates a `capture-evidence` deployment run; the warm runner claims it
   and runs it. Timed from just before the POST to the run's final state (the server's
   `end_time`, set after every object was uploaded, streamed back and re-hashed); the time
   to `Running` is printed too. Each bundle is then re-verified from S3 again (not timed).
   Between alerts the bench waits until the warm runner has all its warm interpreters back.
2. The same collectors (same commands, same SQL, same hosts, generated from the same
   inventory plan) as a plain bash script run one after another — curl, psql, ssh, then
   `sha256sum`, `aws s3 cp --recursive` up and back down and `sha256sum -c` — in the same
   invocation. The script does *less* than the flow: no redaction, no manifest, no Prefect.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def wait_fully_warm(status_file: Path, pid_file: Path, warm: int, timeout_s: float = 120) -> None:
    from sandbox.stack.processes import read_pid

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            status = json.loads(status_file.read_text())
            if status["idle"] >= warm and status["pid"] == read_pid(pid_file):
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.1)
    raise SystemExit(f"warm runner not warm after {timeout_s:.0f} s ({status_file})")


def one_alert(url: str, token: str, nonce: str, i: int) -> dict[str, Any]:
    import httpx
    from prefect.client.orchestration import get_client

    from remediation.flowkit.resume import alert_capture_run

    body = {"group_key": f"bench-e2e-{nonce}-{i}", "starts_at": datetime.now(UTC).isoformat(), "status": "firing",
            "labels": {"alertname": "WalletDepositErrors", "env": "sandbox", "bench": nonce},
            "summary": "alert-to-bundle bench"}
    t0 = time.time()
    resp = httpx.post(f"{url}/alerts/generic", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    answered = time.time() - t0
    if resp.status_code != 202:
        raise SystemExit(f"receiver answered {resp.status_code}: {resp.text}")
    run_id = alert_capture_run(resp.json())
    with get_client(sync_client=True) as client:
        deadline = time.monotonic() + 180
        while True:
            run = client.read_flow_run(run_id)
            if run.state is not None and run.state.is_final():
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"run {run_id} still {run.state} after 180 s")
            time.sleep(0.05)
    assert run.start_time is not None and run.end_time is not None
    return {"run": run, "answered": answered, "running": run.start_time.timestamp() - t0,
            "done": run.end_time.timestamp() - t0, "flow": (run.end_time - run.start_time).total_seconds()}


def reverify(run: Any) -> list[str]:
    from remediation.evidence.anchored import anchor_for, verify_bundle
    from remediation.target.connect import evidence_store
    from remediation.target.inventory import load_target

    report = run.state.result(raise_on_failure=False)
    if not isinstance(report, dict) or not report.get("uploaded"):
        return [f"run {run.id} did not upload: {run.state.message}"]
    target = load_target(report["target"])
    prefix = report["s3"].removeprefix(f"s3://{target.evidence.bucket}/").strip("/")
    return verify_bundle(evidence_store(target), prefix, anchor_for(target, prefix))[1]


# --- the plain shell script ----------------------------------------------------------------------
def shell_script(workdir: Path) -> str:
    """Bash for the default sandbox profile's collectors, one after another, then upload + verify."""
    from remediation.evidence.bundle import s3_prefix
    from remediation.evidence.collectors import plan_collectors
    from remediation.target.inventory import load_target
    from tasks.database.activity import PG_QUERIES

    inv = load_target("sandbox")
    prof = inv.evidence_profiles["default"]
    ev = inv.evidence
    prefix = s3_prefix("bench-script", datetime.now(UTC), "INC-SCRIPT", "$RUN")
    lines = ["set -u", 'RUN="$(date +%s%N)"', f'D={shlex.quote(str(workdir))}/"$RUN"', 'mkdir -p "$D"']

    def ssh(host: str, argv: list[str]) -> str:
        h = inv.hosts[host]
        return shlex.join(["ssh", "-i", h.key.resolve().get_secret_value(), "-o", f"UserKnownHostsFile={h.known_hosts}",
                           "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-p", str(h.port),
                           f"{h.user}@{h.address}", shlex.join(argv)])

    for spec in plan_collectors(inv, prof):
        if not spec.configured:
            continue
        out = f'"$D"/{shlex.quote(spec.file or spec.name)}'
        if spec.kind == "health":
            for path in spec.params["paths"]:
                url = str(inv.gateway.url).rstrip("/") + path
                lines.append(f"curl -sS -m {spec.timeout_s:g} -w '\\n%{{http_code}}\\n' {shlex.quote(url)} >> {out}")
        elif spec.kind == "postgres":
            sql = PG_QUERIES[spec.params["query"]][1] % {"limit": int(spec.params["limit"]),
                                                         "threshold_s": float(spec.params["threshold_s"])}
            lines.append(f'psql "$RP_SANDBOX_DB_DSN" -X -A -c {shlex.quote(sql)} > {out} 2>&1')
        elif spec.kind == "git":
            checkout = inv.hosts[spec.host or ""].checkout_dir
            head = ssh(spec.host or "", ["git", "-C", checkout, "log", "-1", "--format=fuller"])
            lines.append(f"{head} > {out} 2>&1")
            lines.append(ssh(spec.host or "", ["git", "-C", checkout, "reflog", "show", "-n",
                                               str(spec.params["limit"]), "--date=iso-strict"]) + f" >> {out} 2>&1")
        elif spec.kind in ("service-log", "command"):
            lines.append(ssh(spec.host or "", spec.argv) + f" > {out} 2>&1")
        elif spec.kind in ("redis-info", "redis-bigkeys") and prof.redis is not None:
            r = prof.redis
            ask = ["INFO", "everything"] if spec.kind == "redis-info" else ["--bigkeys"]
            auth = f"REDISCLI_AUTH={shlex.quote(r.password.resolve().get_secret_value())} " if r.password else ""
            lines.append(f"{auth}{shlex.join(['redis-cli', '-h', r.address, '-p', str(r.port), *ask])} > {out} 2>&1")
        elif spec.kind == "rabbitmq" and prof.rabbitmq is not None:
            q = prof.rabbitmq
            login = f'user = "{q.user}:{q.password.resolve().get_secret_value()}"'
            url = str(q.url).rstrip("/") + "/api/queues"
            lines.append(f"printf '%s\\n' {shlex.quote(login)} | curl -sS -K - -m {q.timeout_s:g} "
                         f"{shlex.quote(url)} > {out}")
        else:
            raise SystemExit(f"no shell equivalent for collector kind {spec.kind}")
    aws = f"aws --endpoint-url {shlex.quote(str(ev.endpoint_url))} --region {ev.region} s3"
    dest = f"s3://{ev.bucket}/{prefix}/"
    lines += [
        '(cd "$D" && sha256sum * > SHA256SUMS)',
        f'{aws} cp --recursive --only-show-errors "$D" "{dest}"',
        'mkdir -p "$D.back"',
        f'{aws} cp --recursive --only-show-errors "{dest}" "$D.back"',
        '(cd "$D.back" && sha256sum --quiet -c SHA256SUMS)',
    ]
    return "\n".join(lines) + "\n"


def run_script(script: Path, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"shell script failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--script-runs", type=int, default=5)
    args = parser.parse_args()

    from sandbox.stack.core import Stack
    from sandbox.stack.prefect_server import prefect_client_env

    stack = Stack()
    info = stack.loaded_info()
    if not (stack.prefect.running() and stack.receiver.running() and stack.warm_runner.running()):
        raise SystemExit("the stack (Prefect, receiver, warm runner) is not up: uv run python -m sandbox.stack up")
    env = {**prefect_client_env(stack.home, info.prefect_api_url), **info.env()}
    os.environ.update(env)
    url = f"http://127.0.0.1:{stack.settings.alert_receiver_port}"
    token = stack.secrets["generic_alert_token"]  # the generic source's own token
    nonce = secrets.token_hex(4)

    results, problems = [], 0
    for i in range(args.runs):
        wait_fully_warm(stack.warm_runner.status_file, stack.warm_runner.pid_file, stack.warm_runner.warm)
        r = one_alert(url, token, nonce, i)
        bad = reverify(r["run"])
        problems += len(bad)
        state = r["run"].state
        print(f"  alert {i + 1:2d}: 202 in {r['answered'] * 1000:.0f} ms, Running at {r['running']:.2f} s, "
              f"{state.name} + verified at {r['done']:.2f} s (flow {r['flow']:.2f} s)"
              + (f"  PROBLEMS: {bad}" if bad else ""), flush=True)
        results.append(r)

    with tempfile.TemporaryDirectory(prefix="rp-script-bench-") as tmp:
        script = Path(tmp) / "capture.sh"
        script.write_text(shell_script(Path(tmp) / "out"))
        script_env = {**os.environ, "AWS_ACCESS_KEY_ID": info.s3_access_key.get_secret_value(),
                      "AWS_SECRET_ACCESS_KEY": info.s3_secret_key.get_secret_value()}
        shell = [run_script(script, script_env) for _ in range(args.script_runs)]

    done = [r["done"] for r in results]
    running = [r["running"] for r in results]
    completed = sum(1 for r in results if r["run"].state.is_completed())
    print(f"alert POST -> bundle verified in S3, default sandbox profile, {args.runs} alerts, one at a time "
          f"(warm runner, pool remediation-fast)")
    print(f"  end to end:      p50 {pct(done, 50):.2f} s  p95 {pct(done, 95):.2f} s  max {max(done):.2f} s")
    print(f"  POST -> Running: p50 {pct(running, 50):.2f} s  p95 {pct(running, 95):.2f} s  max {max(running):.2f} s")
    print(f"  flow Running -> Completed: p50 {statistics.median(r['flow'] for r in results):.2f} s")
    print(f"  runs Completed: {completed}/{args.runs}; S3 re-verification problems: {problems}")
    print(f"plain bash script, same collectors one after another + aws s3 up/down + sha256sum -c, "
          f"{args.script_runs} runs: p50 {statistics.median(shell):.2f} s  min {min(shell):.2f} s  "
          f"max {max(shell):.2f} s")
    print(f"  ratio alert->verified p50 / script p50: {pct(done, 50) / statistics.median(shell):.2f}")
    return 0 if completed == args.runs and problems == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

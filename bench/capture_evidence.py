"""capture-evidence figures against the running sandbox stack. Prints numbers; not a test.

    eval "$(uv run python -m sandbox.stack env)"
    uv run python bench/capture_evidence.py [RUNS=5] [LOG_MIB=256] \
        [--large-only | --flow-only | --without-task-runs | --cpu]

1. The flow (in-process, concurrent collectors, upload + verify) vs the same collectors
   called one after another as plain Python (no Prefect), same run, same machine.
2. A large synthetic log collected over SSH (whole file), redacted, written and uploaded
   by a fresh interpreter: peak RSS (VmHWM) and throughput.

`--without-task-runs`: the same flow, alternated with itself with its collectors called on a plain
thread pool instead of as Prefect task runs (bench only: what one task run per collector costs).

`--cpu`: where a capture's CPU goes on this machine, per process (from /proc), over RUNS flows run
back to back and then over as many sequential runs, each followed by a few seconds for the
Prefect server to finish what the runs queued. Only processes alive at both ends are counted: the
short-lived ones (sshd's per-session processes) are not.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def sequential_once(root: Path) -> dict[str, Any]:
    """The same collectors and upload, one after another, no Prefect engine: the 'shell script'.

    Returns the whole time and its parts: each collector's own time, and the upload with its
    re-verification (as the flow does it)."""
    from uuid import uuid4

    from flows.capture_evidence import TASKS
    from remediation.evidence.bundle import Manifest, now, s3_prefix, upload_bundle, write_manifest
    from remediation.evidence.collectors import plan_collectors
    from remediation.target import connect
    from remediation.target.connect import close_shared_hosts
    from remediation.target.inventory import load_target

    t0 = time.perf_counter()
    inv = load_target("sandbox")
    prof = inv.evidence_profiles["default"]
    run_id = str(uuid4())
    directory = root / "INC-BENCH-SEQ" / run_id
    directory.mkdir(parents=True)
    records, each = [], {}
    for spec in plan_collectors(inv, prof):
        if spec.configured:
            began = time.perf_counter()
            records.append(TASKS[spec.kind].fn(inv, prof, spec, str(directory)))
            each[spec.name] = time.perf_counter() - began
    close_shared_hosts()  # as the flow does: one SSH connection per host for the run's collectors
    created = now()
    write_manifest(directory, Manifest(
        incident_id="INC-BENCH-SEQ", target=inv.name, environment=inv.environment, profile="default",
        run_id=run_id, flow_run_id=None, initiated_by="bench", created_at=created, s3_bucket=inv.evidence.bucket,
        s3_prefix=s3_prefix(inv.evidence.prefix, created, "INC-BENCH-SEQ", run_id), collectors=records))
    began = time.perf_counter()
    upload_bundle(directory, connect.evidence_store(inv))
    upload = time.perf_counter() - began
    return {"total": time.perf_counter() - t0, "collectors": each, "upload": upload}


def flow_once() -> float:
    from flows.capture_evidence import capture_evidence

    t0 = time.perf_counter()
    state = capture_evidence("INC-BENCH", initiated_by="bench", return_state=True)
    elapsed = time.perf_counter() - t0
    if not state.is_completed():
        raise SystemExit(f"flow run did not complete: {state.message}")
    return elapsed


def large_log(mib: int) -> dict[str, float]:
    from tests.fixtures.large_log_probe import make_log, run

    with tempfile.TemporaryDirectory() as tmp:
        logs, out = Path(tmp) / "logs", Path(tmp) / "out"
        logs.mkdir()
        out.mkdir()
        make_log(logs / "big.log", mib * 2**20, "planted")
        return run(logs, out)


def _cpu_by_process() -> dict[str, tuple[float, str]]:
    """CPU seconds (user + system) of every process on the machine, by pid, with its command line."""
    tick = os.sysconf("SC_CLK_TCK")
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        # Kernel threads rename themselves as they work: the pid, not the name, is the key.
        found[pid] = ((int(fields[11]) + int(fields[12])) / tick, cmd[:90] or stat.split("(")[1].split(")")[0])
    return found


def cpu_figures(runs: int) -> None:
    with _as_a_warm_runner() as tmp:
        for label, once in (("flow", flow_once), ("sequential", lambda: sequential_once(tmp))):
            time.sleep(3)  # the server finishes what the warm-up queued
            before, began = _cpu_by_process(), time.perf_counter()
            for _ in range(runs):
                once()
            wall = (time.perf_counter() - began) / runs
            time.sleep(4)  # and what these runs queued: it is their cost too
            after = _cpu_by_process()
            spent = {f"{pid} {name}": (cpu - before.get(pid, (0.0, ""))[0]) / runs
                     for pid, (cpu, name) in after.items()}
            top = sorted(spent.items(), key=lambda kv: -kv[1])
            print(f"{label}: {runs} runs back to back, wall {wall:.2f} s per run; CPU per run, all processes "
                  f"{sum(spent.values()):.2f} s:")
            for name, cpu in top[:8]:
                if cpu >= 0.005:
                    print(f"  {cpu:6.3f} s  {name}")


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    runs = int(args[0]) if args else 5
    mib = int(args[1]) if len(args) > 1 else 256
    if "--cpu" in sys.argv:
        cpu_figures(runs)
        return
    if "--without-task-runs" in sys.argv:
        task_run_figures(runs)
        return
    if "--large-only" not in sys.argv:
        flow_figures(runs)
    if "--flow-only" not in sys.argv:
        large_log_figures(mib)


@contextmanager
def _as_a_warm_runner() -> Iterator[Path]:
    """The flow run as a warm runner runs it, bundles in a scratch directory, both ways warmed up once
    (imports, first connections, the Prefect client)."""
    from remediation.flowkit.engine import runner_settings, shared_api_client
    from remediation.flowkit.prefect_tls import share_verified_tls_contexts

    share_verified_tls_contexts()
    with tempfile.TemporaryDirectory() as tmp, runner_settings(), shared_api_client():
        os.environ["RP_EVIDENCE_DIR"] = tmp
        flow_once()
        sequential_once(Path(tmp))
        yield Path(tmp)


def flow_figures(runs: int) -> None:
    with _as_a_warm_runner() as tmp:
        flows, seq = [], []
        for _ in range(runs):  # alternated, so both see the same machine
            flows.append(flow_once())
            seq.append(sequential_once(tmp))
    med = statistics.median
    each = {name: med(s["collectors"][name] for s in seq) for name in seq[0]["collectors"]}
    upload = med(s["upload"] for s in seq)
    slowest = max(each, key=lambda n: each[n])
    floor = each[slowest] + upload
    flow, plain = med(flows), med(s["total"] for s in seq)
    print(f"capture-evidence, default sandbox profile, {runs} runs each, alternated "
          f"(load average {os.getloadavg()[0]:.1f} after)")
    print("  each collector alone (sequential run, median):")
    for name in sorted(each, key=lambda n: -each[n]):
        print(f"    {name:<24} {each[name] * 1000:6.0f} ms")
    print(f"    {'(sum)':<24} {sum(each.values()) * 1000:6.0f} ms")
    print(f"  upload + stream back + re-hash, {len(each) + 1} objects: {upload * 1000:.0f} ms")
    print(f"  floor = slowest collector ({slowest}) + upload and re-verification: {floor:.2f} s")
    print(f"  flow (concurrent, in-process, as a warm runner runs it): median {flow:.2f} s  "
          f"p95 {_pct(flows, 0.95):.2f} s")
    print(f"  sequential plain python:                                  median {plain:.2f} s  "
          f"p95 {_pct([s['total'] for s in seq], 0.95):.2f} s")
    print(f"  ratio flow/sequential (median): {flow / plain:.2f}   flow/floor: {flow / floor:.2f}")


@contextmanager
def _collectors_without_task_runs() -> Iterator[None]:
    """The capture flow as it is, but each collector called on a thread pool as a plain function: no
    task run, no states, no events, no task-run logs. The bench's counterfactual, never the product's."""
    from concurrent.futures import Future, ThreadPoolExecutor, as_completed

    import flows.capture_evidence as capture

    pool = ThreadPoolExecutor(max_workers=16)

    class _Plain:
        def __init__(self, kind: str) -> None:
            self.fn = capture.TASKS[kind].fn

        def submit(self, *args: Any) -> Future[Any]:
            return pool.submit(self.fn, *(a.unquote() if hasattr(a, "unquote") else a for a in args))

    def settle(futures: dict[str, Future[Any]], on_completed: Any) -> tuple[dict[str, Any], dict[str, str]]:
        names = {id(f): n for n, f in futures.items()}
        found = {}
        for future in as_completed(futures.values()):
            found[names[id(future)]] = future.result().model_dump(mode="json")
            on_completed(names[id(future)], found[names[id(future)]])
        return found, {}

    saved = capture.collector_task, capture.settle_all
    capture.collector_task, capture.settle_all = (lambda kind, *_: _Plain(kind)), settle  # type: ignore[assignment]
    try:
        yield
    finally:
        capture.collector_task, capture.settle_all = saved
        pool.shutdown()


def task_run_figures(runs: int) -> None:
    with _as_a_warm_runner() as tmp:
        with _collectors_without_task_runs():
            flow_once()  # warm-up of the pool's threads
        real, plain, seq = [], [], []
        for _ in range(runs):  # alternated
            real.append(flow_once())
            with _collectors_without_task_runs():
                plain.append(flow_once())
            seq.append(sequential_once(tmp)["total"])
    med = statistics.median
    print(f"capture-evidence, default sandbox profile, {runs} runs each, alternated "
          f"(load average {os.getloadavg()[0]:.1f} after)")
    print(f"  flow, collectors as Prefect task runs (as shipped): median {med(real):.2f} s  min {min(real):.2f} s")
    print(f"  flow, collectors as plain calls on a thread pool:   median {med(plain):.2f} s  min {min(plain):.2f} s")
    print(f"  sequential plain python, no flow:                   median {med(seq):.2f} s  min {min(seq):.2f} s")
    print(f"  ratios to sequential: as shipped {med(real) / med(seq):.2f}, without task runs "
          f"{med(plain) / med(seq):.2f}")


def large_log_figures(mib: int) -> None:
    load = os.getloadavg()[0]
    big = large_log(mib)
    total = big["collect_s"] + big["upload_s"]
    size = big["bytes"] / 2**20
    print(f"large log, {mib} MiB collected over SSH + redacted + uploaded (load average {load:.1f} before)")
    print(f"  peak RSS {big['peak'] / 2**20:.0f} MB (after imports {big['base'] / 2**20:.0f} MB, "
          f"growth {(big['peak'] - big['base']) / 2**20:.0f} MB)")
    print(f"  collect {big['collect_s']:.1f} s ({size / big['collect_s']:.1f} MiB/s, "
          f"{big['collect_cpu_s']:.1f} s CPU), upload {big['upload_s']:.1f} s ({size / big['upload_s']:.1f} MiB/s, "
          f"{big['upload_cpu_s']:.1f} s CPU here), total {size / total:.1f} MiB/s")


if __name__ == "__main__":
    main()

"""restart-service's plan: order, the outage rule, refused input; the inventory's commands per instance."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from remediation.domain.restarts import InstanceState, plan_restart, summary_markdown
from remediation.errors import BadInputError
from remediation.target.services import ServiceSpec, expand


def _i(name: str, healthy: bool = True, pid: int = 100) -> InstanceState:
    return InstanceState(name=name, status=f"{name} running pid={pid}", healthy=healthy,
                         health="200 in 3 ms" if healthy else "connection refused")


def test_down_instances_go_first_then_serving_ones_in_inventory_order() -> None:
    plan = plan_restart("api", [_i("blue"), _i("green", healthy=False), _i("canary")], None, allow_outage=False)
    assert [s.name for s in plan.steps] == ["green", "blue", "canary"]
    assert plan.outage == [] and plan.left == []


def test_the_last_serving_instance_is_refused_unless_the_outage_is_accepted() -> None:
    with pytest.raises(BadInputError, match=r"restarting gateway leaves no healthy instance of gateway"):
        plan_restart("gateway", [_i("gateway")], None, allow_outage=False)
    assert plan_restart("gateway", [_i("gateway")], None, allow_outage=True).outage == ["gateway"]
    # Blue down, green serving, only green asked for: nothing would serve while green restarts.
    with pytest.raises(BadInputError, match="green"):
        plan_restart("api", [_i("blue", healthy=False), _i("green")], ["green"], allow_outage=False)
    # Both asked for: blue comes back first, then green restarts while blue serves.
    plan = plan_restart("api", [_i("blue", healthy=False), _i("green")], None, allow_outage=False)
    assert [s.name for s in plan.steps] == ["blue", "green"] and plan.outage == []


def test_an_instance_the_service_does_not_have_is_refused() -> None:
    with pytest.raises(BadInputError, match=r"api has no instance 'purple'; its instances: \['blue', 'green'\]"):
        plan_restart("api", [_i("blue"), _i("green")], ["blue", "purple"], allow_outage=False)
    with pytest.raises(BadInputError, match="no instance of api asked for"):
        plan_restart("api", [_i("blue"), _i("green")], [], allow_outage=False)


def test_the_approval_binds_instances_and_processes_not_latency() -> None:
    a = plan_restart("api", [_i("blue"), _i("green")], ["blue"], allow_outage=False)
    slower = InstanceState(name="blue", status="blue running pid=100", healthy=True, health="200 in 900 ms")
    b = plan_restart("api", [slower, _i("green")], ["blue"], allow_outage=False)
    assert a.view("INC-1", "t") == b.view("INC-1", "t")
    restarted = plan_restart("api", [_i("blue", pid=101), _i("green")], ["blue"], allow_outage=False)
    assert restarted.view("INC-1", "t") != a.view("INC-1", "t")
    assert [s.name for s in a.left] == ["green"]


def test_the_summary_escapes_what_the_host_printed() -> None:
    odd = InstanceState(name="blue", status="blue | running\n**pid**", healthy=True, health="200 in 3 ms")
    text = summary_markdown("INC-1", "t", plan_restart("api", [odd, _i("green")], None, allow_outage=False), 30, 3)
    row = next(line for line in text.splitlines() if line.startswith("| 2 |") or line.startswith("| 1 | blue"))
    assert r"blue \| running \*\*pid\*\*" in row


def _spec(**over: object) -> ServiceSpec:
    base: dict[str, object] = {"host": "deploy", "restart": ["systemctl", "restart", "{instance}"],
                               "status": ["systemctl", "show", "-p", "MainPID", "{instance}"],
                               "instances": [{"name": "api-blue", "health_url": "http://10.0.0.1:8080/health"}]}
    return ServiceSpec.model_validate({**base, **over})


def test_commands_substitute_per_argument_and_leave_go_templates_alone() -> None:
    spec = _spec(status=["docker", "inspect", "-f", "{{.State.Pid}} {{.State.StartedAt}}", "{instance}"])
    assert expand(spec.status, "api; rm -rf /") == ["docker", "inspect", "-f", "{{.State.Pid}} {{.State.StartedAt}}",
                                                    "api; rm -rf /"]
    assert expand(["journalctl", "-u", "{instance}", "-n", "{lines}"], "api", 50) == ["journalctl", "-u", "api", "-n",
                                                                                      "50"]


def test_the_inventory_refuses_bad_service_specs() -> None:
    with pytest.raises(ValidationError, match="unknown placeholder"):
        _spec(restart=["systemctl", "restart", "{service}"])
    with pytest.raises(ValidationError, match="instance names repeat"):
        _spec(instances=[{"name": "a", "health_url": "http://h/health"}, {"name": "a", "health_url": "http://h/x"}])
    with pytest.raises(ValidationError):
        _spec(restart="systemctl restart api")  # a shell string, not an argument list
    with pytest.raises(ValidationError):
        _spec(instances=[])


def test_a_service_must_run_on_a_host_the_target_has() -> None:
    import tomllib

    from remediation.target.inventory import TARGETS_DIR, Target

    raw = tomllib.loads((TARGETS_DIR / "sandbox.toml").read_text())
    assert Target.model_validate(raw).services["wallet"].instances[1].name == "wallet-2"
    raw["services"]["wallet"]["host"] = "db-1"
    with pytest.raises(ValidationError, match=r"services.wallet.host 'db-1' is not one of hosts \['deploy'\]"):
        Target.model_validate(raw)

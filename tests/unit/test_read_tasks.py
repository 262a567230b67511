"""Pure logic of the read-only tasks, without a server: parsing and the Prometheus seam."""

from __future__ import annotations

import json

import httpx
import pytest

from remediation.clients.gateway import WalletReply
from remediation.clients.prometheus import query_instant
from remediation.errors import PermanentError, RetryableError
from tasks.host import _parse_reflog
from tasks.wallet import _opening_balance


def test_reflog_lines_become_deploy_records() -> None:
    text = (
        "a" * 40 + "\x1fHEAD@{2026-11-23T10:00:00+00:00}\x1fpull --ff-only origin main: Fast-forward\n"
        + "b" * 40 + "\x1fHEAD@{2026-11-20T08:30:00+00:00}\x1fclone: from /srv/git/servers_v2.git\n"
    )
    records = _parse_reflog(text)
    assert [r.sha[0] for r in records] == ["a", "b"]
    assert records[0].at is not None and records[0].at.isoformat() == "2026-11-23T10:00:00+00:00"
    assert records[0].what.startswith("pull --ff-only")
    assert records[1].what.startswith("clone:")


def test_reflog_with_unparseable_date_keeps_the_record() -> None:
    records = _parse_reflog("c" * 40 + "\x1fHEAD@{0}\x1freset: moving to HEAD~1\n")
    assert records[0].at is None and records[0].what == "reset: moving to HEAD~1"


def _prom(handler: httpx.MockTransport) -> httpx.Client:
    return httpx.Client(base_url="http://prom.test", transport=handler)


def test_prometheus_query_sends_the_query_and_returns_the_vector() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = {"status": "success", "data": {"resultType": "vector", "result": [{"value": [1, "0.07"]}]}}
        return httpx.Response(200, json=body)

    result = query_instant(_prom(httpx.MockTransport(handler)), "sum(rate(x[5m]))")
    assert result == [{"value": [1, "0.07"]}]
    assert seen[0].url.path == "/api/v1/query"
    assert seen[0].url.params["query"] == "sum(rate(x[5m]))"


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (503, {"status": "error"}, RetryableError),
        (400, {"status": "error", "error": "parse error at char 4"}, PermanentError),
    ],
)
def test_prometheus_errors_are_classified(status: int, body: dict, error: type[Exception]) -> None:
    client = _prom(httpx.MockTransport(lambda r: httpx.Response(status, content=json.dumps(body))))
    with pytest.raises(error):
        query_instant(client, "up")


def test_prometheus_unreachable_is_retryable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(RetryableError, match="unreachable"):
        query_instant(_prom(httpx.MockTransport(refuse)), "up")


class _Balances:
    """A gateway whose balance answers come from a script, counting the calls."""

    def __init__(self, *answers: tuple[int, int, str]) -> None:
        self.answers, self.calls = list(answers), 0

    def balance(self, player: str) -> WalletReply:
        http, status, msg = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        return WalletReply(http_status=http, status=status, msg=msg,
                           data={"balance": 100} if status == 0 else None)


def test_the_opening_balance_is_asked_again_while_the_wallet_reconnects() -> None:
    down = (503, 503, "wallet writer unavailable")
    gw = _Balances(down, down, (200, 0, "success"))
    assert _opening_balance(gw, "synthetic-alpha", first_delay_s=0).ok and gw.calls == 3  # type: ignore[arg-type]


def test_a_lever_or_a_lasting_outage_is_not_asked_again_forever() -> None:
    blocked = _Balances((503, 503, "Provider ingress blocked"))
    assert _opening_balance(blocked, "p", first_delay_s=0).msg == "Provider ingress blocked"  # type: ignore[arg-type]
    assert blocked.calls == 1
    down = _Balances((503, 503, "wallet writer unavailable"))
    assert not _opening_balance(down, "p", tries=4, first_delay_s=0).ok and down.calls == 4  # type: ignore[arg-type]

"""``GET /metrics`` read as a Prometheus server would: the text parses as OpenMetrics, and
the request counter moves by exactly the number of requests sent."""

from __future__ import annotations

import urllib.request

from prometheus_client.openmetrics.parser import text_string_to_metric_families

from conftest import Stack


def scrape(stack: Stack, admin: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    request = urllib.request.Request(stack.url + "/metrics", headers={"authorization": f"Bearer {admin}"})
    with urllib.request.urlopen(request) as answer:
        assert answer.headers["content-type"].startswith("application/openmetrics-text")
        text = answer.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def test_the_request_counter_moves_by_exactly_the_requests_sent(stack: Stack, key: str) -> None:
    admin = stack.create_key("admin")
    series = ("vault_requests_total", (("method", "GET"), ("route", "/v1/models"), ("status", "200")))
    before = scrape(stack, admin).get(series, 0.0)
    for _ in range(5):
        request = urllib.request.Request(stack.url + "/v1/models", headers={"authorization": f"Bearer {key}"})
        with urllib.request.urlopen(request) as answer:
            assert answer.status == 200
    after = scrape(stack, admin)
    assert after[series] - before == 5
    assert after[("vault_active_streams", ())] == 0

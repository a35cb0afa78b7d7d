"""Prometheus text exposition of counters and gauges."""

from __future__ import annotations

import pytest

from fedrt.coordinator.prometheus import Registry


def test_render_text_format() -> None:
    reg = Registry()
    c = reg.counter("fedrt_x_total", "Things.")
    g = reg.gauge("fedrt_y", 'A "quoted"\nhelp.')
    c.inc(route="/a")
    c.inc(2, route="/a")
    c.inc(route='we"ird\\')
    reg.add_collector(lambda: g.set(0.25))
    text = reg.render()
    assert text.splitlines() == [
        "# HELP fedrt_x_total Things.",
        "# TYPE fedrt_x_total counter",
        'fedrt_x_total{route="/a"} 3',
        'fedrt_x_total{route="we\\"ird\\\\"} 1',
        '# HELP fedrt_y A \\"quoted\\"\\nhelp.',
        "# TYPE fedrt_y gauge",
        "fedrt_y 0.25",
    ]


def test_misuse_is_refused() -> None:
    reg = Registry()
    counter = reg.counter("a_total", "a")
    with pytest.raises(ValueError, match="only goes up"):
        counter.inc(-1)
    with pytest.raises(ValueError, match="twice"):
        reg.gauge("a_total", "again")
    with pytest.raises(ValueError, match="bad metric name"):
        reg.gauge("0bad", "x")

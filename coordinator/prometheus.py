"""A minimal Prometheus text-format registry: counters and gauges with labels."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
Labels = tuple[tuple[str, str], ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class Metric:
    def __init__(self, name: str, help_text: str, kind: str) -> None:
        if not _NAME.fullmatch(name):
            raise ValueError(f"bad metric name {name!r}")
        self.name, self.help, self.kind = name, help_text, kind
        self._values: dict[Labels, float] = {}

    def _key(self, labels: dict[str, str]) -> Labels:
        return tuple(sorted(labels.items()))

    def samples(self) -> Iterable[tuple[Labels, float]]:
        return sorted(self._values.items())


class Counter(Metric):
    def __init__(self, name: str, help_text: str) -> None:
        super().__init__(name, help_text, "counter")

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        key = self._key(labels)
        self._values[key] = self._values.get(key, 0.0) + amount


class Gauge(Metric):
    def __init__(self, name: str, help_text: str) -> None:
        super().__init__(name, help_text, "gauge")

    def set(self, value: float, **labels: str) -> None:
        self._values[self._key(labels)] = float(value)


class Registry:
    """Holds metrics; ``collectors`` refresh gauges from live state just before rendering."""

    def __init__(self) -> None:
        self._metrics: dict[str, Metric] = {}
        self._collectors: list[Callable[[], None]] = []

    def counter(self, name: str, help_text: str) -> Counter:
        metric = Counter(name, help_text)
        self._add(metric)
        return metric

    def gauge(self, name: str, help_text: str) -> Gauge:
        metric = Gauge(name, help_text)
        self._add(metric)
        return metric

    def _add(self, metric: Metric) -> None:
        if metric.name in self._metrics:
            raise ValueError(f"metric {metric.name} registered twice")
        self._metrics[metric.name] = metric

    def add_collector(self, collect: Callable[[], None]) -> None:
        self._collectors.append(collect)

    def render(self) -> str:
        for collect in self._collectors:
            collect()
        lines: list[str] = []
        for name in sorted(self._metrics):
            metric = self._metrics[name]
            lines.append(f"# HELP {name} {_escape(metric.help)}")
            lines.append(f"# TYPE {name} {metric.kind}")
            for labels, value in metric.samples():
                tags = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
                lines.append(f"{name}{{{tags}}} {_fmt(value)}" if tags else f"{name} {_fmt(value)}")
        return "\n".join(lines) + "\n"


__all__ = ["Counter", "Gauge", "Registry"]

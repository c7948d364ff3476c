"""Records the same instruments into one MeterProvider with two readers: the OTLP/HTTP
exporter pushing to connectord (with the plan's temporality) and the OpenTelemetry
project's own PrometheusMetricReader. Reads the plan (JSON) on stdin: endpoint, token,
service, instance, temporality ("cumulative" or "delta"), rounds. Each round records
and flushes once, so delta pushes must be added up to match. Prints
{"exported": N, "failed": M, "reference": "<text exposition>"}: OTLP exports that
succeeded and failed, and the reference rendering after the last round."""

import json
import sys

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    MeterProvider,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExportResult,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry, generate_latest


class Counting(OTLPMetricExporter):
    """The SDK's exporter, counting exports that succeeded and failed."""

    exported = 0
    failed = 0

    def export(self, metrics_data, timeout_millis=10_000, **kwargs):
        result = super().export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        if result == MetricExportResult.SUCCESS:
            Counting.exported += 1
        else:
            Counting.failed += 1
        return result


def main():
    plan = json.load(sys.stdin)
    kind = AggregationTemporality.DELTA if plan["temporality"] == "delta" else AggregationTemporality.CUMULATIVE
    temporality = {
        Counter: kind,
        UpDownCounter: kind,
        Histogram: kind,
        ObservableCounter: kind,
        ObservableUpDownCounter: kind,
        ObservableGauge: AggregationTemporality.CUMULATIVE,
    }
    exporter = Counting(
        endpoint=plan["endpoint"],
        headers={"authorization": "Bearer " + plan["token"]},
        timeout=10,
        preferred_temporality=temporality,
    )
    pushing = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    registry = CollectorRegistry()
    reference = PrometheusMetricReader(registry=registry)
    resource = Resource.create(
        {
            "service.name": plan["service"],
            "service.instance.id": plan["instance"],
            "deployment.environment": "test",
        }
    )
    provider = MeterProvider(resource=resource, metric_readers=[pushing, reference])
    meter = provider.get_meter("connectord.test", "0.3.1")

    orders = meter.create_counter("shop.orders", unit="{order}", description="Orders placed.")
    sent = meter.create_counter("net.sent", unit="By", description='Bytes sent, "raw".')
    in_flight = meter.create_up_down_counter("jobs.in_flight", description="Jobs running.")
    latency = meter.create_histogram("http.server.duration", unit="ms", description="Request time.")
    sizes = meter.create_histogram(
        "payload.size", unit="By", explicit_bucket_boundaries_advisory=[10.0, 100.0, 1000.0]
    )
    temperature = {"value": 20.5}
    meter.create_observable_gauge(
        "room.temperature",
        callbacks=[lambda _options: [Observation(temperature["value"], {"room": "lab"})]],
        unit="Cel",
        description="Temperature.",
    )

    routes = ["/a", 'say "hi"', "back\\slash", "naïve ☃"]
    for round_ in range(plan["rounds"]):
        for i, route in enumerate(routes):
            attrs = {"http.route": route, "attempt": i}
            orders.add(1 + i + round_, attrs)
            sent.add(100 * (i + 1), {"peer": route})
            in_flight.add(3 if round_ % 2 == 0 else -1, {"queue": route})
            for ms in (0.5, 7, 42, 250 + round_, 9000):
                latency.record(ms * (i + 1), attrs)
            sizes.record(5 + 300 * i + round_)
        temperature["value"] += 1.25
        # The pushing reader only: a provider-wide flush would also queue a
        # collection in the reference reader, which renders each queued one.
        pushing.force_flush()
    text = generate_latest(registry).decode()
    provider.shutdown()
    print(json.dumps({"exported": Counting.exported, "failed": Counting.failed, "reference": text}))


if __name__ == "__main__":
    main()

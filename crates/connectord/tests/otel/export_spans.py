"""Exports the spans of a plan (JSON on stdin) with the OpenTelemetry Python SDK's
OTLP/HTTP exporter, one tracer provider per service, with explicit start and end
times. With `batch` and `pace_ms` in the plan, spans go out `batch` at a time with a
pause between exports. Prints {"exported": N, "failed": M}: spans whose export got a
success (the SDK's retries included) and spans whose export finally failed."""

import time

import json
import sys

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode

KINDS = {
    "internal": SpanKind.INTERNAL,
    "server": SpanKind.SERVER,
    "client": SpanKind.CLIENT,
    "producer": SpanKind.PRODUCER,
    "consumer": SpanKind.CONSUMER,
}
STATUSES = {"unset": StatusCode.UNSET, "ok": StatusCode.OK, "error": StatusCode.ERROR}


class Counting(OTLPSpanExporter):
    """The SDK's exporter, counting the spans of exports that succeeded."""

    exported = 0
    failed = 0

    def export(self, spans):
        result = super().export(spans)
        if result == SpanExportResult.SUCCESS:
            Counting.exported += len(spans)
        else:
            Counting.failed += len(spans)
        return result


def main():
    plan = json.load(sys.stdin)
    headers = {"authorization": "Bearer " + plan["token"]}
    by_service = {}
    for span in plan["spans"]:
        by_service.setdefault(span["service"], []).append(span)
    start = 1_700_000_000_000_000_000
    for service, spans in by_service.items():
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        exporter = Counting(endpoint=plan["endpoint"], headers=headers, timeout=10)
        batch = plan.get("batch", 50)
        pace = plan.get("pace_ms", 0) / 1000.0
        provider.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=batch))
        tracer = provider.get_tracer("connectord-test")
        for i, span in enumerate(spans):
            s = tracer.start_span(
                span["name"],
                kind=KINDS[span["kind"]],
                start_time=start,
                attributes=span.get("attributes", {}),
            )
            if span["status"] != "unset":
                s.set_status(Status(STATUSES[span["status"]]))
            s.end(end_time=start + span["duration_ms"] * 1_000_000)
            if pace and (i + 1) % batch == 0:
                provider.force_flush()
                time.sleep(pace)
        provider.force_flush()
        provider.shutdown()
    print(json.dumps({"exported": Counting.exported, "failed": Counting.failed}))


if __name__ == "__main__":
    main()

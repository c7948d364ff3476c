"""Exports the spans of a plan (JSON on stdin) with the OpenTelemetry Python SDK's
OTLP/HTTP exporter, one tracer provider per service, with explicit start and end
times. Prints the number of spans whose export got a success, and exits 1 if any
export failed."""

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
        provider.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=50))
        tracer = provider.get_tracer("connectord-test")
        for span in spans:
            s = tracer.start_span(
                span["name"],
                kind=KINDS[span["kind"]],
                start_time=start,
                attributes=span.get("attributes", {}),
            )
            if span["status"] != "unset":
                s.set_status(Status(STATUSES[span["status"]]))
            s.end(end_time=start + span["duration_ms"] * 1_000_000)
        provider.force_flush()
        provider.shutdown()
    print(Counting.exported)
    sys.exit(1 if Counting.failed else 0)


if __name__ == "__main__":
    main()

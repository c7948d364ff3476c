//! The query API's cost (issue 18): holding a 20-selector query to an org, the first
//! time (by scan, and by parse tree where the scan is not sure) and again (Grafana
//! sends a dashboard's queries at every refresh), against parsing and printing it
//! with `promql-parser` alone, and what a
//! request through connectord's `/metrics/api/v1/query` adds to one answered by the
//! backend directly, at p50 and p99.
//!
//! The backend is a server on 127.0.0.1 answering every query with the same
//! Prometheus vector (about 1 KiB), so the difference is connectord's work: auth,
//! reading the parameters, the rewrite, the forwarded request and the answer
//! passed back. The proxy part needs the release `connectord` in `CONNECTORD_BIN`
//! (`cargo xtask bench` builds it) and is skipped without it.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use connector_core::TickContext;
use connector_http::HttpClient;
use connector_http::testing::{Reply, TestServer};
use criterion::{Criterion, criterion_group, criterion_main};
use promql_org::{RewriteCache, confine_query, confine_query_by_scan, confine_query_by_tree};

/// Twenty selectors, with the matchers, ranges, subqueries and modifiers Grafana
/// dashboards use.
fn twenty_selectors() -> String {
    (0..20)
        .map(|i| match i % 4 {
            0 => format!("sum by (job) (rate(http_requests_total{{job=\"api\",code=~\"5..\",i=\"{i}\"}}[5m]))"),
            1 => format!("max_over_time(up{{instance=~\"10\\\\.0\\\\..*\",i=\"{i}\"}}[10m:1m])"),
            2 => format!("node_load1{{org_id=\"b\",i=\"{i}\"}} offset 1h"),
            _ => format!("histogram_quantile(0.99, sum by (le) (rate(latency_bucket{{i=\"{i}\"}}[1m])))"),
        })
        .collect::<Vec<_>>()
        .join(" + ")
}

fn rewrite(c: &mut Criterion) {
    let query = twenty_selectors();
    assert_eq!(
        confine_query(&query, "acme")
            .expect("the query parses")
            .matches("org_id=\"acme\"")
            .count(),
        20
    );
    assert!(
        confine_query_by_scan(&query, "acme").is_some(),
        "the scan answers for the dashboard query itself"
    );
    let mut group = c.benchmark_group("query_rewrite");
    group.bench_function("confine_20_selectors", |b| {
        b.iter(|| confine_query(std::hint::black_box(&query), "acme").expect("parses"));
    });
    group.bench_function("confine_20_selectors_by_tree", |b| {
        b.iter(|| confine_query_by_tree(std::hint::black_box(&query), "acme").expect("parses"));
    });
    let cache = RewriteCache::new(16);
    group.bench_function("confine_20_selectors_seen_before", |b| {
        b.iter(|| {
            cache
                .query(std::hint::black_box(&query), "acme")
                .expect("parses")
        });
    });
    group.bench_function("peer_parse_and_print_only", |b| {
        b.iter(|| {
            promql_parser::parser::parse(std::hint::black_box(&query))
                .expect("parses")
                .to_string()
        });
    });
    group.finish();
}

const ANSWER: &str = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"connectord_connector_state","connector_id":"6f2c2e64-0c7e-4f5e-9d43-3b7c1f3f1a01","connector_type_id":"prometheus","instance":"127.0.0.1:8080","job":"connectord","org_id":"acme","state":"enabled"},"value":[1796606443,"1"]},{"metric":{"__name__":"connectord_connector_state","connector_id":"6f2c2e64-0c7e-4f5e-9d43-3b7c1f3f1a02","connector_type_id":"prometheus","instance":"127.0.0.1:8080","job":"connectord","org_id":"acme","state":"enabled"},"value":[1796606443,"1"]},{"metric":{"__name__":"connectord_connector_state","connector_id":"6f2c2e64-0c7e-4f5e-9d43-3b7c1f3f1a03","connector_type_id":"prometheus","instance":"127.0.0.1:8080","job":"connectord","org_id":"acme","state":"enabled"},"value":[1796606443,"1"]},{"metric":{"__name__":"connectord_connector_state","connector_id":"6f2c2e64-0c7e-4f5e-9d43-3b7c1f3f1a04","connector_type_id":"prometheus","instance":"127.0.0.1:8080","job":"connectord","org_id":"acme","state":"enabled"},"value":[1796606443,"1"]}]}}"#;

const TOKEN: &str = "bench-org-token-0123456789";

/// connectord with `[query]` at `backend` and an org token; its address.
fn start_connectord(
    binary: &PathBuf,
    backend: &str,
    dir: &std::path::Path,
) -> (std::process::Child, String) {
    let config = dir.join("connectord.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[[server.tokens]]\nname = \"grafana\"\n\
             token_ref = \"$env:BENCH_TOKEN\"\nscopes = [\"metrics:read\"]\norg_id = \"acme\"\n\n\
             [storage]\ndata_dir = \"{}\"\n\n[runner]\nenabled = false\n\n[query]\nurl = \"{backend}\"\n",
            dir.join("data").display()
        ),
    )
    .expect("the config");
    let mut child = Command::new(binary)
        .args(["run", "--config"])
        .arg(&config)
        .env("BENCH_TOKEN", TOKEN)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("connectord starts");
    let stderr = child.stderr.take().expect("stderr");
    let mut addr = None;
    let mut lines = BufReader::new(stderr).lines();
    for line in lines.by_ref() {
        let line = line.expect("a log line");
        if let Some(at) = line.find("listening on http://") {
            addr = line[at + "listening on ".len()..]
                .split([' ', '"'])
                .next()
                .map(str::to_owned);
            break;
        }
    }
    // Keep reading its log: a closed pipe would fail connectord's next log line.
    std::thread::spawn(move || lines.for_each(drop));
    (child, addr.expect("connectord logs its address"))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let at = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[at]
}

fn proxy(c: &mut Criterion) {
    let Ok(binary) = std::env::var("CONNECTORD_BIN").map(PathBuf::from) else {
        eprintln!("query_proxy: skipped: CONNECTORD_BIN is not set (cargo xtask bench builds it)");
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let backend = runtime.block_on(TestServer::start(|_| {
        Reply::text(ANSWER, "application/json")
    }));
    let dir = tempfile::tempdir().expect("a temporary folder");
    let (mut child, addr) = start_connectord(&binary, &backend.url(""), dir.path());
    let client = HttpClient::new();
    let ctx = TickContext::new("bench", 0);
    let query = "query=sum%20by%20(state)%20(connectord_connector_state)";
    let direct = backend.url(&format!("/api/v1/query?{query}"));
    let proxied = format!("{addr}/metrics/api/v1/query?{query}");
    let bearer = format!("Bearer {TOKEN}");
    let once = |url: &str, auth: bool| {
        runtime.block_on(async {
            let mut request = client.get(url).retries(0);
            if auth {
                request =
                    request.header(connector_http::http::header::AUTHORIZATION, bearer.as_str());
            }
            let answer = request.send(&ctx).await.expect("an answer");
            assert_eq!(answer.body().len(), ANSWER.len());
        });
    };
    let mut group = c.benchmark_group("query_proxy");
    group.bench_function("backend_direct", |b| b.iter(|| once(&direct, false)));
    group.bench_function("through_connectord", |b| b.iter(|| once(&proxied, true)));
    group.finish();

    let latencies = |url: &str, auth: bool| {
        let mut all: Vec<Duration> = (0..3_000)
            .map(|_| {
                let started = Instant::now();
                once(url, auth);
                started.elapsed()
            })
            .collect();
        all.sort_unstable();
        all
    };
    let direct = latencies(&direct, false);
    let through = latencies(&proxied, true);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "query_proxy: 3000 sequential queries each; backend direct p50 {:.3} ms p99 {:.3} ms; through connectord p50 {:.3} ms p99 {:.3} ms; connectord adds {:.3} ms at p99 (goal < 2 ms)",
        ms(percentile(&direct, 0.5)),
        ms(percentile(&direct, 0.99)),
        ms(percentile(&through, 0.5)),
        ms(percentile(&through, 0.99)),
        ms(percentile(&through, 0.99)) - ms(percentile(&direct, 0.99)),
    );
    let _ = child.kill();
    let _ = child.wait();
}

criterion_group!(benches, rewrite, proxy);
criterion_main!(benches);

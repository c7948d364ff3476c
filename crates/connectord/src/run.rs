//! `connectord run`, `validate` and `rows`: the daemon's wiring.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use connector_core::Registry;
use connector_runner::{
    ConnectorSpec, DeliveryStore, DiscoveryStore, IngestLimits, Origin, PushStore, Runner,
    RunnerConfig, Sink, Start, StateStore,
};
use store_postgres::PgStore;
use store_sqlite::SqliteStore;
use tokio::sync::watch;

use crate::api;
use crate::cli::LogFormat;
use crate::config::{self, FileConfig, StorageKind};
use crate::listener;

pub fn validate(path: &Path, registry: &Registry) -> Result<()> {
    let config = config::load(path, registry)?;
    let names: Vec<_> = config.connectors.iter().map(|c| c.name.as_str()).collect();
    println!("ok: {} connectors ({})", names.len(), names.join(", "));
    if !config.destinations.is_empty() {
        let names: Vec<_> = config
            .destinations
            .iter()
            .map(|d| d.name.as_str())
            .collect();
        println!("ok: {} destinations ({})", names.len(), names.join(", "));
    }
    if !config.discovery.is_empty() {
        let names: Vec<_> = config.discovery.iter().map(|d| d.name.as_str()).collect();
        println!("ok: {} discoveries ({})", names.len(), names.join(", "));
    }
    Ok(())
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().with_current_span(true).init(),
    }
}

pub fn run(path: &Path, log_format: LogFormat, registry: Arc<Registry>) -> Result<()> {
    init_logging(log_format);
    let config = config::load(path, &registry)?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(serve(config, registry))
}

/// Upserts the config file's connectors, several at once: on PostgreSQL each waits
/// for its own synchronous commit, and one at a time 10,000 connectors took most of
/// a minute to start.
async fn declare_connectors(store: &Arc<dyn StateStore>, specs: &[ConnectorSpec]) -> Result<()> {
    const AT_ONCE: usize = 16;
    let mut declaring = tokio::task::JoinSet::new();
    let mut specs = specs.iter().cloned();
    loop {
        while declaring.len() < AT_ONCE
            && let Some(spec) = specs.next()
        {
            let store = Arc::clone(store);
            declaring.spawn(async move {
                let declared = store.upsert_connector(&spec, Origin::File).await;
                (spec.name, declared)
            });
        }
        let Some(done) = declaring.join_next().await else {
            return Ok(());
        };
        let (name, declared) = done.context("a connector's declaration stopped")?;
        let record = declared.with_context(|| format!("cannot store connector `{name}`"))?;
        tracing::info!(connector_id = %record.id, connector = %name, state = %record.state, "connector declared in the config file");
    }
}

async fn serve(config: FileConfig, registry: Arc<Registry>) -> Result<()> {
    let Storage {
        state: store,
        sink,
        deliveries,
        discoveries,
        push,
    } = open_storage(&config).await?;
    declare_connectors(&store, &config.connectors).await?;
    for spec in &config.destinations {
        let start_ms = start_ms(spec.start, &*store).await?;
        let record = deliveries
            .upsert_destination(spec, Origin::File, start_ms)
            .await
            .with_context(|| format!("cannot store destination `{}`", spec.name))?;
        tracing::info!(destination_id = %record.id, destination = %spec.name, source = %spec.source, state = %record.state, "destination declared in the config file");
    }
    for spec in &config.discovery {
        let stored = serde_json::to_value(spec)
            .with_context(|| format!("cannot store discovery `{}`", spec.name))?;
        let record = discoveries
            .upsert_discovery(&spec.name, &stored, Origin::File)
            .await
            .with_context(|| format!("cannot store discovery `{}`", spec.name))?;
        tracing::info!(discovery_id = %record.id, discovery = %spec.name, "discovery declared in the config file");
    }
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let addr = listener
        .local_addr()
        .context("cannot read the bound address")?;
    // Listening for the signals before saying so: a supervisor (or a test) may send
    // SIGTERM as soon as it reads the line, and a handler installed later, by a task
    // not yet run, let that signal kill the process instead of stopping it.
    let mut signals = StopSignals::install();
    tracing::info!(data_dir = %config.storage.data_dir.display(), "listening on http://{addr}");

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        signals.next().await;
        tracing::info!(
            "stop requested: no new ticks; finishing ticks in flight (a second signal exits at once)"
        );
        let _ = stop_tx.send(true);
        signals.next().await;
        tracing::warn!("second stop signal: exiting now; ticks in flight commit nothing");
        std::process::exit(1);
    });
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    let tokens = resolve_tokens(&config)?;
    let mut runner_id = String::new();
    let runner = config.runner.enabled.then(|| {
        let runner_config = RunnerConfig {
            tick_timeout: Duration::from_millis(config.runner.tick_timeout_ms),
            lease: Duration::from_millis(config.runner.lease_ms),
            shutdown_grace: Duration::from_millis(config.runner.shutdown_grace_ms),
            default_retention: config
                .storage
                .default_retention
                .as_deref()
                .and_then(|r| connector_runner::parse_duration(r).ok()),
            prune_interval: Duration::from_millis(config.storage.prune_interval_ms),
            ..RunnerConfig::default()
        };
        tracing::info!(runner_id = %runner_config.runner_id, "runner starting");
        runner_id.clone_from(&runner_config.runner_id);
        Runner::new(store.clone(), sink, Arc::clone(&registry), runner_config)
            .with_deliveries(Arc::clone(&deliveries))
            .with_push(
                Arc::clone(&push),
                IngestLimits {
                    max_staged_bytes: config.ingest.max_staged_bytes,
                    grace: Duration::from_millis(config.ingest.grace_ms),
                },
            )
    });
    if runner.is_none() {
        tracing::warn!("[runner] enabled = false: serving the API only, no ticks will run");
    }
    // Discoveries run where ticks run: a process with the runner disabled only serves
    // their API.
    let manager = runner.as_ref().map(|runner| {
        discovery::Manager::new(
            Arc::clone(&discoveries),
            store.clone(),
            Arc::clone(&registry),
            Some(runner.handle()),
            runner_id.clone(),
        )
    });
    let app = api::router(api::ApiState {
        store: store.clone(),
        deliveries,
        discoveries,
        discoveries_changed: manager.as_ref().map(|m| Arc::clone(&m.changed)),
        registry,
        runner: runner.as_ref().map(Runner::handle),
        ingestor: runner.as_ref().and_then(Runner::ingestor),
        push,
        max_ingest_body: usize::try_from(config.ingest.max_body_bytes).unwrap_or(usize::MAX),
        tokens: Arc::new(tokens),
        file_roots: Arc::new(config.server.api_file_roots.clone()),
        query: config
            .query
            .clone()
            .map(|q| Arc::new(crate::query::proxy::QueryBackend::new(q))),
    });
    let limits = listener::Limits {
        header_read_timeout: Duration::from_millis(config.server.header_read_timeout_ms),
        idle_timeout: Duration::from_millis(config.server.idle_timeout_ms),
        max_connections: config.server.max_connections,
        max_header_bytes: config.server.max_header_bytes,
    };
    let server = tokio::spawn(listener::serve(listener, app, limits, stop_rx.clone()));

    let manager = manager.map(|m| tokio::spawn(m.run(stop_rx.clone())));
    match runner {
        Some(runner) => runner.run(stopped(stop_rx)).await,
        None => stopped(stop_rx).await,
    }
    if let Some(manager) = manager {
        manager.await.context("the discovery task failed")?;
    }
    server.await.context("the HTTP server task failed")
}

/// Where a new destination begins: every committed bucket, or those from now on (the
/// store's clock, the one leases use).
pub async fn start_ms(start: Start, store: &dyn StateStore) -> Result<i64> {
    Ok(match start {
        Start::Earliest => i64::MIN,
        Start::Latest => store
            .now_ms()
            .await
            .context("cannot read the store's clock")?,
    })
}

/// The configured store, seen through each of its three traits.
pub struct Storage {
    pub state: Arc<dyn StateStore>,
    pub sink: Arc<dyn Sink>,
    pub deliveries: Arc<dyn DeliveryStore>,
    pub discoveries: Arc<dyn DiscoveryStore>,
    pub push: Arc<dyn PushStore>,
}

/// Opens the configured store: SQLite files, or one PostgreSQL database whose URL is
/// resolved from its `$env:` reference here, at start.
pub async fn open_storage(config: &FileConfig) -> Result<Storage> {
    use connector_core::SecretSource as _;
    match config.storage.kind {
        StorageKind::Sqlite => {
            let store = Arc::new(SqliteStore::open(&config.storage.data_dir).with_context(
                || {
                    format!(
                        "cannot open the data folder {}",
                        config.storage.data_dir.display()
                    )
                },
            )?);
            Ok(Storage {
                state: store.clone(),
                sink: store.clone(),
                deliveries: store.clone(),
                discoveries: store.clone(),
                push: store,
            })
        }
        StorageKind::Postgres => {
            let url_ref = config
                .storage
                .url_ref
                .as_ref()
                .context("storage.url_ref is missing")?;
            let url = connector_core::EnvSecrets
                .resolve(url_ref)
                .map_err(|e| anyhow::anyhow!("storage.url_ref: token resolve: {e}"))?;
            // The URL may carry a password: name only the variable in errors.
            let store = Arc::new(
                PgStore::connect(url.expose(), config.storage.max_connections)
                    .await
                    .with_context(|| format!("cannot open PostgreSQL from {url_ref}"))?,
            );
            tracing::info!("state and rows in PostgreSQL ({url_ref})");
            Ok(Storage {
                state: store.clone(),
                sink: store.clone(),
                deliveries: store.clone(),
                discoveries: store.clone(),
                push: store,
            })
        }
    }
}

/// Resolves every API token once, at start: a missing variable stops connectord here
/// rather than locking everyone out later.
fn resolve_tokens(config: &FileConfig) -> Result<Vec<api::Token>> {
    use connector_core::SecretSource as _;
    config
        .server
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let secret = connector_core::EnvSecrets
                .resolve(&t.token_ref)
                .map_err(|e| {
                    anyhow::anyhow!("server.tokens[{i}] `{}`: token resolve: {e}", t.name)
                })?;
            if secret.expose().len() < 16 {
                bail!(
                    "server.tokens[{i}] `{}`: the token is shorter than 16 characters",
                    t.name
                );
            }
            Ok(api::Token {
                name: t.name.clone(),
                secret,
                scopes: t.scopes.clone(),
                org_id: t.org_id.clone(),
            })
        })
        .collect()
}

/// SIGTERM and Ctrl-C, each listened for from [`StopSignals::install`] on.
struct StopSignals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let listen = |kind: SignalKind, name: &str| {
                signal(kind)
                    .inspect_err(|e| tracing::warn!(error = %e, "cannot listen for {name}"))
                    .ok()
            };
            StopSignals {
                term: listen(SignalKind::terminate(), "SIGTERM"),
                interrupt: listen(SignalKind::interrupt(), "SIGINT"),
            }
        }
        #[cfg(not(unix))]
        StopSignals {}
    }

    /// Completes at the next SIGTERM or Ctrl-C.
    async fn next(&mut self) {
        #[cfg(unix)]
        {
            async fn recv(signal: Option<&mut tokio::signal::unix::Signal>) {
                match signal {
                    Some(signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                () = recv(self.term.as_mut()) => {}
                () = recv(self.interrupt.as_mut()) => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

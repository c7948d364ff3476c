//! `airq`: polls an air-quality API that answers JSON, one row per device reading:
//! `{"devices": [{"id": "d-17", "room": "kitchen", "readings": {"co2_ppm": 612}}]}`.
//! Config: `{"endpoint": "https://airq.example/v1/readings", "token_ref": "$env:AIRQ_TOKEN",
//! "timeout_ms": 5000}`. Rows: `timestamp`, `device_id`, `room`, `metric`, `value`.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use connector_core::{
    Batch, ColumnType, Connector, ConnectorError, Schema, SecretRef, TickContext, async_trait,
    check_range, config_from_json,
};
use connector_http::http::header::ACCEPT;
use connector_http::{Auth, HttpClient, check_endpoint};
use serde::Deserialize;

/// The config as operators write it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    endpoint: String,
    token_ref: SecretRef,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u64,
}

const fn default_timeout_ms() -> u64 {
    5_000 // connector-http bounds every attempt by it, connect to last byte
}

/// A validated `airq` config.
#[derive(Debug)]
pub struct AirqConfig {
    endpoint: String,
    auth: Auth,
    timeout_ms: u64,
}

#[derive(Deserialize)]
struct Body {
    devices: Vec<Device>,
}

#[derive(Deserialize)] // unknown keys are allowed: the API may add fields
struct Device {
    id: String,
    room: String,
    readings: BTreeMap<String, f64>,
}

static SCHEMA: LazyLock<Arc<Schema>> = LazyLock::new(|| {
    Arc::new(Schema::new([
        ("timestamp", ColumnType::Timestamp),
        ("device_id", ColumnType::String),
        ("room", ColumnType::String),
        ("metric", ColumnType::String),
        ("value", ColumnType::Real),
    ]))
});

/// The `airq` connector. One [`HttpClient`] serves every tick.
#[derive(Debug, Default)]
pub struct Airq {
    client: HttpClient,
}

#[async_trait]
impl Connector for Airq {
    const TYPE_ID: &'static str = "airq";
    type Config = AirqConfig;

    fn schema(&self) -> Arc<Schema> {
        SCHEMA.clone()
    }

    fn validate_config(&self, raw: &serde_json::Value) -> Result<AirqConfig, ConnectorError> {
        let raw: RawConfig = config_from_json(raw)?;
        check_endpoint("endpoint", &raw.endpoint)?;
        check_range("timeout_ms", raw.timeout_ms, 100..=60_000)?;
        Ok(AirqConfig {
            endpoint: raw.endpoint,
            auth: Auth::Bearer {
                token_ref: raw.token_ref,
            },
            timeout_ms: raw.timeout_ms,
        })
    }

    async fn tick(&self, ctx: &TickContext, config: &AirqConfig) -> Result<Batch, ConnectorError> {
        let response = self
            .client
            .get(&config.endpoint)
            .action("poll")
            .header(ACCEPT, "application/json")
            .auth(&config.auth)
            .timeout_ms(config.timeout_ms)
            .send(ctx)
            .await?;
        let body: Body = response.json()?;
        let mut batch = Batch::new(self.schema());
        for device in &body.devices {
            for (metric, value) in &device.readings {
                batch
                    .row()
                    .timestamp(ctx.scheduled_for_ms())
                    .string(&device.id)
                    .string(&device.room)
                    .string(metric)
                    .real(*value)
                    .finish()?;
            }
        }
        Ok(batch)
    }
}

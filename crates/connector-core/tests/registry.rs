use std::sync::Arc;

use connector_core::testing::Harness;
use connector_core::{
    Batch, ColumnType, Connector, ConnectorError, ErrorKind, Registry, RegistryError, Schema,
    SecretRef, TickContext, Value, async_trait, config_from_json,
};

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EchoConfig {
    word: String,
    #[serde(default)]
    token_ref: Option<SecretRef>,
}

struct Echo;

#[async_trait]
impl Connector for Echo {
    const TYPE_ID: &'static str = "echo";
    type Config = EchoConfig;

    fn schema(&self) -> Arc<Schema> {
        Arc::new(Schema::new([
            ("timestamp", ColumnType::Timestamp),
            ("word", ColumnType::String),
        ]))
    }

    fn validate_config(&self, raw: &serde_json::Value) -> Result<EchoConfig, ConnectorError> {
        config_from_json(raw)
    }

    async fn tick(&self, ctx: &TickContext, config: &EchoConfig) -> Result<Batch, ConnectorError> {
        let mut word = config.word.clone();
        if let Some(token) = &config.token_ref {
            let secret = ctx
                .resolve(token)
                .map_err(|e| ConnectorError::from(e).context("token resolve"))?;
            word.push_str(&secret.expose().len().to_string());
        }
        let mut batch = Batch::new(self.schema());
        batch
            .row()
            .timestamp(ctx.scheduled_for_ms())
            .string(&word)
            .finish()?;
        Ok(batch)
    }
}

struct Other;

#[async_trait]
impl Connector for Other {
    const TYPE_ID: &'static str = "other";
    type Config = ();

    fn schema(&self) -> Arc<Schema> {
        Arc::new(Schema::new([("x", ColumnType::Real)]))
    }

    fn validate_config(&self, raw: &serde_json::Value) -> Result<(), ConnectorError> {
        config_from_json(raw)
    }

    async fn tick(&self, _: &TickContext, _: &()) -> Result<Batch, ConnectorError> {
        // Deliberately returns rows of the wrong schema, for the harness check.
        Ok(Batch::new(Arc::new(Schema::new([("y", ColumnType::Real)]))))
    }
}

#[tokio::test]
async fn registry_validates_and_ticks_without_knowing_the_type() {
    let mut registry = Registry::new();
    registry.register(Echo).unwrap();
    registry.register(Other).unwrap();
    assert_eq!(
        registry.register(Echo),
        Err(RegistryError::Duplicate("echo"))
    );
    assert_eq!(
        registry.connector_types().collect::<Vec<_>>(),
        ["echo", "other"]
    );

    let config = registry
        .validate("echo", &serde_json::json!({"word": "hi"}))
        .unwrap();
    assert_eq!(config.connector_type(), "echo");
    let batch = registry
        .tick(&TickContext::new("id-1", 42), &config)
        .await
        .unwrap();
    assert_eq!(batch.get(0, 0), Value::Timestamp(42));
    assert_eq!(batch.get(0, 1), Value::String("hi"));

    let err = registry
        .validate("echo", &serde_json::json!({"wrod": "hi"}))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert_eq!(
        err.to_string(),
        "unknown field `wrod`, expected `word` or `token_ref`"
    );

    let err = registry
        .validate("nope", &serde_json::json!({}))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown connector type `nope`; known types: echo, other"
    );

    // A config validated by one type is refused by another.
    let other = registry.get("other").unwrap();
    let err = other
        .tick(&TickContext::new("id-1", 0), &config)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert_eq!(
        err.to_string(),
        "config was validated by connector type `echo`, not `other`"
    );
}

#[tokio::test]
async fn harness_resolves_secrets_from_its_own_map() {
    let raw = serde_json::json!({"word": "len", "token_ref": "$env:ECHO_TOKEN"});
    let batch = Harness::new(Echo)
        .secret("ECHO_TOKEN", "abcd")
        .scheduled_for_ms(7)
        .run(&raw)
        .await
        .unwrap();
    let row = batch.rows().next().unwrap();
    assert_eq!(row.get("word"), Some(Value::String("len4")));

    let err = Harness::new(Echo).run(&raw).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert_eq!(
        err.to_string(),
        "token resolve: environment variable `ECHO_TOKEN` is not set"
    );

    let err = Harness::new(Echo)
        .run(&serde_json::json!({"word": "x", "token_ref": "plain-secret"}))
        .await
        .unwrap_err();
    assert!(!err.to_string().contains("plain-secret"), "{err}");
}

#[tokio::test]
async fn harness_rejects_a_batch_of_the_wrong_schema() {
    let err = Harness::new(Other)
        .run(&serde_json::Value::Null)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent);
    assert!(err.to_string().contains("schema differs"), "{err}");
}

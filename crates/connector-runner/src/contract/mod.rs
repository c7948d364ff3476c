//! The store contract: what every [`StateStore`] + [`Sink`] + [`DeliveryStore`] +
//! [`PushStore`] + [`DiscoveryStore`] must do, as tests that
//! each store runs against its real database (feature `store-contract`).
//!
//! A store's test file opens a fresh store per test and expands the whole suite:
//!
//! ```ignore
//! async fn open() -> Option<connector_runner::contract::Opened<MyStore>> { ... }
//! connector_runner::store_contract_tests!(open);
//! ```
//!
//! Every test works on connector names and target databases of its own, so a store
//! shared between tests (one PostgreSQL database) is fine.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)] // test support: a panic is the failure report

mod delivery;
mod discovery;
mod layout;
mod parts;
mod push;
mod retention;
mod runner;
mod store;
mod tick_end;

use std::any::Any;
use std::sync::Arc;

use connector_core::{Batch, ColumnType, Schema};

pub use delivery::*;
pub use discovery::*;
pub use layout::*;
pub use parts::*;
pub use push::*;
pub use retention::*;
pub use runner::*;
pub use store::*;
pub use tick_end::*;

use crate::{ConnectorSpec, DeliveryStore, DiscoveryStore, PushStore, RowQuery, Sink, StateStore};

/// A store opened for one contract test.
pub struct Opened<S> {
    /// The store under test.
    pub store: Arc<S>,
    /// Target names this store reserves, as (`"target_database"` or
    /// `"target_table"`, name): each must be refused at create time.
    pub reserved: Vec<(&'static str, &'static str)>,
    /// Kept alive for the test (a temporary folder, say).
    pub guard: Box<dyn Any + Send + Sync>,
}

impl<S> std::fmt::Debug for Opened<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened").finish_non_exhaustive()
    }
}

/// What the contract needs of a store.
pub trait ContractStore:
    StateStore + Sink + DeliveryStore + PushStore + DiscoveryStore + 'static
{
}
impl<S: StateStore + Sink + DeliveryStore + PushStore + DiscoveryStore + 'static> ContractStore
    for S
{
}

/// A name no other test uses: a letter, then 32 hex digits.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// A spec writing to `database`.`samples`.
pub fn spec(name: &str, database: &str) -> ConnectorSpec {
    ConnectorSpec {
        name: name.into(),
        connector_type: "prometheus".into(),
        target_database: database.into(),
        target_table: "samples".into(),
        schedule_ms: 1000,
        config: serde_json::json!({"endpoint": "http://127.0.0.1:1/metrics"}),
        retention: None,
        org_id: crate::DEFAULT_ORG.into(),
    }
}

/// The metric row schema.
pub fn metric_schema() -> Arc<Schema> {
    Arc::new(Schema::new([
        ("timestamp", ColumnType::Timestamp),
        ("name", ColumnType::String),
        ("value", ColumnType::Real),
        ("labels", ColumnType::Dynamic),
    ]))
}

/// `rows` metric rows at `ts`, every other value null, labels with a quote and a newline.
pub fn metric_batch(rows: usize, ts: i64) -> Batch {
    let mut b = Batch::new(metric_schema());
    for i in 0..rows {
        let row = b.row().timestamp(ts).string("m");
        let row = if i % 2 == 0 {
            row.real(i as f64)
        } else {
            row.null()
        };
        row.map([("i", i.to_string()), ("q", "\"quoted\"\n".to_owned())])
            .finish()
            .unwrap();
    }
    b
}

/// Every row of `database`.`table`, newest first, read back through the sink.
pub async fn read_all(
    store: &impl Sink,
    database: &str,
    table: &str,
    schema: Option<Arc<Schema>>,
) -> Vec<Vec<serde_json::Value>> {
    store
        .read_rows(&RowQuery {
            database: database.into(),
            table: table.into(),
            schema,
            since_ms: None,
            limit: 1_000_000,
        })
        .await
        .unwrap()
        .rows
}

/// Expands the whole contract as `#[tokio::test]`s over stores from `$open`, an
/// async fn returning `Option<Opened<S>>` (`None` skips, e.g. when no database is
/// configured outside CI).
#[macro_export]
macro_rules! store_contract_tests {
    ($open:path) => {
        $crate::store_contract_tests!(@each $open;
            claims_are_exclusive_until_expiry_and_tokens_increase,
            sixteen_runners_race_for_one_bucket_and_one_wins,
            a_bucket_commits_once_and_a_stale_lease_commits_nothing,
            a_table_with_other_columns_is_refused,
            every_column_type_round_trips,
            rows_read_back_newest_first_with_since_and_limit,
            connectors_are_upserted_by_name_and_keep_their_status,
            create_update_delete_and_state_changes,
            connectors_page_in_id_order_with_filters,
            reserved_target_names_are_refused,
            tick_history_is_newest_first_trimmed_and_beside_the_connector,
            renewal_only_while_the_token_matches,
            the_store_clock_is_close_to_real_time,
            runner_transient_and_permanent_errors_keep_ticking,
            runner_a_config_error_disables_the_connector,
            runner_a_panic_fails_that_tick_only,
            runner_a_tick_past_the_timeout_commits_nothing,
            runner_stopping_waits_for_the_tick_in_flight,
            runner_trigger_runs_a_tick_now,
            runner_a_trigger_right_after_a_create_is_not_lost,
            runner_a_tick_longer_than_its_lease_commits_because_it_renews,
            destinations_are_kept_like_connectors,
            committed_buckets_read_back_whole_oldest_first,
            the_delivery_ledger_passes_a_bucket_once,
            runner_delivers_every_bucket_in_order_once,
            runner_transient_retries_and_permanent_halts,
            runner_dead_letters_and_starts_latest,
            staged_requests_commit_once_with_their_bucket,
            late_failed_and_fenced_commits_lose_nothing,
            a_request_sent_again_is_staged_once,
            staging_racing_a_commit_counts_every_item_once,
            runner_commits_pushed_requests_once,
            discoveries_are_kept_with_their_status,
            managed_connectors_follow_the_wanted_set,
            prune_removes_old_buckets_of_one_connector_a_batch_at_a_time,
            metric_rows_store_each_series_once_and_read_back_unchanged,
            a_failed_commit_with_new_series_leaves_later_commits_right,
            a_large_metric_batch_commits_whole_once_or_not_at_all,
            a_commit_in_parts_lands_whole_once_or_not_at_all,
            a_commit_in_parts_under_a_lost_lease_writes_nothing,
            a_commit_in_parts_of_series_seen_before_lands_whole_once_or_not_at_all,
            dead_letters_keep_the_newest,
            prune_keeps_a_batch_within_its_row_budget_but_takes_one_bucket,
            a_commit_past_the_lease_end_is_fenced,
            a_tick_ends_in_one_step,
            runners_are_live_while_heard_from,
        );
    };
    (@each $open:path; $($test:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                if let Some(opened) = $open().await {
                    $crate::contract::$test(opened).await;
                }
            }
        )*
    };
}

//! How a target table sits in PostgreSQL, as in the SQLite store (its `layout.rs`
//! says why): `Rows` keeps rows as they come; `Metric` keeps each series once in
//! `<table>__series` (labels as jsonb) and samples in chunks in `<table>__samples`:
//! one record per run of at most [`CHUNK_ROWS`] samples of one bucket, with their
//! positions `first_row..=last_row` and their timestamps, series ids and values as
//! three arrays. `<table>` is a view unnesting the chunks and joining the series back
//! into the row shape, `_connectord_row` included, so SQL reads the view as it read
//! the table; readers of a bucket's positions go through [`Layout::rows_between`],
//! since a computed position cannot use an index.
//!
//! Why chunks: PostgreSQL pays about a microsecond for every record a COPY inserts
//! here (tuple, header, BRIN index entry, WAL record). Records of 1,024 samples took
//! 3,027 node_exporter samples in 0.85 ms where a record each took 3.66 ms (`COPY ...
//! FROM` a file of either shape, 200 times in `psql`), and a record's 24-byte header
//! no longer comes with every sample. The arrays are stored uncompressed
//! (`STORAGE EXTERNAL`): pglz compressing them cost as much as the records saved.
//!
//! Tables that an older connectord made with one record per sample are rewritten
//! into chunks by schema migration 10 ([`rewrite_sample_records`]).

use connector_core::Schema;
use connector_runner::protocol::quote_ident;
use connector_runner::{StoreError, StoreErrorKind};

use crate::backend;
use crate::schema::ROW_POSITION;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    Rows,
    Metric,
}

/// PostgreSQL's identifier limit, in bytes; longer names are silently truncated.
const MAX_IDENTIFIER: usize = 63;

fn fnv1a(text: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// `<table><suffix>`, or, when that passes the identifier limit (a table name may
/// use all 63 bytes), the table's first bytes, a hash of the whole name and the
/// suffix: a truncation could make two tables share their series.
fn derived(table: &str, suffix: &str) -> String {
    if table.len() + suffix.len() <= MAX_IDENTIFIER {
        return format!("{table}{suffix}");
    }
    let mut keep = MAX_IDENTIFIER - suffix.len() - 17;
    while !table.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{}_{:016x}{suffix}", &table[..keep], fnv1a(table))
}

pub(crate) fn series_table(table: &str) -> String {
    derived(table, "__series")
}

pub(crate) fn samples_table(table: &str) -> String {
    derived(table, "__samples")
}

/// An index name: long table names get a stable hash rather than a truncation
/// that could collide.
pub(crate) fn index_name(purpose: &str, table: &str) -> String {
    format!("_connectord_{purpose}_{:016x}", fnv1a(table))
}

impl Layout {
    /// The layout a new table of `schema` gets.
    pub(crate) fn for_schema(schema: &Schema) -> Layout {
        if metric_rows::is_metric_schema(schema) {
            Layout::Metric
        } else {
            Layout::Rows
        }
    }

    /// The layout of `schema`.`table`, or `None` when there is no such relation.
    pub(crate) async fn of(
        client: &impl tokio_postgres::GenericClient,
        schema: &str,
        table: &str,
    ) -> Result<Option<Layout>, StoreError> {
        let kinds = client
            .query(
                "SELECT c.relname::text, c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname IN ($2, $3)",
                &[&schema, &table, &samples_table(table)],
            )
            .await
            .map_err(backend("cannot read the table's kind"))?;
        let kind = |name: &str| -> Option<String> {
            kinds
                .iter()
                .find(|r| r.get::<_, String>(0) == name)
                .map(|r| r.get(1))
        };
        match kind(table).as_deref() {
            None => Ok(None),
            Some("r" | "p") => Ok(Some(Layout::Rows)),
            Some("v") if kind(&samples_table(table)).is_some() => Ok(Some(Layout::Metric)),
            Some("v") => Err(StoreError::new(
                StoreErrorKind::Invalid,
                format!(
                    "`{schema}.{table}` is a view without its `{}` table; connectord did not make it and cannot write to it",
                    samples_table(table)
                ),
            )),
            Some(other) => Err(StoreError::new(
                StoreErrorKind::Invalid,
                format!(
                    "`{schema}.{table}` is a relation of kind `{other}`, not a table connectord can write to"
                ),
            )),
        }
    }

    /// The statements that create `schema`.`table` (absent so far) in this layout.
    pub(crate) fn create_sql(self, schema: &str, table: &str, columns_sql: &str) -> String {
        let schema_q = quote_ident(schema);
        match self {
            // A BRIN index: positions grow with the table's physical order, so a
            // bucket's range is found from a few pages of summary, and commits pay
            // next to nothing.
            Layout::Rows => format!(
                "CREATE SCHEMA IF NOT EXISTS {schema_q}; CREATE TABLE IF NOT EXISTS {schema_q}.{t} ({columns_sql}); \
                 ALTER TABLE {schema_q}.{t} ADD COLUMN IF NOT EXISTS {ROW_POSITION} bigint; \
                 CREATE INDEX IF NOT EXISTS {index} ON {schema_q}.{t} USING brin ({ROW_POSITION})",
                t = quote_ident(table),
                index = index_name("row", table),
            ),
            // The series key hashes the labels: a btree entry holds at most about
            // 2.7 kB, and label-heavy series come near that.
            Layout::Metric => format!(
                "CREATE SCHEMA IF NOT EXISTS {schema_q};
                 CREATE TABLE IF NOT EXISTS {schema_q}.{series} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL, labels jsonb NOT NULL);
                 CREATE UNIQUE INDEX IF NOT EXISTS {series_index} ON {schema_q}.{series} (name, md5(labels::text));
                 {chunks};
                 {view}",
                series = quote_ident(&series_table(table)),
                series_index = index_name("series", table),
                chunks = chunks_table_sql(schema, &samples_table(table)),
                view = view_sql(schema, table, &samples_table(table)),
            ),
        }
    }

    /// `schema`.`table` that holds the rows: one record per row with its position
    /// column, or for metric tables their chunks.
    pub(crate) fn positions_table(self, schema: &str, table: &str) -> String {
        let table = match self {
            Layout::Rows => table.to_owned(),
            Layout::Metric => samples_table(table),
        };
        format!("{}.{}", quote_ident(schema), quote_ident(&table))
    }
}

/// Samples per chunk at most: a bucket's samples are cut into runs of this many, so
/// reading a few rows of a bucket back detoasts at most this many of its samples.
pub(crate) const CHUNK_ROWS: usize = 1024;

/// The columns of a chunks table, in the order every write of chunks lists them.
pub(crate) const CHUNK_COLUMNS: &str = "first_row, last_row, \"timestamp\", series, value";

/// Creates the chunks table `schema`.`chunks` (columns as [`CHUNK_COLUMNS`]) with its
/// BRIN index on the positions it holds, which grow with the table's physical order
/// as positions did.
fn chunks_table_sql(schema: &str, chunks: &str) -> String {
    let table = format!("{}.{}", quote_ident(schema), quote_ident(chunks));
    format!(
        "CREATE TABLE IF NOT EXISTS {table} (first_row bigint NOT NULL, last_row bigint NOT NULL, \
           \"timestamp\" timestamptz[] NOT NULL, series bigint[] NOT NULL, value double precision[] NOT NULL);
         ALTER TABLE {table} ALTER COLUMN \"timestamp\" SET STORAGE EXTERNAL, \
           ALTER COLUMN series SET STORAGE EXTERNAL, ALTER COLUMN value SET STORAGE EXTERNAL;
         CREATE INDEX IF NOT EXISTS {index} ON {table} USING brin (first_row, last_row)",
        index = index_name("row", chunks),
    )
}

/// The rows of the chunks table `schema`.`chunks` in the row shape, each with its
/// position, joined with the series of `table`; `chunk_filter` restricts the chunks
/// before they are unnested.
fn rows_of_chunks(schema: &str, table: &str, chunks: &str, chunk_filter: &str) -> String {
    let schema_q = quote_ident(schema);
    format!(
        "SELECT u.\"timestamp\", r.name, u.value, r.labels, c.first_row + u.n - 1 AS {ROW_POSITION} \
         FROM {schema_q}.{chunks} c \
         CROSS JOIN LATERAL unnest(c.\"timestamp\", c.series, c.value) WITH ORDINALITY AS u(\"timestamp\", series, value, n) \
         JOIN {schema_q}.{series} r ON r.id = u.series {chunk_filter}",
        chunks = quote_ident(chunks),
        series = quote_ident(&series_table(table)),
    )
}

/// The view `schema`.`table` over the chunks table `chunks`: the rows as a table of
/// rows had them.
fn view_sql(schema: &str, table: &str, chunks: &str) -> String {
    format!(
        "CREATE OR REPLACE VIEW {}.{} AS {}",
        quote_ident(schema),
        quote_ident(table),
        rows_of_chunks(schema, table, chunks, "")
    )
}

impl Layout {
    /// What to select rows with positions in `($1, $2]` from: the table itself, or
    /// for metric tables the chunks holding such positions, found from the BRIN index
    /// before anything is unnested (the view's computed positions cannot use it).
    pub(crate) fn rows_between(self, schema: &str, table: &str) -> String {
        match self {
            Layout::Rows => format!("{}.{}", quote_ident(schema), quote_ident(table)),
            Layout::Metric => format!(
                "({}) AS rows_between",
                rows_of_chunks(
                    schema,
                    table,
                    &samples_table(table),
                    "WHERE c.first_row <= $2 AND c.last_row > $1"
                )
            ),
        }
    }

    /// A statement deleting the rows with positions in `[$1, $2]`, a whole bucket's,
    /// that returns how many rows it deleted.
    pub(crate) fn delete_between_sql(self, schema: &str, table: &str) -> String {
        let positions = self.positions_table(schema, table);
        match self {
            Layout::Rows => format!(
                "WITH gone AS (DELETE FROM {positions} WHERE {ROW_POSITION} BETWEEN $1 AND $2 RETURNING 1) \
                 SELECT count(*)::bigint FROM gone"
            ),
            // A chunk never holds rows of two buckets.
            Layout::Metric => format!(
                "WITH gone AS (DELETE FROM {positions} WHERE first_row BETWEEN $1 AND $2 \
                   RETURNING last_row - first_row + 1 AS rows) \
                 SELECT coalesce(sum(rows), 0)::bigint FROM gone"
            ),
        }
    }

    /// A statement counting the table's rows without reading them.
    pub(crate) fn count_sql(self, schema: &str, table: &str) -> String {
        let positions = self.positions_table(schema, table);
        match self {
            Layout::Rows => format!("SELECT count(*)::bigint FROM {positions}"),
            Layout::Metric => format!(
                "SELECT coalesce(sum(last_row - first_row + 1), 0)::bigint FROM {positions}"
            ),
        }
    }
}

/// Rewrites every metric table that an older connectord made with one record per
/// sample into chunks, in the caller's transaction (the schema migration's, under its
/// lock). Each bucket of the ledger becomes its chunks; a table whose records the
/// ledger does not account for one by one is refused, naming it, and nothing changes.
/// The view is replaced in place, so grants on it stay. Each bucket is read through
/// the positions' BRIN index and cut into chunks on its own, so the rewrite never
/// sorts the whole table.
pub(crate) async fn rewrite_sample_records(
    tx: &tokio_postgres::Transaction<'_>,
) -> Result<(), StoreError> {
    let views = tx
        .query(
            "SELECT DISTINCT n.nspname::text, v.relname::text, t.relname::text \
             FROM pg_class t JOIN pg_namespace n ON n.oid = t.relnamespace \
             JOIN pg_attribute a ON a.attrelid = t.oid AND a.attname = 'series' AND a.atttypid = 'int8'::regtype \
             JOIN pg_depend d ON d.refobjid = t.oid AND d.classid = 'pg_rewrite'::regclass \
             JOIN pg_rewrite w ON w.oid = d.objid \
             JOIN pg_class v ON v.oid = w.ev_class AND v.relkind = 'v' AND v.relnamespace = t.relnamespace \
             WHERE t.relkind = 'r'",
            &[],
        )
        .await
        .map_err(backend("cannot find metric tables with a record per sample"))?;
    for view in views {
        let (schema, table, records): (String, String, String) =
            (view.get(0), view.get(1), view.get(2));
        if samples_table(&table) != records {
            continue;
        }
        rewrite_one(tx, &schema, &table).await?;
    }
    Ok(())
}

async fn rewrite_one(
    tx: &tokio_postgres::Transaction<'_>,
    schema: &str,
    table: &str,
) -> Result<(), StoreError> {
    let records = samples_table(table);
    let fresh = derived(table, "__rewritten");
    let schema_q = quote_ident(schema);
    let (records_q, fresh_q) = (quote_ident(&records), quote_ident(&fresh));
    let failed = |what: &'static str| {
        let name = format!("{schema}.{table}");
        move |e: tokio_postgres::Error| {
            StoreError::backend(format!("metric table `{name}`: cannot {what}"), e)
        }
    };
    // The old table keeps its BRIN index until it is dropped: each bucket's records
    // are found through it. Without it, every bucket scanned the whole table (2 M
    // samples in 271 buckets: 21.7 s against 1.9 s with it).
    tx.batch_execute(&chunks_table_sql(schema, &fresh))
        .await
        .map_err(failed("create its chunks table"))?;
    let row = tx
        .query_one(
            &format!(
                "WITH chunked AS ( \
                   INSERT INTO {schema_q}.{fresh_q} ({CHUNK_COLUMNS}) \
                   SELECT c.* FROM connectord.ledger l CROSS JOIN LATERAL ( \
                     SELECT min(r.{ROW_POSITION}), max(r.{ROW_POSITION}), \
                       array_agg(r.\"timestamp\" ORDER BY r.{ROW_POSITION}), \
                       array_agg(r.series ORDER BY r.{ROW_POSITION}), array_agg(r.value ORDER BY r.{ROW_POSITION}) \
                     FROM {schema_q}.{records_q} r WHERE r.{ROW_POSITION} BETWEEN l.first_row AND l.last_row \
                     GROUP BY (r.{ROW_POSITION} - l.first_row) / {CHUNK_ROWS}) c \
                   WHERE l.target_database = $1 AND l.target_table = $2 AND l.first_row IS NOT NULL \
                   RETURNING last_row - first_row + 1 AS span, cardinality(series) AS rows) \
                 SELECT (SELECT count(*) FROM {schema_q}.{records_q})::bigint, \
                   coalesce(sum(rows), 0)::bigint, count(*) FILTER (WHERE span <> rows)::bigint FROM chunked",
            ),
            &[&schema, &table],
        )
        .await
        .map_err(failed("rewrite its samples into chunks"))?;
    let (records_n, chunked, broken): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    if records_n != chunked || broken != 0 {
        return Err(StoreError::new(
            StoreErrorKind::Invalid,
            format!(
                "metric table `{schema}.{table}`: the ledger accounts for {chunked} of its {records_n} samples \
                 ({broken} buckets with gaps), so it cannot be rewritten into chunks and nothing was changed; \
                 move its rows elsewhere or drop it, then start connectord again"
            ),
        ));
    }
    tx.batch_execute(&format!(
        "{view}; DROP TABLE {schema_q}.{records_q}; ALTER TABLE {schema_q}.{fresh_q} RENAME TO {records_q}; \
         ALTER INDEX {schema_q}.{fresh_index} RENAME TO {index}",
        view = view_sql(schema, table, &fresh),
        fresh_index = quote_ident(&index_name("row", &fresh)),
        index = quote_ident(&index_name("row", &records)),
    ))
    .await
    .map_err(failed("put its chunks in place"))?;
    tracing::info!(
        table = %format!("{schema}.{table}"),
        samples = records_n,
        "metric table rewritten into chunks"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_names_fit_the_identifier_limit_and_stay_distinct() {
        assert_eq!(samples_table("samples"), "samples__samples");
        let long_a = format!("{}a", "t".repeat(62));
        let long_b = format!("{}b", "t".repeat(62));
        for name in [samples_table(&long_a), series_table(&long_a)] {
            assert!(name.len() <= MAX_IDENTIFIER, "{name}");
        }
        assert_ne!(samples_table(&long_a), samples_table(&long_b));
        let wide = "ü".repeat(31);
        assert!(samples_table(&wide).len() <= MAX_IDENTIFIER);
    }
}

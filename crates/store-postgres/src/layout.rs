//! How a target table sits in PostgreSQL, as in the SQLite store (its `layout.rs`
//! says why): `Rows` keeps rows as they come; `Metric` keeps each series once in
//! `<table>__series` (labels as jsonb), samples as (timestamp, series id, value,
//! position) in `<table>__samples`, and `<table>` is a view joining them back into
//! the row shape, `_connectord_row` included, so every reader, positions and all,
//! reads the view as it read the table.

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
                 CREATE TABLE IF NOT EXISTS {schema_q}.{samples} (\"timestamp\" timestamptz, series bigint NOT NULL, value double precision, {ROW_POSITION} bigint);
                 CREATE INDEX IF NOT EXISTS {samples_index} ON {schema_q}.{samples} USING brin ({ROW_POSITION});
                 CREATE VIEW {schema_q}.{view} AS SELECT s.\"timestamp\", r.name, s.value, r.labels, s.{ROW_POSITION} \
                   FROM {schema_q}.{samples} s JOIN {schema_q}.{series} r ON r.id = s.series",
                series = quote_ident(&series_table(table)),
                samples = quote_ident(&samples_table(table)),
                view = quote_ident(table),
                series_index = index_name("series", table),
                samples_index = index_name("row", &samples_table(table)),
            ),
        }
    }

    /// `schema`.`table` that holds one record per row, with its position column.
    pub(crate) fn positions_table(self, schema: &str, table: &str) -> String {
        let table = match self {
            Layout::Rows => table.to_owned(),
            Layout::Metric => samples_table(table),
        };
        format!("{}.{}", quote_ident(schema), quote_ident(&table))
    }
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

//! `connectord rows`: a connector's table read back from whichever store the TOML
//! file names, as JSON lines.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use connector_core::Registry;
use connector_runner::RowQuery;

use crate::config;

/// `connectord rows --config FILE --connector NAME [--since WHEN] [--limit N]`.
#[derive(Debug, clap::Args)]
pub struct RowsArgs {
    /// The TOML file the connector runs from.
    #[arg(long)]
    config: PathBuf,
    /// The connector's name (declared in the file or created over the API).
    #[arg(long)]
    connector: String,
    /// How many rows, newest first.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Only rows at or after this time: Unix milliseconds, or an age such as 30s,
    /// 15m, 2h or 7d.
    #[arg(long, value_parser = parse_since)]
    since: Option<Since>,
}

#[derive(Debug, Clone, Copy)]
enum Since {
    UnixMs(i64),
    Ago(Duration),
}

fn parse_since(text: &str) -> Result<Since, String> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(Since::UnixMs(ms));
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is neither Unix milliseconds nor an age like 15m"))?;
    let seconds = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("`{text}`: the unit must be s, m, h or d")),
    };
    Ok(Since::Ago(Duration::from_secs(seconds)))
}

pub fn run(args: &RowsArgs, registry: &Arc<Registry>) -> Result<()> {
    let file = config::load(&args.config, registry)?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(async {
            let crate::run::Storage {
                state: store, sink, ..
            } = crate::run::open_storage(&file).await?;
            let connectors = store.list_connectors().await?;
            let Some(record) = connectors.iter().find(|c| c.spec.name == args.connector) else {
                let names: Vec<_> = connectors.iter().map(|c| c.spec.name.as_str()).collect();
                bail!(
                    "no connector `{}` in the store of {}; it has: {}",
                    args.connector,
                    args.config.display(),
                    if names.is_empty() {
                        "none".to_owned()
                    } else {
                        names.join(", ")
                    }
                );
            };
            let since_ms = args.since.map(|since| match since {
                Since::UnixMs(ms) => ms,
                Since::Ago(age) => {
                    connector_runner::protocol::wall_clock_ms()
                        - i64::try_from(age.as_millis()).unwrap_or(i64::MAX)
                }
            });
            let query = RowQuery {
                database: record.spec.target_database.clone(),
                table: record.spec.target_table.clone(),
                schema: registry
                    .get(&record.spec.connector_type)
                    .map(|c| c.schema()),
                since_ms,
                limit: args.limit,
            };
            let read = sink.read_rows(&query).await?;
            let mut out = String::new();
            for row in read.rows {
                let object: serde_json::Map<String, serde_json::Value> =
                    read.columns.iter().cloned().zip(row).collect();
                out.push_str(&serde_json::Value::Object(object).to_string());
                out.push('\n');
            }
            use std::io::Write as _;
            std::io::stdout()
                .write_all(out.as_bytes())
                .context("cannot write to standard output")?;
            Ok(())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_unix_ms_or_an_age() {
        assert!(matches!(
            parse_since("1700000000000"),
            Ok(Since::UnixMs(1_700_000_000_000))
        ));
        assert!(matches!(parse_since("15m"), Ok(Since::Ago(d)) if d == Duration::from_secs(900)));
        assert!(
            matches!(parse_since("2d"), Ok(Since::Ago(d)) if d == Duration::from_secs(172_800))
        );
        assert_eq!(
            parse_since("5w").unwrap_err(),
            "`5w`: the unit must be s, m, h or d"
        );
        assert!(parse_since("soon").is_err());
    }
}

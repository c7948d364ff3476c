//! The state database is checked before connectord writes to it: a file that is not
//! SQLite, or is truncated or damaged, stops the start with a message naming the
//! file, and nothing is written to it (no WAL switch, no migration).

use std::io::Read as _;
use std::path::Path;

use connector_runner::{StoreError, StoreErrorKind};
use rusqlite::{Connection, OpenFlags};

/// The first 16 bytes of every SQLite database file.
const MAGIC: &[u8; 16] = b"SQLite format 3\0";

fn refuse(path: &Path, what: &str) -> StoreError {
    StoreError::new(
        StoreErrorKind::Invalid,
        format!(
            "the state database {} {what}; connectord left it as it is: restore it from a backup, \
             or move it away to start with an empty state",
            path.display()
        ),
    )
}

/// The bytes SQLite's 100-byte header says the file holds, when its page count is
/// valid (its "version-valid-for" matches the change counter).
fn size_in_header(head: &[u8; 100]) -> Option<u64> {
    let page_size = match u16::from_be_bytes([head[16], head[17]]) {
        1 => 65_536,
        n => u64::from(n),
    };
    let pages = u32::from_be_bytes([head[28], head[29], head[30], head[31]]);
    (head[24..28] == head[92..96]).then(|| u64::from(pages) * page_size)
}

/// Checks an existing state database without writing to it: SQLite's header, the
/// file's length against the header's page count, then `PRAGMA quick_check` on a
/// read-only connection. A missing file is fine (it is created).
pub(crate) fn check_state_file(path: &Path) -> Result<(), StoreError> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(StoreError::backend(
                format!("cannot read {}", path.display()),
                e,
            ));
        }
    };
    let mut head = [0u8; 100];
    if file.read_exact(&mut head).is_err() {
        // SQLite writes the whole header with the first page: a shorter file was cut.
        return Err(refuse(path, "is truncated (shorter than SQLite's header)"));
    }
    if &head[..16] != MAGIC {
        return Err(refuse(
            path,
            "is not a SQLite database (its first bytes are not SQLite's header)",
        ));
    }
    let actual = file.metadata().map_or(u64::MAX, |m| m.len());
    if let Some(expected) = size_in_header(&head)
        && actual < expected
    {
        return Err(refuse(
            path,
            &format!("is truncated ({actual} bytes; its header says {expected})"),
        ));
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| refuse(path, "cannot be opened").with_cause(e))?;
    match conn.query_row("PRAGMA quick_check", [], |r| r.get::<_, String>(0)) {
        Ok(ok) if ok == "ok" => Ok(()),
        Ok(problem) => Err(refuse(
            path,
            &format!("is damaged (quick_check: {problem})"),
        )),
        Err(e) => Err(refuse(path, &format!("is damaged ({e})")).with_cause(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_truncation_and_damage_are_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.sqlite");
        assert!(check_state_file(&path).is_ok());

        std::fs::write(&path, vec![7u8; 5000]).unwrap();
        let err = check_state_file(&path).unwrap_err().to_string();
        assert!(err.contains("is not a SQLite database"), "{err}");
        assert!(err.contains("connectord left it as it is"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), vec![7u8; 5000]);

        std::fs::write(&path, b"").unwrap();
        let err = check_state_file(&path).unwrap_err().to_string();
        assert!(
            err.contains("is truncated (shorter than SQLite's header)"),
            "{err}"
        );

        std::fs::remove_file(&path).unwrap();
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE t (x); WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 20000) \
             INSERT INTO t SELECT n || '-padding-padding' FROM c;",
        )
        .unwrap();
        drop(conn);
        assert!(check_state_file(&path).is_ok());
        let whole = std::fs::read(&path).unwrap();

        std::fs::write(&path, &whole[..whole.len() / 2]).unwrap();
        let err = check_state_file(&path).unwrap_err().to_string();
        assert!(err.contains("is truncated ("), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), &whole[..whole.len() / 2]);

        // A page in the middle overwritten: SQLite's own check finds it.
        let mut damaged = whole.clone();
        let page = damaged.len() / 2 / 4096 * 4096;
        damaged[page..page + 4096].fill(0xA5);
        std::fs::write(&path, &damaged).unwrap();
        let err = check_state_file(&path).unwrap_err().to_string();
        assert!(err.contains("is damaged"), "{err}");
    }
}

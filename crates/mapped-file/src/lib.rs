//! A file's bytes, mapped into memory rather than read into it.
//!
//! `connectord parse` on a 2 GB file read all of it into a `Vec` first (2.1 GB of
//! anonymous memory). A map costs no copy and only page-cache pages, which the kernel
//! can drop under pressure. Mapping needs `unsafe` (another process may change the
//! file under the map), so it lives here alone, behind a safe API, in the one crate
//! of the workspace that does not forbid `unsafe`.

use std::fs::File;
use std::io;

/// The bytes of a regular file, mapped read-only.
#[derive(Debug)]
pub struct MappedFile {
    // An empty file cannot be mapped: `None` stands for it.
    map: Option<memmap2::Mmap>,
}

impl MappedFile {
    /// Maps an open file. Anything but a regular file (a FIFO, a device, a
    /// directory) is refused with [`io::ErrorKind::InvalidInput`]: such files change
    /// as they are read, and a map of `/dev/zero` would never end. The caller opens
    /// the file, so it can read a FIFO it has opened once (its writer may be gone
    /// after the first open).
    pub fn new(file: &File) -> io::Result<Self> {
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        if meta.len() == 0 {
            return Ok(MappedFile { map: None });
        }
        // SAFETY: the map is read-only and private to this process. Its one hazard is
        // another process truncating or rewriting the file while it is mapped: reads
        // past a truncation raise SIGBUS and a rewrite shows new bytes. The callers
        // (`connectord parse`) read files at rest and validate every byte as UTF-8
        // and exposition text, so a rewrite can give a wrong answer, never undefined
        // behaviour in safe code that trusts the bytes' values. Populating up front
        // turns the page faults of a sequential scan into one kernel call.
        #[allow(unsafe_code)]
        let map = unsafe { memmap2::MmapOptions::new().populate().map(file)? };
        Ok(MappedFile { map: Some(map) })
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn map(path: &Path) -> io::Result<MappedFile> {
        MappedFile::new(&File::open(path)?)
    }

    #[test]
    fn maps_a_file_and_refuses_what_is_not_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.prom");
        std::fs::write(&path, b"up 1\n").unwrap();
        assert_eq!(map(&path).unwrap().bytes(), b"up 1\n");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        assert_eq!(map(&empty).unwrap().bytes(), b"");
        let err = map(dir.path()).unwrap_err();
        assert!(
            matches!(
                err.kind(),
                io::ErrorKind::InvalidInput | io::ErrorKind::IsADirectory
            ),
            "{err}"
        );
        let err = map(Path::new("/dev/zero")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}

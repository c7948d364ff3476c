//! Prometheus's file SD: target groups in JSON or YAML files, a `*` allowed in the
//! last path element. Every target gets `__meta_filepath`. A file that fails to parse
//! keeps its last good targets and reports its line and column.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use relabel::Labels;

use crate::targets::TargetGroup;

/// The largest file read: target files are small; a larger one is an error, not an
/// allocation.
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// `*` (any run) and `?` (one character) over a file name, as `filepath.Match` does
/// for names without `[`.
fn matches(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// The files `patterns` name now, sorted, each once.
pub fn expand(patterns: &[String]) -> Vec<PathBuf> {
    let mut files = std::collections::BTreeSet::new();
    for pattern in patterns {
        let path = Path::new(pattern);
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if !name.contains(['*', '?']) {
            files.insert(path.to_path_buf());
            continue;
        }
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if let Some(file) = entry.file_name().to_str()
                && matches(name, file)
            {
                files.insert(dir.join(file));
            }
        }
    }
    files.into_iter().collect()
}

/// The directories to watch for `patterns`.
pub fn watched_dirs(patterns: &[String]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = patterns
        .iter()
        .map(|p| {
            Path::new(p)
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf()
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

/// `line L, column C: message`, without the ` at line L column C` both parsers append.
fn located(line: usize, column: usize, message: &str) -> String {
    let message = message.replacen(&format!(" at line {line} column {column}"), "", 1);
    format!("line {line}, column {column}: {message}")
}

fn parse_file(path: &Path, text: &str) -> Result<Vec<TargetGroup>, String> {
    let yaml = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("yml") || e.eq_ignore_ascii_case("yaml"));
    let groups: Vec<TargetGroup> = if yaml {
        serde_yaml_ng::from_str::<Option<Vec<TargetGroup>>>(text)
            .map(Option::unwrap_or_default)
            .map_err(|e| match e.location() {
                Some(at) => located(at.line(), at.column(), &e.to_string()),
                None => e.to_string(),
            })?
    } else {
        serde_json::from_str(text)
            .map_err(|e| format!("line {}, column {}: {e}", e.line(), e.column()))?
    };
    for (i, group) in groups.iter().enumerate() {
        group
            .check()
            .map_err(|e| format!("target group {i}: {e}"))?;
    }
    Ok(groups)
}

/// One file's outcome in a refresh.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileStatus {
    /// The path.
    pub path: String,
    /// Targets it contributed (its last good ones when it failed).
    pub targets: usize,
    /// Why it could not be read this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `path: error` of every file that failed, joined by `; `; `None` when none did.
pub fn failures(files: &[FileStatus]) -> Option<String> {
    files
        .iter()
        .filter_map(|f| Some(format!("{}: {}", f.path, f.error.as_ref()?)))
        .reduce(|a, b| format!("{a}; {b}"))
}

/// The target groups of each file at its last good read.
#[derive(Debug, Default)]
pub struct FileCache {
    good: HashMap<PathBuf, Vec<TargetGroup>>,
}

impl FileCache {
    /// Reads every file `patterns` name. A file that fails keeps its last good groups
    /// (none if it never parsed); a file that is gone is forgotten. `Err` when some
    /// file failed with no good read in this process to fall back on: the caller
    /// must not sync, or that file's connectors would be removed.
    pub fn read(&mut self, patterns: &[String]) -> (Vec<Labels>, Vec<FileStatus>, bool) {
        let files = expand(patterns);
        self.good.retain(|path, _| files.contains(path));
        let (mut targets, mut statuses, mut complete) = (Vec::new(), Vec::new(), true);
        for path in files {
            let display = path.display().to_string();
            let read = read_bounded(&path).and_then(|text| parse_file(&path, &text));
            let error = match read {
                Ok(groups) => {
                    self.good.insert(path.clone(), groups);
                    None
                }
                Err(e) => {
                    complete &= self.good.contains_key(&path);
                    Some(e)
                }
            };
            let groups = self.good.get(&path).map_or(&[][..], Vec::as_slice);
            let before = targets.len();
            for group in groups {
                targets.extend(group.discovered(("__meta_filepath", &display)));
            }
            statuses.push(FileStatus {
                path: display,
                targets: targets.len() - before,
                error,
            });
        }
        (targets, statuses, complete)
    }
}

fn read_bounded(path: &Path) -> Result<String, String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read as UTF-8 text: {e}"))?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("larger than {MAX_FILE_BYTES} bytes"));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_of_the_last_element() {
        assert!(matches("*.json", "a.json"));
        assert!(matches("t?-*.yml", "t1-x.yml"));
        assert!(!matches("*.json", "a.yml"));
        assert!(matches("*", ""));
        let dir = tempfile::tempdir().unwrap();
        for f in ["a.json", "b.json", "c.yml"] {
            std::fs::write(dir.path().join(f), "[]").unwrap();
        }
        let pattern = format!("{}/*.json", dir.path().display());
        let files = expand(&[pattern.clone(), pattern]);
        assert_eq!(files.len(), 2);
    }

    #[test]
    fn a_bad_file_keeps_its_last_good_targets_and_reports_where() {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("t.json");
        let yaml = dir.path().join("t.yml");
        std::fs::write(&json, r#"[{"targets": ["a:1"], "labels": {"env": "x"}}]"#).unwrap();
        std::fs::write(&yaml, "- targets: ['b:2']\n  labels:\n    env: y\n").unwrap();
        let patterns = vec![format!("{}/t.*", dir.path().display())];
        let mut cache = FileCache::default();
        let (targets, statuses, complete) = cache.read(&patterns);
        assert!(complete);
        assert_eq!(targets.len(), 2);
        assert_eq!(targets[1]["__meta_filepath"], yaml.display().to_string());
        std::fs::write(&yaml, "- targets: ['b:2']\n  labels: {env: y\n").unwrap();
        let (targets, statuses2, complete) = cache.read(&patterns);
        assert!(complete, "the yaml file fell back on its last good read");
        assert_eq!(targets.len(), 2);
        let error = statuses2[1].error.as_deref().unwrap();
        assert!(error.starts_with("line 3, column 1: "), "{error}");
        assert_eq!(statuses[1].error, None);
        let mut fresh = FileCache::default();
        let (targets, _, complete) = fresh.read(&patterns);
        assert!(!complete);
        assert_eq!(targets.len(), 1);
        std::fs::remove_file(&yaml).unwrap();
        let (targets, statuses, _) = cache.read(&patterns);
        assert_eq!((targets.len(), statuses.len()), (1, 1));
    }
}

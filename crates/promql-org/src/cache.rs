//! Rewrites remembered by org and text.

use crate::RewriteError;

/// Rewritten queries and selectors by org and text. Grafana sends a dashboard's
/// queries again at every refresh with only the times changed, and a query the
/// scan leaves to the parse tree costs about 2 ms each time
/// (`cargo bench -p benches --bench query`).
#[derive(Debug)]
pub struct RewriteCache {
    entries: std::sync::Mutex<std::collections::HashMap<(Kind, String, String), String>>,
    capacity: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Query,
    Selector,
}

impl RewriteCache {
    /// A cache of at most `capacity` rewrites; when full it starts over, which
    /// keeps it bounded without bookkeeping on every hit.
    pub fn new(capacity: usize) -> Self {
        RewriteCache {
            entries: std::sync::Mutex::new(std::collections::HashMap::new()),
            capacity,
        }
    }

    /// [`crate::confine_query`], remembered.
    pub fn query(&self, query: &str, org: &str) -> Result<String, RewriteError> {
        self.get_or(Kind::Query, query, org, crate::confine_query)
    }

    /// [`crate::confine_selector`], remembered.
    pub fn selector(&self, selector: &str, org: &str) -> Result<String, RewriteError> {
        self.get_or(Kind::Selector, selector, org, crate::confine_selector)
    }

    fn get_or(
        &self,
        kind: Kind,
        text: &str,
        org: &str,
        rewrite: fn(&str, &str) -> Result<String, RewriteError>,
    ) -> Result<String, RewriteError> {
        let key = (kind, org.to_owned(), text.to_owned());
        let lock = || {
            self.entries
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if let Some(hit) = lock().get(&key) {
            return Ok(hit.clone());
        }
        let rewritten = rewrite(text, org)?;
        let mut entries = lock();
        if entries.len() >= self.capacity {
            entries.clear();
        }
        entries.insert(key, rewritten.clone());
        Ok(rewritten)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_answers_as_the_rewrite_does_and_stays_bounded() {
        let cache = RewriteCache::new(2);
        for _ in 0..2 {
            assert_eq!(cache.query("up", "a").unwrap(), "up{org_id=\"a\"}");
            assert_eq!(cache.query("up", "b").unwrap(), "up{org_id=\"b\"}");
        }
        assert_eq!(cache.selector("up", "a").unwrap(), "up{org_id=\"a\"}");
        assert!(cache.selector("sum(up)", "a").is_err());
        assert!(cache.entries.lock().unwrap().len() <= 2);
    }
}

//! Series ids by name and labels, for the stores' caches of a metric table's
//! series: found from a row's two texts where they lie, without building a key.

use std::hash::{BuildHasher as _, Hasher as _};
use std::ops::Range;

/// The ids of a table's series, each under its name and labels' JSON text.
///
/// An exporter writes its series in the same order at every scrape, so the series
/// after the one last looked up is compared first: its texts follow the last
/// one's in one string, and the walk through them reads memory in order. Only
/// when that guess is wrong is the series hashed and looked up. The hash map
/// alone (a key string built for each row, then hashed and probed) was the
/// largest share of the SQLite store's own time in a label-heavy commit under
/// `perf`, most of it waiting on the probe's cache miss into 2 MB of keys.
///
/// ```
/// use metric_rows::SeriesIds;
///
/// let mut ids = SeriesIds::default();
/// ids.insert("up", r#"{"job":"node"}"#, 7);
/// ids.insert("up", r#"{"job":"db"}"#, 8);
/// assert_eq!(ids.get("up", r#"{"job":"node"}"#), Some(7));
/// assert_eq!(ids.get("up", r#"{"job":"db"}"#), Some(8));
/// assert_eq!(ids.get("up", "{}"), None);
/// ```
#[derive(Default)]
pub struct SeriesIds {
    /// Every series' name then labels, in the order the series were first inserted.
    text: String,
    series: Vec<Series>,
    /// Indices into `series`, hashed by name and labels.
    index: hashbrown::HashTable<usize>,
    /// foldhash, seeded per process: SipHash over each sample's labels was a tenth
    /// of a label-heavy commit in `perf`.
    hasher: foldhash::fast::RandomState,
    /// The series compared first at the next lookup.
    next: usize,
}

impl std::fmt::Debug for SeriesIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeriesIds")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

/// One series: where its name and its labels lie in `SeriesIds::text`, and its id.
struct Series {
    name: Range<usize>,
    labels_end: usize,
    id: i64,
}

impl Series {
    fn parts<'t>(&self, text: &'t str) -> (&'t str, &'t str) {
        (
            &text[self.name.clone()],
            &text[self.name.end..self.labels_end],
        )
    }

    fn is(&self, text: &str, name: &str, labels: &str) -> bool {
        self.name.len() == name.len()
            && self.labels_end - self.name.end == labels.len()
            && self.parts(text) == (name, labels)
    }
}

fn hash(hasher: &foldhash::fast::RandomState, name: &str, labels: &str) -> u64 {
    let mut h = hasher.build_hasher();
    // The name's length first: ("ab", "{}") and ("a", "b{}") hash apart.
    h.write_usize(name.len());
    h.write(name.as_bytes());
    h.write(labels.as_bytes());
    h.finish()
}

impl SeriesIds {
    /// The id of the series `name` with `labels`, if it is known.
    pub fn get(&mut self, name: &str, labels: &str) -> Option<i64> {
        let found = match self.series.get(self.next) {
            Some(guess) if guess.is(&self.text, name, labels) => self.next,
            _ => self.find(name, labels)?,
        };
        self.next = found + 1;
        self.series.get(found).map(|s| s.id)
    }

    fn find(&self, name: &str, labels: &str) -> Option<usize> {
        let SeriesIds {
            text,
            series,
            index,
            hasher,
            ..
        } = self;
        index
            .find(hash(hasher, name, labels), |&i| {
                series.get(i).is_some_and(|s| s.is(text, name, labels))
            })
            .copied()
    }

    /// Remembers `id` for the series `name` with `labels`, in place of any id it had.
    pub fn insert(&mut self, name: &str, labels: &str, id: i64) {
        let SeriesIds {
            text,
            series,
            index,
            hasher,
            next,
        } = self;
        let entry = index.entry(
            hash(hasher, name, labels),
            |&i| series.get(i).is_some_and(|s| s.is(text, name, labels)),
            |&i| {
                series.get(i).map_or(0, |s| {
                    let (name, labels) = s.parts(text);
                    hash(hasher, name, labels)
                })
            },
        );
        let at = match entry {
            hashbrown::hash_table::Entry::Occupied(known) => {
                let at = *known.get();
                if let Some(s) = series.get_mut(at) {
                    s.id = id;
                }
                at
            }
            hashbrown::hash_table::Entry::Vacant(new) => {
                let start = text.len();
                text.push_str(name);
                text.push_str(labels);
                series.push(Series {
                    name: start..start + name.len(),
                    labels_end: text.len(),
                    id,
                });
                *new.insert(series.len() - 1).get()
            }
        };
        *next = at + 1;
    }

    /// How many series are known.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// Whether no series is known.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    /// Names and labels that split one text in several ways, so that series whose
    /// texts run together (`ab` + `{}`, `a` + `b{}`) meet in the guess and the table.
    const NAMES: [&str; 4] = ["", "a", "ab", "b"];
    const LABELS: [&str; 5] = ["", "{}", "b{}", "{", "ab{}"];

    #[derive(Debug, Clone)]
    enum Op {
        Insert(usize, usize, i64),
        Get(usize, usize),
        /// Asks `len` known series in the order they were first inserted, from the
        /// `from`th: a scrape repeating its order, which the guess serves.
        Replay(usize, usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..NAMES.len(), 0..LABELS.len(), any::<i64>())
                .prop_map(|(n, l, id)| Op::Insert(n, l, id)),
            (0..NAMES.len(), 0..LABELS.len()).prop_map(|(n, l)| Op::Get(n, l)),
            (0..20usize, 0..20usize).prop_map(|(from, len)| Op::Replay(from, len)),
        ]
    }

    proptest! {
        /// Whatever the order of inserts and lookups, `SeriesIds` answers as a map
        /// from (name, labels) to the last id inserted does.
        #[test]
        fn lookups_answer_as_a_map_does(ops in proptest::collection::vec(op(), 0..200)) {
            let mut ids = SeriesIds::default();
            let mut model: HashMap<(&str, &str), i64> = HashMap::new();
            let mut order: Vec<(&str, &str)> = Vec::new();
            for op in ops {
                match op {
                    Op::Insert(n, l, id) => {
                        let key = (NAMES[n], LABELS[l]);
                        if model.insert(key, id).is_none() {
                            order.push(key);
                        }
                        ids.insert(key.0, key.1, id);
                    }
                    Op::Get(n, l) => {
                        let key = (NAMES[n], LABELS[l]);
                        prop_assert_eq!(ids.get(key.0, key.1), model.get(&key).copied());
                    }
                    Op::Replay(from, len) => {
                        for &key in order.iter().skip(from).take(len) {
                            prop_assert_eq!(ids.get(key.0, key.1), model.get(&key).copied());
                        }
                    }
                }
                prop_assert_eq!(ids.len(), model.len());
            }
        }
    }

    fn series(i: usize) -> (String, String) {
        (format!("m{}", i % 7), format!(r#"{{"i":"{i}"}}"#))
    }

    #[test]
    fn series_are_told_apart_by_name_and_labels_wherever_they_split() {
        let mut ids = SeriesIds::default();
        ids.insert("ab", "{}", 1);
        ids.insert("a", "b{}", 2);
        ids.insert("", "ab{}", 3);
        assert_eq!(ids.get("ab", "{}"), Some(1));
        assert_eq!(ids.get("a", "b{}"), Some(2));
        assert_eq!(ids.get("", "ab{}"), Some(3));
        assert_eq!(ids.get("abb", "{}"), None);
        assert_eq!(ids.get("a", "b{}"), Some(2));
        assert_eq!(ids.get("ab", "{"), None);
        ids.insert("ab", "{}", 4);
        assert_eq!((ids.get("ab", "{}"), ids.len()), (Some(4), 3));
    }

    #[test]
    fn every_series_is_found_whatever_order_it_is_asked_in() {
        let mut ids = SeriesIds::default();
        let n = 5_000;
        for i in 0..n {
            let (name, labels) = series(i);
            ids.insert(&name, &labels, i as i64);
        }
        assert_eq!(ids.len(), n);
        let orders: [Box<dyn Fn(usize) -> usize>; 4] = [
            // The order they came in, as a scrape repeats it.
            Box::new(|i| i),
            Box::new(move |i| n - 1 - i),
            // In order, but with every tenth series gone.
            Box::new(|i| i + i / 9),
            // Scattered.
            Box::new(move |i| (i * 7_919) % n),
        ];
        for order in orders {
            for i in (0..n).map(&order).filter(|&i| i < n) {
                let (name, labels) = series(i);
                assert_eq!(ids.get(&name, &labels), Some(i as i64), "series {i}");
                assert_eq!(ids.get(&name, "{}"), None);
            }
        }
        // A series not known, asked where the guess would be the next one.
        assert_eq!(ids.get("m0", r#"{"i":"0"}"#), Some(0));
        assert_eq!(ids.get("m1", r#"{"i":"x"}"#), None);
        assert_eq!(ids.get("m1", r#"{"i":"1"}"#), Some(1));
    }
}

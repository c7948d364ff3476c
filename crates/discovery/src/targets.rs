//! Target groups as Prometheus's SD formats write them, and what each target becomes:
//! relabeled labels, an endpoint, and one managed connector.

use std::collections::BTreeMap;

use connector_core::Registry;
use connector_runner::{ConnectorSpec, MAX_NAME_LEN, ManagedConnector};
use relabel::{Labels, TargetOutcome, populate_target};
use serde::{Deserialize, Serialize};

use crate::spec::{Discovery, with_target};

/// One entry of an SD list: `{"targets": ["host:port", ...], "labels": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetGroup {
    /// Addresses, each a target's `__address__`.
    pub targets: Vec<String>,
    /// Labels every target of the group gets.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl TargetGroup {
    /// Checks label names as Prometheus does when it reads a group.
    pub fn check(&self) -> Result<(), String> {
        match self
            .labels
            .keys()
            .find(|n| !relabel::is_valid_label_name(n))
        {
            Some(bad) => Err(format!("\"{bad}\" is not a valid label name")),
            None => Ok(()),
        }
    }

    /// Each target's discovered labels: the group's, `__address__`, and `meta`
    /// (`__meta_url`, `__meta_filepath`).
    pub fn discovered(&self, meta: (&str, &str)) -> impl Iterator<Item = Labels> + '_ {
        let meta = (meta.0.to_owned(), meta.1.to_owned());
        self.targets.iter().map(move |address| {
            let mut labels = self.labels.clone();
            labels.insert(meta.0.clone(), meta.1.clone());
            labels.insert("__address__".to_owned(), address.clone());
            labels
        })
    }
}

/// A kept target, as `GET /v1/discoveries/:id` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveTarget {
    /// Its managed connector.
    pub connector_id: String,
    /// Its managed connector's name.
    pub connector_name: String,
    /// The scrape URL built from `__scheme__`, `__address__`, `__metrics_path__`, `__param_*`.
    pub endpoint: String,
    /// The labels its rows carry (no `__` labels).
    pub labels: Labels,
    /// The labels before relabeling.
    pub discovered_labels: Labels,
}

/// A target relabeling dropped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DroppedTarget {
    /// The labels before relabeling.
    pub discovered_labels: Labels,
}

/// A target that relabeling kept but that cannot be scraped (no address, a bad
/// scheme, an endpoint its connector type refuses).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvalidTarget {
    /// The labels before relabeling.
    pub discovered_labels: Labels,
    /// Why.
    pub error: String,
}

/// Every discovered target, sorted out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Targets {
    /// Kept, with their connectors.
    pub active: Vec<ActiveTarget>,
    /// Dropped by relabeling.
    pub dropped: Vec<DroppedTarget>,
    /// Kept but unusable.
    pub invalid: Vec<InvalidTarget>,
    /// The connectors the active targets become.
    #[serde(skip)]
    pub wanted: Vec<ManagedConnector>,
}

/// FNV-1a 64: stable across processes and Rust versions.
fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The managed connector's name: `<discovery>/<instance>/<hash>`, where the hash is
/// of the endpoint and every label (a target is its URL and labels, as in
/// Prometheus), so the same target gets the same name, and id, after a restart.
pub fn connector_name(discovery: &str, endpoint: &str, labels: &Labels) -> String {
    let key = labels
        .iter()
        .flat_map(|(k, v)| [k.as_bytes(), b"\x00", v.as_bytes(), b"\x00"])
        .flatten()
        .copied();
    let hash = fnv1a(endpoint.bytes().chain([0]).chain(key));
    let suffix = format!("/{:012x}", hash & 0xffff_ffff_ffff);
    let instance: String = labels
        .get("instance")
        .map_or("", String::as_str)
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    let room = MAX_NAME_LEN.saturating_sub(discovery.len() + 1 + suffix.len());
    let mut end = instance.len().min(room);
    while !instance.is_char_boundary(end) {
        end -= 1;
    }
    format!("{discovery}/{}{suffix}", &instance[..end])
}

/// The id for a managed connector's name: a UUID v5, the same on every process.
pub fn connector_id(name: &str) -> String {
    const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6c1e_0d2a_8f4b_4c37_9a51_3e0f_d1c4_b7a2);
    uuid::Uuid::new_v5(&NAMESPACE, name.as_bytes()).to_string()
}

impl Discovery {
    /// Relabels every discovered label set and builds the connectors of those kept.
    pub fn sort_targets(&self, discovered: Vec<Labels>, registry: &Registry) -> Targets {
        let mut out = Targets::default();
        let mut names = std::collections::HashSet::new();
        for labels in discovered {
            match populate_target(&labels, &self.defaults, &self.rules) {
                TargetOutcome::Dropped { discovered } => out.dropped.push(DroppedTarget {
                    discovered_labels: discovered,
                }),
                TargetOutcome::Invalid { discovered, reason } => out.invalid.push(InvalidTarget {
                    discovered_labels: discovered,
                    error: reason,
                }),
                TargetOutcome::Active { target, discovered } => {
                    let endpoint = target.url();
                    let public = target.public_labels();
                    let name = connector_name(&self.spec.name, &endpoint, &public);
                    if !names.insert(name.clone()) {
                        // The same URL and labels twice: one target, as Prometheus dedups.
                        continue;
                    }
                    let pairs: Vec<(&str, &str)> = public
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect();
                    let template = &self.spec.template;
                    let spec = ConnectorSpec {
                        name: name.clone(),
                        connector_type: template.connector_type.clone(),
                        target_database: template.target_database.clone(),
                        target_table: template.target_table.clone(),
                        schedule_ms: template.schedule_ms,
                        config: with_target(&template.config, &endpoint, &pairs),
                        retention: None,
                        org_id: template.org_id.clone(),
                    };
                    if let Err(e) = spec.validate(registry) {
                        out.invalid.push(InvalidTarget {
                            discovered_labels: discovered,
                            error: format!("{e:#}"),
                        });
                        continue;
                    }
                    let id = connector_id(&name);
                    out.active.push(ActiveTarget {
                        connector_id: id.clone(),
                        connector_name: name,
                        endpoint,
                        labels: public,
                        discovered_labels: discovered,
                    });
                    out.wanted.push(ManagedConnector { id, spec });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_readable_and_bounded() {
        let labels: Labels = [
            ("instance".to_owned(), "10.0.0.1:9100".to_owned()),
            ("job".to_owned(), "n".to_owned()),
        ]
        .into();
        let a = connector_name("nodes", "http://10.0.0.1:9100/metrics", &labels);
        assert_eq!(
            a,
            connector_name("nodes", "http://10.0.0.1:9100/metrics", &labels)
        );
        assert!(a.starts_with("nodes/10.0.0.1:9100/"), "{a}");
        assert_ne!(
            a,
            connector_name("nodes", "http://10.0.0.1:9100/other", &labels)
        );
        let long: Labels = [("instance".to_owned(), "é".repeat(200))].into();
        let b = connector_name(&"d".repeat(64), "http://h/m", &long);
        assert!(b.len() <= MAX_NAME_LEN, "{}", b.len());
        assert_eq!(connector_id(&a), connector_id(&a));
        assert_ne!(connector_id(&a), connector_id(&b));
    }

    #[test]
    fn groups_give_address_meta_and_their_labels() {
        let group: TargetGroup = serde_json::from_str(
            r#"{"targets": ["a:1", "b:2"], "labels": {"env": "prod", "__address__": "x"}}"#,
        )
        .unwrap();
        let sets: Vec<Labels> = group.discovered(("__meta_url", "http://sd")).collect();
        assert_eq!(sets.len(), 2);
        assert_eq!(sets[1]["__address__"], "b:2");
        assert_eq!(sets[0]["env"], "prod");
        assert_eq!(sets[0]["__meta_url"], "http://sd");
        let bad: TargetGroup =
            serde_json::from_str(r#"{"targets": [], "labels": {"a-b": "1"}}"#).unwrap();
        assert_eq!(
            bad.check().unwrap_err(),
            "\"a-b\" is not a valid label name"
        );
        assert!(serde_json::from_str::<TargetGroup>(r#"{"targets": [], "label": {}}"#).is_err());
    }
}

//! Version ids and the names of everything a processor version owns. Pure.
//!
//! For processor `P` at version `V` in namespace `N`, incarnation `I`:
//!
//! | thing | name | limit |
//! | --- | --- | --- |
//! | ViewVersion, Deployment | `P-V` | 63 (a label value; pod names stay readable) |
//! | Secret with the client properties | `P-V-client` | 253 |
//! | consumer group | `kappa.N.P.V.I` | 200 (its internal topics `kappa.N.P.V.I-...` need room) |
//! | view topic | `N.P.V.I` | 249 (Kafka) |
//! | active / preview Service | `P` / `P-preview` | 63 (DNS-1035 label) |
//! | ConfigMap for readers | `P-view` | 253 |
//!
//! The incarnation is when the ViewVersion was made (seconds since 1970, in
//! base 36: six characters until 2038): a version id that comes back after
//! it was retired gets a new group, new internal topics and a new view topic,
//! so it inherits nothing. The names are chosen once, when the ViewVersion is
//! made, and recorded in its (immutable) spec: they never change for its life.
//!
//! A name over its limit is cut and suffixed with a hash of the whole name,
//! so two different inputs never share a name. Version ids and incarnations
//! contain neither `-` nor `.`, and namespaces contain no `.`, so the joined
//! forms above are unambiguous before any shortening.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::jiff::Timestamp;

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::api::ProcessorSpec;

pub const LABEL_MAX: usize = 63;
pub const SUBDOMAIN_MAX: usize = 253;
pub const KAFKA_TOPIC_MAX: usize = 249;
/// Kafka Streams names internal topics `<application.id>-<name>-changelog`:
/// a group name leaves them room.
pub const GROUP_MAX: usize = 200;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hash8(s: &str) -> String {
    hex(&Sha256::digest(s.as_bytes())[..4])
}

/// The view topic configs a version gets: the declared ones, with
/// `cleanup.policy=compact` unless declared otherwise.
pub fn view_config(declared: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut config = declared.clone();
    config.entry("cleanup.policy".into()).or_insert_with(|| "compact".into());
    config
}

/// The processor's version id: `spec.version` when set, otherwise a hash of
/// every field that changes what the processor computes (image, command,
/// args, env, inputs, view settings, reprocessNonce). Replicas, resources,
/// labels and annotations are left out: they change how it runs, not what it
/// computes. JSON objects serialize with sorted keys, and inputs are sorted,
/// so no map or set ordering changes the id.
///
/// `upstreams` names the active version of each upstream Processor
/// (`processor/NAME` inputs): a new upstream version is a new view to
/// read, so a new version of this one. A Processor without upstreams keeps
/// the id it had before pipelines existed.
pub fn version_id(spec: &ProcessorSpec, upstreams: &BTreeMap<String, String>) -> String {
    if let Some(v) = &spec.version {
        return v.clone();
    }
    let t = &spec.template;
    let mut inputs = spec.inputs.clone();
    inputs.sort();
    let mut identity = json!({
        "image": t.image,
        "command": t.command,
        "args": t.args,
        "env": t.env,
        "inputs": inputs,
        "view": {
            "partitions": spec.view.partitions,
            "replicationFactor": spec.view.replication_factor,
            "config": view_config(&spec.view.config),
        },
        "reprocessNonce": spec.reprocess_nonce,
    });
    if !upstreams.is_empty() {
        identity["upstreams"] = json!(upstreams);
    }
    hex(&Sha256::digest(identity.to_string().as_bytes())[..5])
}

/// `s` if it fits in `max`, otherwise its head and a hash of all of it.
pub fn shorten(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let head = s[..max - 9].trim_end_matches(['-', '.', '_']);
    format!("{head}-{}", hash8(s))
}

/// A DNS-1035 label (Service names): lowercase alphanumerics and `-`,
/// starting with a letter, at most 63. A name that needs changing gets a
/// hash of the original, so different names stay different.
pub fn dns_label(s: &str) -> String {
    let valid = !s.is_empty()
        && s.len() <= LABEL_MAX
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.ends_with('-');
    if valid {
        return s.to_string();
    }
    let mut cleaned: String = s.chars().map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() { c } else { '-' }).collect();
    if !cleaned.starts_with(|c: char| c.is_ascii_lowercase()) {
        cleaned.insert_str(0, "p-");
    }
    let head: String = cleaned.chars().take(LABEL_MAX - 9).collect();
    format!("{}-{}", head.trim_end_matches('-'), hash8(s))
}

/// A label value for a processor name (names may be longer than 63).
pub fn label_value(s: &str) -> String {
    shorten(s, LABEL_MAX)
}

/// The one name whose [`label_value`] `label` can be, when only one can:
/// a value that does not end in a hash (as a shortened one does) is the
/// name itself. None when a longer name may have been shortened to it.
pub fn name_labelled(label: &str) -> Option<&str> {
    let tail = label.len().checked_sub(9).and_then(|at| label.get(at..));
    let hashed = tail.is_some_and(|t| t.starts_with('-') && t[1..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    (!hashed).then_some(label)
}

/// The names of everything one processor version owns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionNames {
    /// ViewVersion and Deployment.
    pub object: String,
    pub consumer_group: String,
    pub view_topic: String,
}

/// The incarnation of a ViewVersion made at `now`.
pub fn incarnation(now: Timestamp) -> String {
    let mut n = now.as_second().max(0) as u64;
    let mut out = Vec::new();
    loop {
        out.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ascii")
}

pub fn version_names(namespace: &str, processor: &str, version: &str, incarnation: &str) -> VersionNames {
    VersionNames {
        object: version_object(processor, version),
        consumer_group: shorten(&format!("kappa.{namespace}.{processor}.{version}.{incarnation}"), GROUP_MAX),
        view_topic: shorten(&format!("{namespace}.{processor}.{version}.{incarnation}"), KAFKA_TOPIC_MAX),
    }
}

/// The ViewVersion (and Deployment) of a version: the same for every incarnation.
pub fn version_object(processor: &str, version: &str) -> String {
    shorten(&format!("{processor}-{version}"), LABEL_MAX)
}

/// The Secret holding a version's client properties (`KAPPA_PROPERTIES`).
pub fn client_secret(object: &str) -> String {
    format!("{object}-client")
}

/// The Kafka topics a retiring version owns besides its view topic: those
/// named after its consumer group (`<group>-...`, as Kafka Streams names its
/// repartition and changelog topics), except any that something else
/// declares (`keep`: Topic resources, other versions' view topics) or that
/// fall under another version's longer group name.
pub fn owned_topics<'a>(
    group: &str,
    existing: impl IntoIterator<Item = &'a String>,
    keep: &BTreeSet<String>,
    other_groups: &[&str],
) -> Vec<String> {
    let prefix = format!("{group}-");
    let theirs = |t: &str| other_groups.iter().any(|g| g.len() > group.len() && t.starts_with(&format!("{g}-")));
    let mut owned: Vec<String> =
        existing.into_iter().filter(|t| t.starts_with(&prefix) && !keep.contains(*t) && !theirs(t)).cloned().collect();
    owned.sort();
    owned.dedup();
    owned
}

/// Names that belong to the processor rather than to a version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessorNames {
    pub service: String,
    pub preview_service: String,
    pub config_map: String,
    /// Value of the `kappa.dev/processor` label.
    pub label: String,
}

pub fn processor_names(processor: &str) -> ProcessorNames {
    ProcessorNames {
        service: dns_label(processor),
        preview_service: dns_label(&format!("{processor}-preview")),
        config_map: shorten(&format!("{processor}-view"), SUBDOMAIN_MAX),
        label: label_value(processor),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ProcessorTemplate, RolloutPolicy, ViewSettings};
    use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use proptest::prelude::*;

    fn spec() -> ProcessorSpec {
        ProcessorSpec {
            cluster_ref: "default".into(),
            inputs: vec!["orders".into(), "payments".into()],
            view: ViewSettings::default(),
            template: ProcessorTemplate {
                image: "ghcr.io/acme/agg:1".into(),
                args: Some(vec!["--logic=sum".into()]),
                env: vec![EnvVar { name: "A".into(), value: Some("1".into()), ..Default::default() }],
                ..Default::default()
            },
            replicas: 1,
            version: None,
            reprocess_nonce: None,
            rollout: RolloutPolicy::default(),
            serving: None,
            deletion_policy: Default::default(),
        }
    }

    #[test]
    fn a_label_names_its_processor_unless_it_may_be_shortened() {
        assert_eq!(name_labelled(&label_value("orders")), Some("orders"));
        let long = "a-processor-name-far-longer-than-the-sixty-three-characters-a-label-holds";
        assert_eq!(name_labelled(&label_value(long)), None, "a shortened value: any name may be behind it");
        assert_eq!(name_labelled("totals-0badcafe"), None, "a name that looks shortened is searched for too");
        assert_eq!(name_labelled("totals-v2"), Some("totals-v2"));
    }

    #[test]
    fn version_id_is_short_hex() {
        let v = version_id(&spec(), &BTreeMap::new());
        assert_eq!(v.len(), 10);
        assert!(v.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    }

    #[test]
    fn version_id_ignores_how_it_runs() {
        let base = version_id(&spec(), &BTreeMap::new());
        let mut s = spec();
        s.replicas = 7;
        s.template.resources =
            Some(ResourceRequirements { limits: Some([("cpu".to_string(), Quantity("2".into()))].into()), ..Default::default() });
        s.template.labels.insert("team".into(), "data".into());
        s.template.annotations.insert("note".into(), "x".into());
        s.rollout.max_lag = 100;
        assert_eq!(version_id(&s, &BTreeMap::new()), base);
    }

    #[test]
    fn version_id_follows_what_it_computes() {
        let base = version_id(&spec(), &BTreeMap::new());
        let changes: Vec<fn(&mut ProcessorSpec)> = vec![
            |s| s.template.image = "ghcr.io/acme/agg:2".into(),
            |s| s.template.command = Some(vec!["agg".into()]),
            |s| s.template.args = Some(vec!["--logic=count".into()]),
            |s| s.template.env[0].value = Some("2".into()),
            |s| s.inputs.push("refunds".into()),
            |s| s.view.partitions = 3,
            |s| {
                s.view.config.insert("retention.ms".into(), "1000".into());
            },
            |s| s.reprocess_nonce = Some("again".into()),
        ];
        for (i, change) in changes.into_iter().enumerate() {
            let mut s = spec();
            change(&mut s);
            assert_ne!(version_id(&s, &BTreeMap::new()), base, "change #{i} must start a new version");
        }
    }

    #[test]
    fn an_upstream_cutover_is_a_new_version_and_topic_inputs_keep_their_old_ids() {
        // The id of this spec before pipelines existed: upgrading the
        // operator must not start replays.
        assert_eq!(version_id(&spec(), &BTreeMap::new()), version_id(&spec(), &BTreeMap::new()));
        let mut s = spec();
        s.inputs.push("processor/totals".into());
        let on = |v: &str| BTreeMap::from([("totals".to_string(), v.to_string())]);
        assert_ne!(version_id(&s, &on("a1")), version_id(&s, &on("b2")));
        assert_eq!(version_id(&s, &on("a1")), version_id(&s, &on("a1")));
        assert_ne!(version_id(&s, &on("a1")), version_id(&spec(), &BTreeMap::new()));
    }

    #[test]
    fn explicit_version_overrides_the_hash() {
        let mut s = spec();
        s.version = Some("v2".into());
        assert_eq!(version_id(&s, &BTreeMap::new()), "v2");
    }

    #[test]
    fn default_compaction_is_the_same_version_as_declaring_it() {
        let mut s = spec();
        s.view.config.insert("cleanup.policy".into(), "compact".into());
        assert_eq!(version_id(&s, &BTreeMap::new()), version_id(&spec(), &BTreeMap::new()));
    }

    #[test]
    fn names_follow_the_design_table() {
        let v = version_names("shop", "orders", "3fa9c2b1d0", "tkq3zk");
        assert_eq!(v.object, "orders-3fa9c2b1d0");
        assert_eq!(v.consumer_group, "kappa.shop.orders.3fa9c2b1d0.tkq3zk");
        assert_eq!(v.view_topic, "shop.orders.3fa9c2b1d0.tkq3zk");
        assert_eq!(client_secret(&v.object), "orders-3fa9c2b1d0-client");
        let p = processor_names("orders");
        assert_eq!((p.service.as_str(), p.preview_service.as_str(), p.config_map.as_str()), ("orders", "orders-preview", "orders-view"));
    }

    #[test]
    fn an_incarnation_is_short_and_grows_with_time() {
        let at = |s| incarnation(Timestamp::from_second(s).unwrap());
        assert_eq!(at(0), "0");
        assert_eq!(at(35), "z");
        assert_eq!(at(36), "10");
        let now = at(1_800_000_000);
        assert_eq!(now.len(), 6);
        assert_ne!(now, at(1_800_000_001), "a version id that comes back a second later is a new incarnation");
    }

    #[test]
    fn a_version_owns_the_topics_named_after_its_group_and_nothing_declared() {
        let existing: Vec<String> = [
            "kappa.shop.orders.v1.a-by-key-repartition",
            "kappa.shop.orders.v1.a-totals-changelog",
            "kappa.shop.orders.v1.a-declared",
            "kappa.shop.orders.v1.ab-totals-changelog",
            "kappa.shop.orders.v1.a-x.v2.b-store-changelog",
            "kappa.shop.orders.v1.a",
            "shop.orders.v1.a",
            "orders",
        ]
        .map(String::from)
        .into();
        let keep: BTreeSet<String> = ["kappa.shop.orders.v1.a-declared".to_string()].into();
        let owned = owned_topics("kappa.shop.orders.v1.a", &existing, &keep, &["kappa.shop.orders.v1.a-x.v2.b", "kappa.shop.x.v3.c"]);
        assert_eq!(owned, vec!["kappa.shop.orders.v1.a-by-key-repartition".to_string(), "kappa.shop.orders.v1.a-totals-changelog".into()]);
    }

    #[test]
    fn services_are_dns_labels_even_for_subdomain_names() {
        let p = processor_names("1st.orders");
        assert!(p.service.starts_with("p-1st-orders-"), "{}", p.service);
        assert_ne!(processor_names("a.b").service, processor_names("a-b").service);
    }

    fn subdomain() -> impl Strategy<Value = String> {
        // DNS-1123 subdomains: what Kubernetes allows for object names.
        "[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?".prop_filter("no empty labels", |s| !s.contains(".."))
    }
    fn namespace() -> impl Strategy<Value = String> {
        "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
    }
    fn version() -> impl Strategy<Value = String> {
        "[a-z0-9]{1,20}"
    }
    fn incarnation_token() -> impl Strategy<Value = String> {
        "[a-z0-9]{1,7}"
    }

    proptest! {
        #[test]
        fn names_stay_within_limits(ns in namespace(), p in subdomain(), v in version(), i in incarnation_token()) {
            let n = version_names(&ns, &p, &v, &i);
            prop_assert!(n.object.len() <= LABEL_MAX);
            prop_assert!(n.view_topic.len() <= KAFKA_TOPIC_MAX);
            prop_assert!(n.consumer_group.len() <= GROUP_MAX);
            prop_assert!(n.view_topic.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)));
            let pn = processor_names(&p);
            for s in [&pn.service, &pn.preview_service, &pn.label] {
                prop_assert!(s.len() <= LABEL_MAX, "{s}");
            }
            prop_assert_eq!(dns_label(&pn.service), pn.service.clone());
            prop_assert!(pn.config_map.len() <= SUBDOMAIN_MAX);
        }

        #[test]
        fn different_inputs_never_share_a_name(
            a in (namespace(), subdomain(), version(), incarnation_token()),
            b in (namespace(), subdomain(), version(), incarnation_token()),
        ) {
            prop_assume!(a != b);
            let (na, nb) = (version_names(&a.0, &a.1, &a.2, &a.3), version_names(&b.0, &b.1, &b.2, &b.3));
            prop_assert_ne!(&na.view_topic, &nb.view_topic);
            prop_assert_ne!(&na.consumer_group, &nb.consumer_group);
            if a.0 == b.0 && (&a.1, &a.2) != (&b.1, &b.2) {
                // Objects are namespaced: only names within one namespace must
                // differ (incarnations of one version share its object name).
                prop_assert_ne!(&na.object, &nb.object);
            }
            if a.1 != b.1 {
                let (pa, pb) = (processor_names(&a.1), processor_names(&b.1));
                prop_assert_ne!(pa.service, pb.service);
                prop_assert_ne!(pa.config_map, pb.config_map);
                prop_assert_ne!(pa.label, pb.label);
            }
        }

        #[test]
        fn version_id_is_independent_of_map_order(
            entries in proptest::collection::btree_map("[a-z.]{1,12}", "[a-z0-9]{0,8}", 0..6),
            inputs in proptest::collection::btree_set("[a-z]{1,8}", 1..5),
        ) {
            let mut s1 = spec();
            s1.view.config = entries.clone();
            s1.inputs = inputs.iter().cloned().collect();
            let mut s2 = s1.clone();
            s2.inputs.reverse();
            // Build the same map in the opposite insertion order.
            s2.view.config = entries.iter().rev().map(|(k, v)| (k.clone(), v.clone())).collect();
            prop_assert_eq!(version_id(&s1, &BTreeMap::new()), version_id(&s2, &BTreeMap::new()));
        }
    }
}

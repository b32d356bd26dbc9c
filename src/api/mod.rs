//! The custom resources of group `kappa.dev`, version `v1alpha1`, and the
//! CRDs generated from them.

pub mod conditions;
mod kafka_cluster;
mod processor;
mod topic;
mod view_version;

pub use conditions::*;
pub use kafka_cluster::*;
pub use processor::*;
pub use topic::*;
pub use view_version::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{CustomResourceDefinition, JSON, JSONSchemaProps};
use kube::CustomResourceExt;

pub const GROUP: &str = "kappa.dev";
pub const VERSION: &str = "v1alpha1";

/// Field manager for everything the operator applies.
pub const MANAGER: &str = "kappa-operator";

/// Labels the operator puts on what it creates.
pub mod labels {
    pub const PROCESSOR: &str = "kappa.dev/processor";
    pub const VERSION: &str = "kappa.dev/version";
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    pub const MANAGED_BY_VALUE: &str = "kappa-operator";
}

/// Finalizers the operator puts on its kinds.
pub mod finalizers {
    /// A Topic whose deletion may have to delete the Kafka topic.
    pub const TOPIC: &str = "kappa.dev/topic";
    /// A ViewVersion: kept while it is active or a retained standby.
    pub const VIEW_VERSION: &str = "kappa.dev/viewversion";
    /// A Processor with `deletionPolicy: Delete`: its versions are retired
    /// (their Kafka data deleted) before it goes.
    pub const PROCESSOR: &str = "kappa.dev/processor";
    /// A KafkaCluster: kept while Topics and Processors that delete their
    /// Kafka data (`deletionPolicy: Delete`) use it, so deleting a
    /// namespace does not take the cluster away before they are done.
    pub const KAFKA_CLUSTER: &str = "kappa.dev/kafkacluster";
}

/// Annotations the operator reads and writes.
pub mod annotations {
    /// On a ViewVersion, the commit record of a cutover: the promotion that
    /// made it active (the highest is the active version).
    pub const PROMOTION: &str = "kappa.dev/promotion";
    /// On the candidate of the Processor a `Together` cascade starts from,
    /// the commit record of the chain: `NAME=VERSION,...` of every
    /// downstream stage's version that cuts over with it.
    pub const CASCADE: &str = "kappa.dev/cascade";
    /// `paused` stops reconciliation of the annotated object until removed.
    pub const RECONCILE: &str = "kappa.dev/reconcile";
    /// `true` releases a Topic's finalizer without touching Kafka, for a
    /// broker that is gone for good.
    pub const FORCE_RELEASE: &str = "kappa.dev/release-without-kafka";
}

/// Every CRD, ordered by file name (one file each in `crds/`), so that
/// `kappa-operator crd` equals `cat crds/*.yaml`.
pub fn crds() -> Vec<CustomResourceDefinition> {
    let mut crds = vec![KafkaCluster::crd(), Processor::crd(), Topic::crd(), ViewVersion::crd()];
    crds.iter_mut().for_each(unobserved_until_reconciled);
    conditions_by_type(&mut crds[3]);
    crds
}

/// The `status` schema of every version of a CRD.
fn status_schemas(crd: &mut CustomResourceDefinition) -> impl Iterator<Item = &mut JSONSchemaProps> {
    crd.spec
        .versions
        .iter_mut()
        .filter_map(|version| version.schema.as_mut()?.open_api_v3_schema.as_mut()?.properties.as_mut()?.get_mut("status"))
}

/// A ViewVersion's conditions are a list keyed by type, so that two writers
/// own their own: the rollout (Ready, Reconciling, Stalled, with the phase)
/// and the ViewVersion controller (ViewReady).
fn conditions_by_type(crd: &mut CustomResourceDefinition) {
    for status in status_schemas(crd) {
        if let Some(c) = status.properties.as_mut().and_then(|p| p.get_mut("conditions")) {
            c.x_kubernetes_list_type = Some("map".into());
            c.x_kubernetes_list_map_keys = Some(vec!["type".into()]);
        }
    }
}

/// A new object reads `status.observedGeneration: 0` until the operator has
/// looked at it: kstatus (Flux, `kubectl wait`-style tools) then says
/// InProgress (LatestGenerationNotObserved) from the first read, instead of
/// Current for an object that has no conditions yet.
fn unobserved_until_reconciled(crd: &mut CustomResourceDefinition) {
    for status in status_schemas(crd) {
        status.default = Some(JSON(serde_json::json!({"observedGeneration": 0})));
    }
}

/// The file name each CRD is committed under in `crds/`.
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.spec.names.singular.as_deref().unwrap_or(&crd.spec.names.plural))
}

/// All CRDs as one multi-document YAML stream.
pub fn crds_yaml() -> String {
    crds().iter().map(crd_yaml).collect::<Vec<_>>().join("")
}

pub fn crd_yaml(crd: &CustomResourceDefinition) -> String {
    format!("---\n{}", serde_yaml::to_string(crd).expect("a CRD serializes to YAML"))
}

pub(crate) fn default_cluster_ref() -> String {
    "default".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed CRDs (repo root and Helm chart) must be what the binary
    /// generates. Regenerate with `hack/crdgen.sh`.
    #[test]
    fn committed_crds_match_the_types() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        for dir in ["crds", "charts/kappa-operator/crds"] {
            for crd in crds() {
                let path = root.join(dir).join(crd_file_name(&crd));
                let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}; run hack/crdgen.sh", path.display()));
                assert!(
                    committed == crd_yaml(&crd),
                    "{} differs from the generated CRD; run hack/crdgen.sh and commit the result",
                    path.display()
                );
            }
        }
    }

    #[test]
    fn every_kind_is_in_the_kappa_category_with_a_status_subresource() {
        for crd in crds() {
            assert_eq!(crd.spec.group, GROUP);
            assert_eq!(crd.spec.names.categories.as_deref(), Some(&["kappa".to_string()][..]));
            let v = &crd.spec.versions[0];
            assert_eq!(v.name, VERSION);
            assert!(v.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some(), "{}", crd.spec.names.kind);
            assert!(v.additional_printer_columns.as_ref().is_some_and(|c| c.len() >= 3), "{}", crd.spec.names.kind);
        }
    }
}

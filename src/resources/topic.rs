//! A version's view topic, as a Topic resource owned by its ViewVersion.

use kube::{Resource, ResourceExt, api::ObjectMeta};

use crate::{
    api::{DeletionPolicy, Topic, TopicSpec, ViewVersion},
    naming,
};

/// Kept (`Retain`) while the version is active or a standby: only retiring
/// the version switches it to `Delete`.
pub fn view_topic(vv: &ViewVersion, policy: DeletionPolicy) -> Topic {
    let s = &vv.spec;
    Topic {
        metadata: ObjectMeta {
            name: vv.metadata.name.clone(),
            namespace: vv.metadata.namespace.clone(),
            labels: Some(super::selector(&s.processor, &s.version)),
            owner_references: vv.controller_owner_ref(&()).map(|r| vec![r]),
            ..Default::default()
        },
        spec: TopicSpec {
            cluster_ref: s.cluster_ref.clone(),
            topic_name: Some(s.output_topic.clone()),
            partitions: s.view.partitions,
            replication_factor: s.view.replication_factor,
            config: naming::view_config(&s.view.config),
            deletion_policy: policy,
        },
        status: None,
    }
}

/// The ViewVersion whose view `topic` is (its owner of that kind, in our
/// group), if it is a view's topic.
pub fn version_of(topic: &Topic) -> Option<&str> {
    let api_version = ViewVersion::api_version(&());
    let kind = ViewVersion::kind(&());
    topic.owner_references().iter().find(|o| o.kind == kind && o.api_version == api_version).map(|o| o.name.as_str())
}

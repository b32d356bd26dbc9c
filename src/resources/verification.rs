//! The verification Job of a candidate, pointed at both versions.

use k8s_openapi::api::{
    batch::v1::{Job, JobSpec},
    core::v1::{Container, PodSpec, PodTemplateSpec},
};
use kube::{Resource, api::ObjectMeta};

use super::{contract_env, selector};
use crate::{
    api::{KafkaClusterSpec, VerifySpec, ViewVersion},
    naming,
};

pub fn verification_job_name(candidate: &ViewVersion) -> String {
    naming::shorten(&format!("{}-verify", candidate.metadata.name.as_deref().unwrap_or_default()), naming::LABEL_MAX)
}

/// `KAPPA_*` describe the candidate, `KAPPA_ACTIVE_*` the active version.
pub fn verification_job(spec: &VerifySpec, candidate: &ViewVersion, active: &ViewVersion, kafka: &KafkaClusterSpec) -> Job {
    let (mut env, volumes, mounts) = contract_env(candidate, kafka, "KAPPA_");
    env.extend(contract_env(active, kafka, "KAPPA_ACTIVE_").0);
    env.extend(spec.env.iter().cloned());
    let mut labels = selector(&candidate.spec.processor, &candidate.spec.version);
    labels.insert("kappa.dev/role".into(), "verify".into());
    Job {
        metadata: ObjectMeta {
            name: Some(verification_job_name(candidate)),
            namespace: candidate.metadata.namespace.clone(),
            labels: Some(labels.clone()),
            owner_references: candidate.controller_owner_ref(&()).map(|r| vec![r]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(spec.timeout_seconds as i64),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels), ..Default::default() }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    containers: vec![Container {
                        name: "verify".into(),
                        image: Some(spec.image.clone()),
                        command: spec.command.clone(),
                        args: spec.args.clone(),
                        env: Some(env),
                        volume_mounts: (!mounts.is_empty()).then_some(mounts),
                        ..Default::default()
                    }],
                    volumes: (!volumes.is_empty()).then_some(volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

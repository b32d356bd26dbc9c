//! The Deployment `P-V` that runs one version.

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec},
        core::v1::{Container, ContainerPort, EnvVar, PodSpec, PodTemplateSpec, Probe, TCPSocketAction},
    },
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};
use kube::{Resource, ResourceExt, api::ObjectMeta};

use super::{common_labels, contract_env, selector};
use crate::api::{KafkaClusterSpec, Processor, ViewVersion, labels};

/// What the version computes (image, command, args, env) comes from its
/// ViewVersion, frozen when the version was made; how it runs (replicas,
/// resources, labels, annotations, service account) comes from the
/// Processor as it is now, so those change in place without a replay.
pub fn deployment(p: &Processor, vv: &ViewVersion, replicas: i32, kafka: &KafkaClusterSpec) -> Deployment {
    let code = &vv.spec.template;
    let now = &p.spec.template;
    let select = selector(&p.name_any(), &vv.spec.version);
    let mut meta_labels = common_labels(&p.name_any());
    meta_labels.insert(labels::VERSION.into(), vv.spec.version.clone());
    let mut pod_labels = now.labels.clone();
    pod_labels.extend(meta_labels.clone());

    let (mut env, volumes, mounts) = contract_env(vv, kafka, "KAPPA_");
    let mut ports = None;
    let mut readiness = None;
    if let Some(serving) = &p.spec.serving {
        env.push(EnvVar { name: "KAPPA_HTTP_PORT".into(), value: Some(serving.port.to_string()), ..Default::default() });
        ports = Some(vec![ContainerPort { name: Some("http".into()), container_port: serving.port, ..Default::default() }]);
        readiness = Some(Probe {
            tcp_socket: Some(TCPSocketAction { port: IntOrString::Int(serving.port), host: None }),
            period_seconds: Some(5),
            ..Default::default()
        });
    }
    env.extend(code.env.iter().cloned());

    Deployment {
        metadata: ObjectMeta {
            name: vv.metadata.name.clone(),
            namespace: vv.metadata.namespace.clone(),
            labels: Some(meta_labels),
            owner_references: vv.controller_owner_ref(&()).map(|r| vec![r]),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector { match_labels: Some(select), ..Default::default() },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: (!now.annotations.is_empty()).then(|| now.annotations.clone()),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "processor".into(),
                        image: Some(code.image.clone()),
                        command: code.command.clone(),
                        args: code.args.clone(),
                        env: Some(env),
                        resources: now.resources.clone(),
                        ports,
                        readiness_probe: readiness,
                        volume_mounts: (!mounts.is_empty()).then_some(mounts),
                        ..Default::default()
                    }],
                    volumes: (!volumes.is_empty()).then_some(volumes),
                    service_account_name: now.service_account_name.clone(),
                    termination_grace_period_seconds: Some(30),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        api::{KafkaSasl, ProcessorSpec, ProcessorTemplate, SaslCredentials, SaslMechanism, Serving, ViewSettings, ViewVersionSpec},
        naming,
    };

    pub fn processor() -> Processor {
        let mut p = Processor::new(
            "orders",
            ProcessorSpec {
                cluster_ref: "default".into(),
                inputs: vec!["in".into()],
                view: ViewSettings::default(),
                template: ProcessorTemplate { image: "img:2".into(), args: Some(vec!["run".into()]), ..Default::default() },
                replicas: 3,
                version: None,
                reprocess_nonce: None,
                rollout: Default::default(),
                serving: Some(Serving { port: 9000 }),
            },
        );
        p.metadata.namespace = Some("shop".into());
        p.metadata.uid = Some("p-uid".into());
        p
    }

    pub fn version(p: &Processor, id: &str, image: &str) -> ViewVersion {
        let names = naming::version_names("shop", "orders", id);
        let mut vv = ViewVersion::new(
            &names.object,
            ViewVersionSpec {
                processor: "orders".into(),
                version: id.into(),
                cluster_ref: "default".into(),
                inputs: vec!["in".into()],
                input_topics: vec!["in-topic".into(), "more".into()],
                output_topic: names.view_topic,
                consumer_group: names.consumer_group,
                template: ProcessorTemplate { image: image.into(), ..p.spec.template.clone() },
                view: ViewSettings::default(),
            },
        );
        vv.metadata.namespace = Some("shop".into());
        vv.metadata.uid = Some(format!("{id}-uid"));
        vv
    }

    fn env(d: &Deployment) -> Vec<EnvVar> {
        d.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0].env.clone().unwrap()
    }

    fn value(env: &[EnvVar], name: &str) -> Option<String> {
        env.iter().find(|e| e.name == name).and_then(|e| e.value.clone())
    }

    #[test]
    fn runs_the_version_code_under_the_contract() {
        let p = processor();
        let vv = version(&p, "v1", "img:1");
        let kafka = KafkaClusterSpec { bootstrap_servers: "k:9092".into(), tls: None, sasl: None };
        let d = deployment(&p, &vv, 3, &kafka);
        assert_eq!(d.metadata.name.as_deref(), Some("orders-v1"));
        let spec = d.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(3));
        let c = &spec.template.spec.as_ref().unwrap().containers[0];
        assert_eq!(c.image.as_deref(), Some("img:1"), "the version's own image, not the spec's newer one");
        let env = env(&d);
        assert_eq!(value(&env, "KAPPA_BOOTSTRAP_SERVERS").as_deref(), Some("k:9092"));
        assert_eq!(value(&env, "KAPPA_INPUT_TOPICS").as_deref(), Some("in-topic,more"));
        assert_eq!(value(&env, "KAPPA_OUTPUT_TOPIC").as_deref(), Some("shop.orders.v1"));
        assert_eq!(value(&env, "KAPPA_CONSUMER_GROUP").as_deref(), Some("kappa.shop.orders.v1"));
        assert_eq!(value(&env, "KAPPA_VIEW_VERSION").as_deref(), Some("v1"));
        assert_eq!(value(&env, "KAPPA_START_FROM").as_deref(), Some("earliest"));
        assert_eq!(value(&env, "KAPPA_SECURITY_PROTOCOL").as_deref(), Some("PLAINTEXT"));
        let sel = spec.selector.match_labels.clone().unwrap();
        assert_eq!(sel.get("kappa.dev/version").map(String::as_str), Some("v1"));
        let owner = &d.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.controller), ("ViewVersion", Some(true)));
        assert_eq!(c.ports.as_ref().unwrap()[0].container_port, 9000);
    }

    #[test]
    fn sasl_credentials_come_from_the_secret_never_inline() {
        let p = processor();
        let vv = version(&p, "v1", "img:1");
        let kafka = KafkaClusterSpec {
            bootstrap_servers: "k:9094".into(),
            tls: None,
            sasl: Some(KafkaSasl {
                mechanism: SaslMechanism::ScramSha512,
                credentials: SaslCredentials { secret_name: "kafka-user".into(), username_key: "u".into(), password_key: "p".into() },
            }),
        };
        let env = env(&deployment(&p, &vv, 1, &kafka));
        let pw = env.iter().find(|e| e.name == "KAPPA_SASL_PASSWORD").unwrap();
        assert!(pw.value.is_none());
        let r = pw.value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
        assert_eq!((r.name.as_str(), r.key.as_str()), ("kafka-user", "p"));
        assert_eq!(value(&env, "KAPPA_SECURITY_PROTOCOL").as_deref(), Some("SASL_PLAINTEXT"));
    }
}

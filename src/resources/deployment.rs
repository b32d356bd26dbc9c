//! The Deployment `P-V` that runs one version.

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec},
        core::v1::{Container, ContainerPort, EnvVar, PodSpec, PodTemplateSpec, Probe, TCPSocketAction},
    },
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};
use kube::{Resource, ResourceExt, api::ObjectMeta};

use super::{PropertiesFile, common_labels, contract, contract_env, selector};
use crate::api::{KafkaClusterSpec, Processor, ViewVersion, labels};

/// A digest of the version's client properties when a Secret holds them,
/// on the pod template: new credentials restart the pods.
pub const PROPERTIES_DIGEST: &str = "kappa.dev/client-properties";

/// What the version computes (image, command, args, env) comes from its
/// ViewVersion, frozen when the version was made; how it runs (replicas,
/// resources, labels, annotations, service account, volumes, security
/// contexts, probes, scheduling) comes from the Processor as it is now, so
/// those change in place without a replay.
pub fn deployment(p: &Processor, vv: &ViewVersion, replicas: i32, kafka: &KafkaClusterSpec, properties: &PropertiesFile) -> Deployment {
    let code = &vv.spec.template;
    let now = &p.spec.template;
    let select = selector(&p.name_any(), &vv.spec.version);
    let mut meta_labels = common_labels(&p.name_any());
    meta_labels.insert(labels::VERSION.into(), vv.spec.version.clone());
    let mut pod_labels = now.labels.clone();
    pod_labels.extend(meta_labels.clone());
    let mut pod_annotations = now.annotations.clone();
    match properties {
        PropertiesFile::Secret { digest } => pod_annotations.insert(PROPERTIES_DIGEST.into(), digest.clone()),
        PropertiesFile::Inline(text) => pod_annotations.insert(contract::PROPERTIES_INLINE.into(), text.clone()),
    };

    let (mut env, mut volumes, mut mounts) = contract_env(vv, kafka, "KAPPA_");
    let state_declared = now.volumes.iter().any(|v| v.name == contract::STATE_VOLUME);
    let (pod_env, pod_volumes, pod_mounts) = contract::pod_contract(vv, state_declared, properties);
    env.extend(pod_env);
    volumes.extend(pod_volumes);
    volumes.extend(now.volumes.iter().cloned());
    mounts.extend(pod_mounts);
    mounts.extend(now.volume_mounts.iter().cloned());
    let mut ports = None;
    let mut readiness = now.readiness_probe.clone();
    if let Some(serving) = &p.spec.serving {
        env.push(EnvVar { name: "KAPPA_HTTP_PORT".into(), value: Some(serving.port.to_string()), ..Default::default() });
        ports = Some(vec![ContainerPort { name: Some("http".into()), container_port: serving.port, ..Default::default() }]);
        readiness = readiness.or_else(|| {
            Some(Probe {
                tcp_socket: Some(TCPSocketAction { port: IntOrString::Int(serving.port), host: None }),
                period_seconds: Some(5),
                ..Default::default()
            })
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
                metadata: Some(ObjectMeta { labels: Some(pod_labels), annotations: Some(pod_annotations), ..Default::default() }),
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
                        liveness_probe: now.liveness_probe.clone(),
                        security_context: now.security_context.clone(),
                        volume_mounts: Some(mounts),
                        ..Default::default()
                    }],
                    volumes: Some(volumes),
                    service_account_name: now.service_account_name.clone(),
                    security_context: now.pod_security_context.clone(),
                    image_pull_secrets: (!now.image_pull_secrets.is_empty()).then(|| now.image_pull_secrets.clone()),
                    node_selector: (!now.node_selector.is_empty()).then(|| now.node_selector.clone()),
                    tolerations: (!now.tolerations.is_empty()).then(|| now.tolerations.clone()),
                    affinity: now.affinity.clone(),
                    priority_class_name: now.priority_class_name.clone(),
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
pub(crate) mod tests {
    use super::*;
    use crate::{
        api::{
            KafkaSasl, ProcessorCode, ProcessorSpec, ProcessorTemplate, SaslCredentials, SaslMechanism, Serving, ViewSettings,
            ViewVersionSpec,
        },
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
                deletion_policy: Default::default(),
            },
        );
        p.metadata.namespace = Some("shop".into());
        p.metadata.uid = Some("p-uid".into());
        p
    }

    pub fn version(p: &Processor, id: &str, image: &str) -> ViewVersion {
        let names = naming::version_names("shop", "orders", id, "i1");
        let mut vv = ViewVersion::new(
            &names.object,
            ViewVersionSpec {
                processor: "orders".into(),
                version: id.into(),
                upstreams: Default::default(),
                cluster_ref: "default".into(),
                inputs: vec!["in".into()],
                input_topics: vec!["in-topic".into(), "more".into()],
                output_topic: names.view_topic,
                consumer_group: names.consumer_group,
                template: ProcessorCode { image: image.into(), ..p.spec.template.code() },
                view: ViewSettings::default(),
                reprocess_nonce: None,
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
        let d = deployment(&p, &vv, 3, &kafka, &PropertiesFile::Inline("bootstrap.servers=k:9092\n".into()));
        assert_eq!(d.metadata.name.as_deref(), Some("orders-v1"));
        let spec = d.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(3));
        let c = &spec.template.spec.as_ref().unwrap().containers[0];
        assert_eq!(c.image.as_deref(), Some("img:1"), "the version's own image, not the spec's newer one");
        let env = env(&d);
        assert_eq!(value(&env, "KAPPA_BOOTSTRAP_SERVERS").as_deref(), Some("k:9092"));
        assert_eq!(value(&env, "KAPPA_INPUT_TOPICS").as_deref(), Some("in-topic,more"));
        assert_eq!(value(&env, "KAPPA_OUTPUT_TOPIC").as_deref(), Some("shop.orders.v1.i1"));
        assert_eq!(value(&env, "KAPPA_CONSUMER_GROUP").as_deref(), Some("kappa.shop.orders.v1.i1"));
        assert_eq!(value(&env, "KAPPA_CONTRACT_VERSION").as_deref(), Some("1"));
        assert_eq!(value(&env, "KAPPA_STATE_DIR").as_deref(), Some("/var/lib/kappa/state"));
        assert_eq!(value(&env, "KAPPA_PROPERTIES").as_deref(), Some("/etc/kappa/client/client.properties"));
        let instance = env.iter().find(|e| e.name == "KAPPA_INSTANCE_ID").unwrap();
        assert_eq!(instance.value_from.as_ref().unwrap().field_ref.as_ref().unwrap().field_path, "metadata.name");
        assert_eq!(value(&env, "KAPPA_VIEW_VERSION").as_deref(), Some("v1"));
        assert_eq!(value(&env, "KAPPA_START_FROM").as_deref(), Some("earliest"));
        assert_eq!(value(&env, "KAPPA_SECURITY_PROTOCOL").as_deref(), Some("PLAINTEXT"));
        let sel = spec.selector.match_labels.clone().unwrap();
        assert_eq!(sel.get("kappa.dev/version").map(String::as_str), Some("v1"));
        let owner = &d.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.controller), ("ViewVersion", Some(true)));
        assert_eq!(c.ports.as_ref().unwrap()[0].container_port, 9000);
        // Properties without a secret come from the pod's own annotation: no Secret to write.
        let template = &spec.template;
        let annotations = template.metadata.as_ref().unwrap().annotations.clone().unwrap();
        assert_eq!(annotations.get(contract::PROPERTIES_INLINE).map(String::as_str), Some("bootstrap.servers=k:9092\n"));
        assert!(!annotations.contains_key(PROPERTIES_DIGEST));
        let volume = &template.spec.as_ref().unwrap().volumes.as_ref().unwrap()[0];
        assert!(volume.secret.is_none());
        let file = &volume.downward_api.as_ref().unwrap().items.as_ref().unwrap()[0];
        assert_eq!(file.path, "client.properties");
        assert_eq!(file.field_ref.as_ref().unwrap().field_path, "metadata.annotations['kappa.dev/client-properties-file']");
    }

    #[test]
    fn how_it_runs_comes_from_the_processor_as_it_is_now() {
        use k8s_openapi::api::core::v1::{
            EmptyDirVolumeSource, HTTPGetAction, PersistentVolumeClaimVolumeSource, SecurityContext, Toleration, Volume, VolumeMount,
        };
        let mut p = processor();
        let vv = version(&p, "v1", "img:1");
        let t = &mut p.spec.template;
        t.volumes = vec![
            Volume { name: "rules".into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Default::default() },
            Volume {
                name: "kappa-state".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource { claim_name: "state".into(), read_only: None }),
                ..Default::default()
            },
        ];
        t.volume_mounts = vec![VolumeMount { name: "rules".into(), mount_path: "/rules".into(), ..Default::default() }];
        t.security_context = Some(SecurityContext { read_only_root_filesystem: Some(true), ..Default::default() });
        t.liveness_probe = Some(Probe {
            http_get: Some(HTTPGetAction { path: Some("/healthz".into()), port: IntOrString::Int(8081), ..Default::default() }),
            ..Default::default()
        });
        t.tolerations = vec![Toleration { key: Some("dedicated".into()), ..Default::default() }];
        t.priority_class_name = Some("streaming".into());
        let kafka = KafkaClusterSpec { bootstrap_servers: "k:9092".into(), tls: None, sasl: None };
        let d = deployment(&p, &vv, 1, &kafka, &PropertiesFile::Secret { digest: "d1".into() });
        let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let c = &pod.containers[0];
        let volumes: Vec<&str> = pod.volumes.as_ref().unwrap().iter().map(|v| v.name.as_str()).collect();
        assert_eq!(volumes, ["kappa-client", "rules", "kappa-state"], "the declared kappa-state replaces the emptyDir");
        let mounts: Vec<&str> = c.volume_mounts.as_ref().unwrap().iter().map(|m| m.mount_path.as_str()).collect();
        assert_eq!(mounts, ["/etc/kappa/client", "/var/lib/kappa/state", "/rules"]);
        assert_eq!(c.security_context.as_ref().unwrap().read_only_root_filesystem, Some(true));
        assert_eq!(c.liveness_probe.as_ref().unwrap().http_get.as_ref().unwrap().path.as_deref(), Some("/healthz"));
        assert!(c.readiness_probe.as_ref().unwrap().tcp_socket.is_some(), "serving's TCP probe when none is declared");
        assert_eq!(pod.priority_class_name.as_deref(), Some("streaming"));
        assert_eq!(pod.tolerations.as_ref().unwrap().len(), 1);
        let annotations = d.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().annotations.clone().unwrap();
        assert_eq!(annotations.get(PROPERTIES_DIGEST).map(String::as_str), Some("d1"), "new credentials restart the pods");
        let secret = pod.volumes.as_ref().unwrap()[0].secret.as_ref().unwrap();
        assert_eq!(secret.secret_name.as_deref(), Some("orders-v1-client"));
        // None of it is part of what the version computes.
        let mut before = processor();
        before.spec.template.image = p.spec.template.image.clone();
        assert_eq!(crate::naming::version_id(&p.spec, &Default::default()), crate::naming::version_id(&before.spec, &Default::default()));
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
        let env = env(&deployment(&p, &vv, 1, &kafka, &PropertiesFile::Secret { digest: "d1".into() }));
        let pw = env.iter().find(|e| e.name == "KAPPA_SASL_PASSWORD").unwrap();
        assert!(pw.value.is_none());
        let r = pw.value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
        assert_eq!((r.name.as_str(), r.key.as_str()), ("kafka-user", "p"));
        assert_eq!(value(&env, "KAPPA_SECURITY_PROTOCOL").as_deref(), Some("SASL_PLAINTEXT"));
    }
}

//! The processor contract: the environment every processor container gets.

use k8s_openapi::api::core::v1::{
    EnvVar, EnvVarSource, KeyToPath, ObjectFieldSelector, SecretKeySelector, SecretVolumeSource, Volume, VolumeMount,
};

use crate::api::{KafkaClusterSpec, ViewVersion};

const TLS_DIR: &str = "/etc/kappa/kafka";

fn var(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar { name: name.into(), value: Some(value.into()), ..Default::default() }
}

fn from_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector { name: secret.into(), key: key.into(), optional: Some(false) }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `KAPPA_*` variables for one version (with `prefix` `KAPPA_` or
/// `KAPPA_ACTIVE_` for the version a verification compares against), plus
/// the security settings and the volumes they need.
pub fn contract_env(vv: &ViewVersion, kafka: &KafkaClusterSpec, prefix: &str) -> (Vec<EnvVar>, Vec<Volume>, Vec<VolumeMount>) {
    let s = &vv.spec;
    let mut env = vec![
        var(&format!("{prefix}OUTPUT_TOPIC"), &s.output_topic),
        var(&format!("{prefix}CONSUMER_GROUP"), &s.consumer_group),
        var(&format!("{prefix}VIEW_VERSION"), &s.version),
    ];
    if prefix != "KAPPA_" {
        return (env, vec![], vec![]);
    }
    env.splice(0..0, [var("KAPPA_BOOTSTRAP_SERVERS", &kafka.bootstrap_servers), var("KAPPA_INPUT_TOPICS", s.input_topics.join(","))]);
    env.push(var("KAPPA_START_FROM", "earliest"));
    // Lets a processor bind to its own address (and the lab's pods share one host).
    env.push(EnvVar {
        name: "POD_IP".into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { field_path: "status.podIP".into(), api_version: None }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let protocol = match (kafka.tls.is_some(), kafka.sasl.is_some()) {
        (false, false) => "PLAINTEXT",
        (true, false) => "SSL",
        (false, true) => "SASL_PLAINTEXT",
        (true, true) => "SASL_SSL",
    };
    env.push(var("KAPPA_SECURITY_PROTOCOL", protocol));
    if let Some(sasl) = &kafka.sasl {
        let c = &sasl.credentials;
        env.push(var("KAPPA_SASL_MECHANISM", sasl.mechanism.as_str()));
        env.push(from_secret("KAPPA_SASL_USERNAME", &c.secret_name, &c.username_key));
        env.push(from_secret("KAPPA_SASL_PASSWORD", &c.secret_name, &c.password_key));
    }
    let (mut volumes, mut mounts) = (Vec::new(), Vec::new());
    let mut mount = |name: &str, secret: &str, items: Vec<(String, &str)>| {
        volumes.push(Volume {
            name: name.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.into()),
                items: Some(items.into_iter().map(|(key, path)| KeyToPath { key, path: path.into(), mode: None }).collect()),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: name.into(),
            mount_path: format!("{TLS_DIR}/{name}"),
            read_only: Some(true),
            ..Default::default()
        });
    };
    if let Some(tls) = &kafka.tls {
        if let Some(ca) = &tls.ca {
            mount("kafka-ca", &ca.name, vec![(ca.key.clone(), "ca.crt")]);
            env.push(var("KAPPA_SSL_CA_LOCATION", format!("{TLS_DIR}/kafka-ca/ca.crt")));
        }
        if let Some(cc) = &tls.client_certificate {
            mount("kafka-client", &cc.secret_name, vec![(cc.certificate_key.clone(), "tls.crt"), (cc.key_key.clone(), "tls.key")]);
            env.push(var("KAPPA_SSL_CERTIFICATE_LOCATION", format!("{TLS_DIR}/kafka-client/tls.crt")));
            env.push(var("KAPPA_SSL_KEY_LOCATION", format!("{TLS_DIR}/kafka-client/tls.key")));
        }
    }
    (env, volumes, mounts)
}

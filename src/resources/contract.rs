//! The processor contract, v1 (docs/contract.md): the environment, files and
//! volumes every processor container gets.

use k8s_openapi::{
    ByteString,
    api::core::v1::{
        DownwardAPIVolumeFile, DownwardAPIVolumeSource, EmptyDirVolumeSource, EnvVar, EnvVarSource, KeyToPath, ObjectFieldSelector, Secret,
        SecretKeySelector, SecretVolumeSource, Volume, VolumeMount,
    },
};
use kube::{Resource, api::ObjectMeta};

use crate::{
    api::{KafkaClusterSpec, SaslMechanism, ViewVersion},
    kafka, naming,
};

/// The contract's version, in `KAPPA_CONTRACT_VERSION`.
pub const CONTRACT_VERSION: &str = "1";
const TLS_DIR: &str = "/etc/kappa/kafka";
/// Where `KAPPA_PROPERTIES` points.
pub const PROPERTIES_DIR: &str = "/etc/kappa/client";
pub const PROPERTIES_FILE: &str = "client.properties";
/// `KAPPA_STATE_DIR`: an emptyDir, unless the template declares a volume of
/// this name (a PersistentVolumeClaim, say).
pub const STATE_DIR: &str = "/var/lib/kappa/state";
pub const STATE_VOLUME: &str = "kappa-state";
const PROPERTIES_VOLUME: &str = "kappa-client";

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

fn from_field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { field_path: path.into(), api_version: None }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn security_protocol(kafka: &KafkaClusterSpec) -> &'static str {
    match (kafka.tls.is_some(), kafka.sasl.is_some()) {
        (false, false) => "PLAINTEXT",
        (true, false) => "SSL",
        (false, true) => "SASL_PLAINTEXT",
        (true, true) => "SASL_SSL",
    }
}

/// The client id a version's consumers use (`KAPPA_CLIENT_ID`): its
/// consumer group's name, unique to the version. Kafka's client quotas
/// (`spec.rollout.replayByteRate`) are set on it.
pub fn client_id(vv: &ViewVersion) -> &str {
    &vv.spec.consumer_group
}

/// `KAPPA_*` variables for one version (with `prefix` `KAPPA_` or
/// `KAPPA_ACTIVE_` for the version a verification compares against), plus
/// the security settings and the volumes they need.
pub fn contract_env(vv: &ViewVersion, kafka: &KafkaClusterSpec, prefix: &str) -> (Vec<EnvVar>, Vec<Volume>, Vec<VolumeMount>) {
    let s = &vv.spec;
    let mut env = vec![
        var(&format!("{prefix}OUTPUT_TOPIC"), &s.output_topic),
        var(&format!("{prefix}CONSUMER_GROUP"), &s.consumer_group),
        var(&format!("{prefix}CLIENT_ID"), client_id(vv)),
        var(&format!("{prefix}VIEW_VERSION"), &s.version),
    ];
    if prefix != "KAPPA_" {
        return (env, vec![], vec![]);
    }
    env.splice(
        0..0,
        [
            var("KAPPA_CONTRACT_VERSION", CONTRACT_VERSION),
            var("KAPPA_BOOTSTRAP_SERVERS", &kafka.bootstrap_servers),
            var("KAPPA_INPUT_TOPICS", s.input_topics.join(",")),
        ],
    );
    env.push(var("KAPPA_START_FROM", "earliest"));
    // Lets a processor bind to its own address (and the lab's pods share one host).
    env.push(from_field("POD_IP", "status.podIP"));
    env.push(var("KAPPA_SECURITY_PROTOCOL", security_protocol(kafka)));
    if let Some(sasl) = &kafka.sasl {
        let c = &sasl.credentials;
        env.push(var("KAPPA_SASL_MECHANISM", sasl.mechanism.as_str()));
        env.push(from_secret("KAPPA_SASL_USERNAME", &c.secret_name, &c.username_key));
        env.push(from_secret("KAPPA_SASL_PASSWORD", &c.secret_name, &c.password_key));
    }
    let (mut volumes, mut mounts) = (Vec::new(), Vec::new());
    let mut mount = |dir: &str, secret: &str, items: Vec<(String, &str)>| {
        let name = format!("kappa-{dir}");
        volumes.push(Volume {
            name: name.clone(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.into()),
                items: Some(items.into_iter().map(|(key, path)| KeyToPath { key, path: path.into(), mode: None }).collect()),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount { name, mount_path: format!("{TLS_DIR}/{dir}"), read_only: Some(true), ..Default::default() });
    };
    if let Some(tls) = &kafka.tls {
        // Paths for librdkafka-style clients, the PEM itself for the rest.
        if let Some(ca) = &tls.ca {
            mount("kafka-ca", &ca.name, vec![(ca.key.clone(), "ca.crt")]);
            env.push(var("KAPPA_SSL_CA_LOCATION", format!("{TLS_DIR}/kafka-ca/ca.crt")));
            env.push(from_secret("KAPPA_SSL_CA_PEM", &ca.name, &ca.key));
        }
        if let Some(cc) = &tls.client_certificate {
            mount("kafka-client", &cc.secret_name, vec![(cc.certificate_key.clone(), "tls.crt"), (cc.key_key.clone(), "tls.key")]);
            env.push(var("KAPPA_SSL_CERTIFICATE_LOCATION", format!("{TLS_DIR}/kafka-client/tls.crt")));
            env.push(var("KAPPA_SSL_KEY_LOCATION", format!("{TLS_DIR}/kafka-client/tls.key")));
            env.push(from_secret("KAPPA_SSL_CERTIFICATE_PEM", &cc.secret_name, &cc.certificate_key));
            env.push(from_secret("KAPPA_SSL_KEY_PEM", &cc.secret_name, &cc.key_key));
        }
    }
    (env, volumes, mounts)
}

/// How a version's pods get their client properties (`KAPPA_PROPERTIES`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PropertiesFile {
    /// From the Secret `P-V-client`, for properties that hold a secret; its
    /// digest on the pod template restarts the pods when it changes.
    Secret { digest: String },
    /// From the pod template's own annotation through the downward API:
    /// properties without a secret need no object of their own.
    Inline(String),
}

/// The pod template annotation that holds [`PropertiesFile::Inline`].
pub const PROPERTIES_INLINE: &str = "kappa.dev/client-properties-file";

/// Whether a cluster's client properties hold a secret: a SASL password or
/// a client certificate's key (a CA certificate is public).
pub fn holds_secret(settings: &kafka::Settings) -> bool {
    settings.sasl.is_some() || settings.tls.as_ref().is_some_and(|t| t.client_cert_pem.is_some())
}

/// How the pods get `properties`: from a Secret when they hold a secret, or
/// when the version's Deployment mounts a Secret with these very properties
/// already (`mounted`: the digest on its pod template), so that no running
/// pod is restarted for a change of delivery alone; from the pod template
/// otherwise. Pure.
pub fn properties_file(properties: &str, holds_secret: bool, mounted: Option<&str>) -> PropertiesFile {
    let digest = super::digest(properties.as_bytes());
    if holds_secret || mounted == Some(digest.as_str()) {
        PropertiesFile::Secret { digest }
    } else {
        PropertiesFile::Inline(properties.to_string())
    }
}

/// What only a version's own pods get: `KAPPA_INSTANCE_ID` (the pod's name:
/// stable across container restarts, for static membership),
/// `KAPPA_STATE_DIR` and `KAPPA_PROPERTIES`, with their volumes. The state
/// volume is left out when the template declares its own.
pub fn pod_contract(vv: &ViewVersion, state_declared: bool, file: &PropertiesFile) -> (Vec<EnvVar>, Vec<Volume>, Vec<VolumeMount>) {
    let env = vec![
        from_field("KAPPA_INSTANCE_ID", "metadata.name"),
        var("KAPPA_STATE_DIR", STATE_DIR),
        var("KAPPA_PROPERTIES", format!("{PROPERTIES_DIR}/{PROPERTIES_FILE}")),
    ];
    let mut properties = Volume { name: PROPERTIES_VOLUME.into(), ..Default::default() };
    match file {
        PropertiesFile::Secret { .. } => {
            properties.secret = Some(SecretVolumeSource {
                secret_name: Some(naming::client_secret(vv.metadata.name.as_deref().unwrap_or_default())),
                ..Default::default()
            });
        }
        PropertiesFile::Inline(_) => {
            let annotation = ObjectFieldSelector { field_path: format!("metadata.annotations['{PROPERTIES_INLINE}']"), api_version: None };
            properties.downward_api = Some(DownwardAPIVolumeSource {
                items: Some(vec![DownwardAPIVolumeFile {
                    path: PROPERTIES_FILE.into(),
                    field_ref: Some(annotation),
                    ..Default::default()
                }]),
                ..Default::default()
            });
        }
    }
    let mut volumes = vec![properties];
    if !state_declared {
        volumes.push(Volume { name: STATE_VOLUME.into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Default::default() });
    }
    let mounts = vec![
        VolumeMount { name: PROPERTIES_VOLUME.into(), mount_path: PROPERTIES_DIR.into(), read_only: Some(true), ..Default::default() },
        VolumeMount { name: STATE_VOLUME.into(), mount_path: STATE_DIR.into(), ..Default::default() },
    ];
    (env, volumes, mounts)
}

/// Escapes a value for a Java properties file (one line; `\n` for newlines).
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for (i, c) in value.chars().enumerate() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            ' ' if i == 0 => out.push_str("\\ "),
            c => out.push(c),
        }
    }
    out
}

/// A JAAS quoted string.
fn jaas_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The version's Kafka client settings as a Java properties file that any
/// Kafka Java client (and Kafka Streams) loads as it is: bootstrap servers,
/// group, where to start, and the security settings with the secrets and
/// certificates inline (PEM truststore and keystore).
pub fn client_properties(vv: &ViewVersion, spec: &KafkaClusterSpec, settings: &kafka::Settings) -> String {
    let mut props: Vec<(&str, String)> = vec![
        ("bootstrap.servers", spec.bootstrap_servers.clone()),
        ("group.id", vv.spec.consumer_group.clone()),
        ("client.id", client_id(vv).to_string()),
        ("auto.offset.reset", "earliest".into()),
        ("security.protocol", security_protocol(spec).into()),
    ];
    if let Some(sasl) = &settings.sasl {
        let module = match sasl.mechanism {
            SaslMechanism::Plain => "org.apache.kafka.common.security.plain.PlainLoginModule",
            SaslMechanism::ScramSha256 | SaslMechanism::ScramSha512 => "org.apache.kafka.common.security.scram.ScramLoginModule",
        };
        props.push(("sasl.mechanism", sasl.mechanism.as_str().into()));
        props.push((
            "sasl.jaas.config",
            format!("{module} required username={} password={};", jaas_quote(&sasl.username), jaas_quote(&sasl.password)),
        ));
    }
    if let Some(tls) = &settings.tls {
        if let Some(ca) = &tls.ca_pem {
            props.push(("ssl.truststore.type", "PEM".into()));
            props.push(("ssl.truststore.certificates", String::from_utf8_lossy(ca).trim().to_string()));
        }
        if let Some((cert, key)) = &tls.client_cert_pem {
            props.push(("ssl.keystore.type", "PEM".into()));
            props.push(("ssl.keystore.certificate.chain", String::from_utf8_lossy(cert).trim().to_string()));
            props.push(("ssl.keystore.key", String::from_utf8_lossy(key).trim().to_string()));
        }
    }
    let mut out = format!("# Kappa processor contract v{CONTRACT_VERSION}: Kafka client settings of version {}\n", vv.spec.version);
    for (k, v) in props {
        out.push_str(&format!("{k}={}\n", escape(&v)));
    }
    out
}

/// The Secret `P-V-client` holding [`client_properties`] that hold a
/// secret ([`PropertiesFile::Secret`]), owned by the ViewVersion.
pub fn client_secret(vv: &ViewVersion, properties: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(naming::client_secret(vv.metadata.name.as_deref().unwrap_or_default())),
            namespace: vv.metadata.namespace.clone(),
            labels: Some(super::selector(&vv.spec.processor, &vv.spec.version)),
            owner_references: vv.controller_owner_ref(&()).map(|r| vec![r]),
            ..Default::default()
        },
        data: Some([(PROPERTIES_FILE.to_string(), ByteString(properties.as_bytes().to_vec()))].into()),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::{Sasl, Settings, Tls};

    #[test]
    fn properties_carry_the_secrets_inline_escaped_for_a_properties_file() {
        let vv = crate::resources::deployment::tests::version(&crate::resources::deployment::tests::processor(), "v1", "img:1");
        let spec = KafkaClusterSpec { bootstrap_servers: "k:9093".into(), tls: None, sasl: None };
        let settings = Settings {
            bootstrap: vec!["k:9093".into()],
            sasl: Some(Sasl { mechanism: SaslMechanism::ScramSha512, username: "u\"1".into(), password: "p\\w".into() }),
            tls: Some(Tls {
                ca_pem: Some(b"-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n".to_vec()),
                client_cert_pem: None,
            }),
        };
        let props = client_properties(&vv, &spec, &settings);
        let lines: Vec<&str> = props.lines().collect();
        assert!(lines.contains(&"bootstrap.servers=k:9093"));
        assert!(lines.contains(&format!("group.id={}", vv.spec.consumer_group).as_str()));
        assert!(lines.contains(&format!("client.id={}", vv.spec.consumer_group).as_str()), "the client id the replay quota is set on");
        assert!(lines.contains(&"sasl.mechanism=SCRAM-SHA-512"));
        // JAAS escapes the quote and the backslash; the properties file escapes the backslashes again.
        assert!(
            lines.contains(
                &r#"sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="u\\"1" password="p\\\\w";"#
            ),
            "{props}"
        );
        assert!(lines.contains(&r"ssl.truststore.certificates=-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----"), "{props}");
        assert_eq!(escape(" lead"), "\\ lead");
    }

    #[test]
    fn properties_come_from_a_secret_only_when_they_hold_one_or_a_running_deployment_mounts_them() {
        let plain = Settings { bootstrap: vec!["k:9092".into()], sasl: None, tls: None };
        let ca_only = Settings { tls: Some(Tls { ca_pem: Some(b"ca".to_vec()), client_cert_pem: None }), ..plain.clone() };
        let client_key =
            Settings { tls: Some(Tls { ca_pem: None, client_cert_pem: Some((b"c".to_vec(), b"k".to_vec())) }), ..plain.clone() };
        let sasl =
            Settings { sasl: Some(Sasl { mechanism: SaslMechanism::Plain, username: "u".into(), password: "p".into() }), ..plain.clone() };
        assert!(!holds_secret(&plain) && !holds_secret(&ca_only), "a CA certificate is public");
        assert!(holds_secret(&client_key) && holds_secret(&sasl));

        let text = "bootstrap.servers=k:9092\n";
        let digest = crate::resources::digest(text.as_bytes());
        assert_eq!(properties_file(text, false, None), PropertiesFile::Inline(text.into()));
        assert_eq!(properties_file(text, true, None), PropertiesFile::Secret { digest: digest.clone() });
        // A Deployment that mounts a Secret of these very properties keeps it: no pod restarts for delivery alone...
        assert_eq!(properties_file(text, false, Some(&digest)), PropertiesFile::Secret { digest: digest.clone() });
        // ...until the properties change (the pods restart then anyway).
        assert_eq!(properties_file(text, false, Some("0123456789abcdef")), PropertiesFile::Inline(text.into()));
    }
}

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Condition;

/// How to reach one Kafka cluster. Topics and Processors in the same
/// namespace refer to it by name (`clusterRef`, default `default`).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kappa.dev",
    version = "v1alpha1",
    kind = "KafkaCluster",
    namespaced,
    status = "KafkaClusterStatus",
    shortname = "kc",
    category = "kappa",
    printcolumn(name = "Bootstrap", type_ = "string", json_path = ".spec.bootstrapServers"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Brokers", type_ = "integer", json_path = ".status.brokers"),
    printcolumn(name = "Controller", type_ = "integer", json_path = ".status.controller", priority = 1),
    printcolumn(name = "KRaft", type_ = "boolean", json_path = ".status.kraft", priority = 1),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct KafkaClusterSpec {
    /// Comma-separated `host:port` list of bootstrap brokers, for example
    /// `kafka-0.kafka:9092,kafka-1.kafka:9092`.
    #[schemars(length(min = 1, max = 4096), pattern(r"^[^,\s]+:[0-9]{1,5}(,[^,\s]+:[0-9]{1,5})*$"))]
    pub bootstrap_servers: String,
    /// TLS to the brokers. Absent: plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<KafkaTls>,
    /// SASL authentication. Absent: no authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl: Option<KafkaSasl>,
}

/// TLS settings; certificates come from Secrets in the KafkaCluster's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaTls {
    /// Secret key holding the PEM CA bundle that signed the brokers'
    /// certificates. Absent: the system's trusted CAs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<SecretKeyRef>,
    /// Client certificate and key for mutual TLS, from a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<ClientCertificate>,
}

/// One key of one Secret in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// A client certificate and its private key, both PEM, in one Secret
/// (a `kubernetes.io/tls` Secret works as is).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientCertificate {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
    /// Key of the certificate. Default `tls.crt`.
    #[serde(default = "default_cert_key")]
    pub certificate_key: String,
    /// Key of the private key. Default `tls.key`.
    #[serde(default = "default_key_key")]
    pub key_key: String,
}

fn default_cert_key() -> String {
    "tls.crt".into()
}
fn default_key_key() -> String {
    "tls.key".into()
}

/// SASL authentication with credentials from a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaSasl {
    /// SASL mechanism.
    pub mechanism: SaslMechanism,
    /// Secret holding the user name and password.
    pub credentials: SaslCredentials,
}

/// SASL mechanisms the operator supports.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// Where the SASL user name and password are.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SaslCredentials {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
    /// Key of the user name. Default `username`.
    #[serde(default = "default_username_key")]
    pub username_key: String,
    /// Key of the password. Default `password`.
    #[serde(default = "default_password_key")]
    pub password_key: String,
}

fn default_username_key() -> String {
    "username".into()
}
fn default_password_key() -> String {
    "password".into()
}

/// What the operator last saw of the cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaClusterStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` is True when the brokers answer with these settings; its
    /// reason says why not (KafkaUnreachable, AuthenticationFailed,
    /// TlsFailed, SecretMissing, UnsupportedByBroker). `Degraded` is True
    /// when some brokers cannot be reached or lack an API the operator
    /// uses, saying which and what that disables.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Brokers in the cluster's metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brokers: Option<i32>,
    /// Each broker of the metadata: id, address, and whether the operator
    /// reached it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub broker_details: Vec<BrokerStatus>,
    /// The controller the metadata names (on KRaft clusters, a broker that
    /// forwards to the controller quorum).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<i32>,
    /// True for a KRaft cluster, false for ZooKeeper mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kraft: Option<bool>,
    /// The version of each API the operator uses that it sends to these
    /// brokers; `unsupported` where they do not offer one it can speak.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub api_versions: BTreeMap<String, String>,
}

/// One broker of a KafkaCluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BrokerStatus {
    pub id: i32,
    pub address: String,
    pub reachable: bool,
    /// Why it could not be reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl KafkaClusterSpec {
    /// Secrets this cluster's settings read, so a change to one of them can
    /// trigger a reconnect.
    pub fn secret_names(&self) -> Vec<&str> {
        let mut names = Vec::new();
        if let Some(tls) = &self.tls {
            names.extend(tls.ca.as_ref().map(|c| c.name.as_str()));
            names.extend(tls.client_certificate.as_ref().map(|c| c.secret_name.as_str()));
        }
        names.extend(self.sasl.as_ref().map(|s| s.credentials.secret_name.as_str()));
        names
    }
}

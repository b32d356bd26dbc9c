//! KafkaCluster: resolve credentials from Secrets, keep one client per
//! cluster, and report whether the brokers answer.

use std::{sync::Arc, time::Duration};

use futures::Stream;
use k8s_openapi::{api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::ObjectMeta, jiff::Timestamp};
use kube::{
    Api, Client, ResourceExt,
    core::PartialObjectMeta,
    runtime::{Controller, controller::Action, reflector::ObjectRef, watcher},
};
use tracing::{info, instrument};

use super::{Context, apply_status, clusters::ClusterHandle, hold, in_ns, measured, release_finalizer, watched_api};
use crate::{
    Result,
    api::{
        BrokerStatus, Cond, DeletionPolicy, KafkaCluster, KafkaClusterSpec, KafkaClusterStatus, Processor, Topic, conditions, finalizers,
    },
    kafka::{self, ClusterInfo},
};

const KIND: &str = "KafkaCluster";

pub fn run(
    ctrl: Controller<KafkaCluster>,
    client: &Client,
    ctx: &Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> impl Stream<Item = super::Reconciled<KafkaCluster>> {
    let store = ctrl.store();
    // A changed Secret reconnects the clusters that use it. Metadata only:
    // the operator never caches Secret contents.
    let secrets = watched_api::<PartialObjectMeta<Secret>>(client, ctx.settings.namespace.as_deref());
    ctrl.watches(secrets, watcher::Config::default(), move |secret| {
        let ns = secret.namespace().unwrap_or_default();
        let name = secret.name_any();
        store
            .state()
            .into_iter()
            .filter(|kc| super::in_ns(kc.as_ref(), Some(&ns)) && kc.spec.secret_names().contains(&name.as_str()))
            .map(|kc| ObjectRef::from_obj(kc.as_ref()))
            .collect::<Vec<_>>()
    })
    .graceful_shutdown_on(shutdown)
    .run(reconcile, super::error_policy::<KafkaCluster>(KIND), ctx.clone())
}

#[instrument(skip_all, fields(namespace = kc.namespace(), name = kc.name_any()))]
async fn reconcile(kc: Arc<KafkaCluster>, ctx: Arc<Context>) -> Result<Action> {
    measured(&ctx, KIND, super::key(kc.as_ref()), apply(kc.clone(), ctx.clone())).await
}

/// A problem with the KafkaCluster's own settings: (reason, message).
type Problem = (String, String);

/// Builds client settings, reading credentials from Secrets.
pub async fn resolve(client: &Client, ns: &str, spec: &KafkaClusterSpec) -> Result<kafka::Settings, Problem> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let read = |name: String, key: String, field: &'static str| {
        let secrets = secrets.clone();
        async move {
            let secret = secrets
                .get_opt(&name)
                .await
                .map_err(|e| ("SecretUnreadable".to_string(), format!("reading Secret {name} ({field}): {e}")))?
                .ok_or_else(|| ("SecretMissing".to_string(), format!("Secret {name} named by {field} does not exist")))?;
            secret
                .data
                .and_then(|d| d.get(&key).map(|v| v.0.clone()))
                .ok_or_else(|| ("SecretMissing".to_string(), format!("Secret {name} has no key {key:?} ({field})")))
        }
    };
    let mut settings = kafka::Settings::plaintext(&spec.bootstrap_servers);
    if let Some(tls) = &spec.tls {
        let ca_pem = match &tls.ca {
            Some(ca) => Some(read(ca.name.clone(), ca.key.clone(), "spec.tls.ca").await?),
            None => None,
        };
        let client_cert_pem = match &tls.client_certificate {
            Some(c) => Some((
                read(c.secret_name.clone(), c.certificate_key.clone(), "spec.tls.clientCertificate").await?,
                read(c.secret_name.clone(), c.key_key.clone(), "spec.tls.clientCertificate").await?,
            )),
            None => None,
        };
        settings.tls = Some(kafka::Tls { ca_pem, client_cert_pem });
    }
    if let Some(sasl) = &spec.sasl {
        let c = &sasl.credentials;
        let text = |b: Vec<u8>, what: &str| {
            String::from_utf8(b).map_err(|_| ("SecretInvalid".to_string(), format!("Secret {}: the {what} is not UTF-8", c.secret_name)))
        };
        settings.sasl = Some(kafka::Sasl {
            mechanism: sasl.mechanism,
            username: text(read(c.secret_name.clone(), c.username_key.clone(), "spec.sasl.credentials").await?, "user name")?,
            password: text(read(c.secret_name.clone(), c.password_key.clone(), "spec.sasl.credentials").await?, "password")?,
        });
    }
    Ok(settings)
}

/// The client of KafkaCluster `ns/name`. Built here when the KafkaCluster
/// controller has not built it yet (right after a start or a leader
/// change), so a Topic does not depend on which controller runs first and
/// a new leader does not turn every Topic NotReady for a moment.
pub async fn handle(ctx: &Context, ns: &str, name: &str) -> Result<Arc<ClusterHandle>, Problem> {
    if let Some(h) = ctx.clusters.get(ns, name) {
        return Ok(h);
    }
    let kc = ctx.stores.clusters.get(&ObjectRef::new(name).within(ns)).ok_or_else(|| {
        ("KafkaClusterMissing".to_string(), format!("KafkaCluster {name} (spec.clusterRef) does not exist in namespace {ns}"))
    })?;
    let settings = resolve(&ctx.client, ns, &kc.spec).await?;
    Ok(ctx.clusters.ensure(ns, name, settings))
}

/// The Kafka requests sent to a cluster so far, by API, into the metrics:
/// at each check, and after each lag poll.
pub fn publish_requests(ctx: &Context, ns: &str, name: &str, handle: &ClusterHandle) {
    for (api, n) in handle.kafka.requests_by_api() {
        let labels = crate::metrics::KafkaApiLabels { namespace: ns.to_string(), cluster: name.to_string(), api };
        ctx.metrics.kafka_requests.get_or_create(&labels).set(n as i64);
    }
}

async fn apply(kc: Arc<KafkaCluster>, ctx: Arc<Context>) -> Result<Action> {
    let ns = kc.namespace().unwrap_or_default();
    let name = kc.name_any();
    let api: Api<KafkaCluster> = Api::namespaced(ctx.client.clone(), &ns);
    if kc.metadata.deletion_timestamp.is_some() {
        // Its client stays (even if its Secrets went first) until nothing
        // needs it to delete Kafka data.
        let users = deleting_users(&ctx.stores.topics.state(), &ctx.stores.processors.state(), &ns, &name);
        if users.is_empty() {
            release_finalizer(&api, &name, finalizers::KAFKA_CLUSTER).await?;
            return Ok(Action::await_change());
        }
        info!(waiting_for = users.join(", "), "KafkaCluster being deleted: kept while these delete their Kafka data with it");
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    if !kc.finalizers().iter().any(|f| f == finalizers::KAFKA_CLUSTER) && !hold(&api, kc.as_ref(), finalizers::KAFKA_CLUSTER).await? {
        return Ok(Action::await_change());
    }
    let checked = match resolve(&ctx.client, &ns, &kc.spec).await {
        Err(problem) => {
            ctx.clusters.remove(&ns, &name);
            Err(problem)
        }
        Ok(settings) => {
            let handle = ctx.clusters.ensure(&ns, &name, settings);
            let result = handle.kafka.cluster().await;
            publish_requests(&ctx, &ns, &name, &handle);
            let labels = crate::metrics::ClusterLabels { namespace: ns.clone(), cluster: name.clone() };
            ctx.metrics.topic_sync_requests.get_or_create(&labels).set(handle.topics.requests_sent() as i64);
            let result = result.map_err(|e| (e.reason().to_string(), e.to_string()));
            handle.set_health(health(&result));
            result
        }
    };
    let previous = kc.status.clone().unwrap_or_default();
    let (status, ready) = status_from(&kc, &checked, &previous);
    if apply_status(&ctx.client, kc.as_ref(), kc.status.as_ref(), &status).await?.is_some() {
        let was_ready = conditions::is_true(&previous.conditions, conditions::types::READY);
        let was_reason = conditions::find(&previous.conditions, conditions::types::READY).map(|c| c.reason.clone());
        if ready.status && !was_ready {
            ctx.event(kc.as_ref(), false, "Connected", "Connect", ready.message.clone()).await;
        } else if !ready.status && was_reason.as_deref() != Some(ready.reason.as_str()) {
            ctx.event(kc.as_ref(), true, &ready.reason, "Connect", ready.message.clone()).await;
        }
    }
    let down_key = format!("{KIND}-down/{ns}/{name}");
    Ok(match health(&checked) {
        Ok(()) => {
            ctx.succeeded(&down_key);
            Action::requeue(ctx.settings.cluster_check_interval)
        }
        // Settings problems wait for a change to the KafkaCluster or its Secrets.
        Err((reason, _)) if reason.starts_with("Secret") => Action::await_change(),
        Err(_) => Action::requeue(ctx.backoff(&down_key).min(ctx.settings.cluster_check_interval)),
    })
}

/// What still needs KafkaCluster `ns/name` to delete its Kafka data: the
/// Topics and Processors with `deletionPolicy: Delete` that use it and
/// still hold their finalizer (being deleted or not: a namespace's
/// deletion reaches the KafkaCluster before some of them). Pure.
fn deleting_users(topics: &[Arc<Topic>], processors: &[Arc<Processor>], ns: &str, name: &str) -> Vec<String> {
    let holds = |meta: &ObjectMeta, finalizer: &str| meta.finalizers.iter().flatten().any(|f| f == finalizer);
    let topics = topics
        .iter()
        .filter(|t| in_ns(t.as_ref(), Some(ns)) && t.spec.cluster_ref == name)
        .filter(|t| t.spec.deletion_policy == DeletionPolicy::Delete && holds(&t.metadata, finalizers::TOPIC))
        .map(|t| format!("Topic {}", t.name_any()));
    let processors = processors
        .iter()
        .filter(|p| in_ns(p.as_ref(), Some(ns)) && p.spec.cluster_ref == name && holds(&p.metadata, finalizers::PROCESSOR))
        .map(|p| format!("Processor {}", p.name_any()));
    let mut users: Vec<String> = topics.chain(processors).collect();
    users.sort();
    users
}

/// Usable or not: no broker answering is not usable; one that answers is.
fn health(checked: &Result<ClusterInfo, Problem>) -> Result<(), Problem> {
    match checked {
        Err(p) => Err(p.clone()),
        Ok(info) if !info.brokers.is_empty() && info.unreachable.len() == info.brokers.len() => {
            let why: Vec<String> = info.unreachable.iter().map(|(id, e)| format!("broker {id}: {e}")).collect();
            Err(("KafkaUnreachable".into(), format!("no broker of the cluster answers: {}", why.join("; "))))
        }
        Ok(_) => Ok(()),
    }
}

/// Reconciling and Stalled from Ready: settings that cannot work (a
/// missing or bad Secret, refused credentials or certificates, a broker
/// too old) wait for a change, so they stall; brokers that do not answer
/// are retried with back-off, so the cluster is still reconciling.
fn progress_of(ready: &Cond) -> (Cond, Cond) {
    use conditions::types::{RECONCILING, STALLED};
    let waits_for_a_change =
        ready.reason.starts_with("Secret") || matches!(ready.reason.as_str(), "AuthenticationFailed" | "TlsFailed" | "UnsupportedByBroker");
    if ready.status {
        (Cond::new(RECONCILING, false, "Connected", ""), Cond::new(STALLED, false, "Connected", ""))
    } else if waits_for_a_change {
        (Cond::new(RECONCILING, false, ready.reason.clone(), ""), Cond::new(STALLED, true, ready.reason.clone(), ready.message.clone()))
    } else {
        (Cond::new(RECONCILING, true, ready.reason.clone(), ready.message.clone()), Cond::new(STALLED, false, ready.reason.clone(), ""))
    }
}

/// Status from a check of the cluster. Pure.
fn status_from(kc: &KafkaCluster, checked: &Result<ClusterInfo, Problem>, previous: &KafkaClusterStatus) -> (KafkaClusterStatus, Cond) {
    use conditions::types::READY;
    const DEGRADED: &str = "Degraded";
    let info = checked.as_ref().ok();
    let ready = match (health(checked), info) {
        (Err((reason, message)), _) => Cond::new(READY, false, reason, message),
        (Ok(()), Some(i)) => {
            let answering = i.brokers.len() - i.unreachable.len();
            let mode = match i.kraft {
                Some(true) => ", KRaft",
                Some(false) => ", ZooKeeper mode",
                None => "",
            };
            let controller = i.controller.map_or(String::new(), |c| format!(", controller {c}"));
            Cond::new(READY, true, "Connected", format!("{answering} of {} broker(s) answer{controller}{mode}", i.brokers.len()))
        }
        (Ok(()), None) => Cond::new(READY, false, "Unknown", ""),
    };
    let mut problems: Vec<String> = Vec::new();
    let mut reason = "";
    if let Some(i) = info {
        let unsupported: Vec<String> = i
            .apis
            .iter()
            .filter(|(_, v)| v.is_none())
            .map(|(api, _)| format!("{api} unsupported: {}", crate::kafka::feature(api)))
            .collect();
        if !unsupported.is_empty() {
            reason = "UnsupportedByBroker";
            problems.extend(unsupported);
        }
        if !i.unreachable.is_empty() && i.unreachable.len() < i.brokers.len() {
            reason = if reason.is_empty() { "BrokersUnreachable" } else { reason };
            problems.extend(i.unreachable.iter().map(|(id, e)| format!("broker {id} cannot be reached: {e}")));
        }
    }
    let degraded = if problems.is_empty() {
        Cond::new(DEGRADED, false, if info.is_some() { "AllWell" } else { "Unknown" }, "")
    } else {
        Cond::new(DEGRADED, true, reason, problems.join("; "))
    };
    let (reconciling, stalled) = progress_of(&ready);
    let status = KafkaClusterStatus {
        observed_generation: kc.metadata.generation,
        conditions: conditions::merge(
            &previous.conditions,
            &[ready.clone(), reconciling, stalled, degraded],
            kc.metadata.generation,
            Timestamp::now(),
        ),
        brokers: info.map(|i| i.brokers.len() as i32),
        broker_details: info
            .map(|i| {
                i.brokers
                    .iter()
                    .map(|(id, addr)| BrokerStatus {
                        id: *id,
                        address: addr.clone(),
                        reachable: !i.unreachable.contains_key(id),
                        message: i.unreachable.get(id).cloned(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        controller: info.and_then(|i| i.controller),
        kraft: info.and_then(|i| i.kraft),
        api_versions: info
            .map(|i| i.apis.iter().map(|(api, v)| (api.to_string(), v.map_or("unsupported".into(), |v| format!("v{v}")))).collect())
            .unwrap_or_default(),
    };
    (status, ready)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Condition, KafkaClusterSpec};

    fn kc() -> KafkaCluster {
        KafkaCluster::new("default", KafkaClusterSpec { bootstrap_servers: "k:9092".into(), tls: None, sasl: None })
    }

    fn info() -> ClusterInfo {
        ClusterInfo {
            cluster_id: Some("c".into()),
            brokers: [(1, "a:9092".to_string()), (2, "b:9092".into()), (3, "c:9092".into())].into(),
            controller: Some(2),
            unreachable: Default::default(),
            kraft: Some(true),
            apis: [("Metadata", Some(12)), ("CreatePartitions", Some(3))].into(),
        }
    }

    fn cond<'a>(s: &'a KafkaClusterStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn a_cluster_being_deleted_waits_for_what_deletes_kafka_data_with_it() {
        let obj = |kind: &str, name: &str, ns: &str, spec: serde_json::Value, finalizer: Option<&str>| {
            serde_json::json!({"apiVersion": "kappa.dev/v1alpha1", "kind": kind,
                "metadata": {"name": name, "namespace": ns, "finalizers": finalizer.into_iter().collect::<Vec<_>>()}, "spec": spec})
        };
        let topic = |name: &str, ns: &str, cluster: &str, policy: &str, finalizer: Option<&str>| -> Arc<Topic> {
            let spec = serde_json::json!({"clusterRef": cluster, "partitions": 1, "deletionPolicy": policy});
            Arc::new(serde_json::from_value(obj("Topic", name, ns, spec, finalizer)).unwrap())
        };
        let processor = |name: &str, ns: &str, finalizer: Option<&str>| -> Arc<Processor> {
            let spec = serde_json::json!({"inputs": ["a"], "template": {"image": "x"}});
            Arc::new(serde_json::from_value(obj("Processor", name, ns, spec, finalizer)).unwrap())
        };
        let held = Some(finalizers::TOPIC);
        let topics = [
            topic("a", "ns", "default", "Delete", held),
            topic("released", "ns", "default", "Delete", None),
            topic("retained", "ns", "default", "Retain", held),
            topic("other-cluster", "ns", "other", "Delete", held),
            topic("other-ns", "elsewhere", "default", "Delete", held),
        ];
        let processors = [
            processor("p", "ns", Some(finalizers::PROCESSOR)),
            processor("kept", "ns", None),
            processor("q", "elsewhere", Some(finalizers::PROCESSOR)),
        ];
        assert_eq!(deleting_users(&topics, &processors, "ns", "default"), ["Processor p", "Topic a"]);
        assert!(deleting_users(&topics[1..], &processors[1..], "ns", "default").is_empty());
    }

    #[test]
    fn a_healthy_cluster_says_who_answers_the_controller_and_the_mode() {
        let (s, ready) = status_from(&kc(), &Ok(info()), &Default::default());
        assert!(ready.status);
        assert_eq!(ready.message, "3 of 3 broker(s) answer, controller 2, KRaft");
        assert_eq!((s.brokers, s.controller, s.kraft), (Some(3), Some(2), Some(true)));
        assert_eq!(s.api_versions["CreatePartitions"], "v3");
        assert_eq!(cond(&s, "Degraded").status, "False");
    }

    #[test]
    fn a_broker_away_degrades_all_away_is_not_ready() {
        let mut i = info();
        i.unreachable.insert(3, "cannot reach Kafka at c:9092: connection refused".into());
        let (s, ready) = status_from(&kc(), &Ok(i.clone()), &Default::default());
        assert!(ready.status, "two of three answer");
        let d = cond(&s, "Degraded");
        assert_eq!((d.status.as_str(), d.reason.as_str()), ("True", "BrokersUnreachable"));
        assert!(d.message.contains("broker 3 cannot be reached"), "{}", d.message);
        assert!(!s.broker_details.iter().find(|b| b.id == 3).unwrap().reachable);
        i.unreachable.insert(1, "x".into());
        i.unreachable.insert(2, "y".into());
        let (_, ready) = status_from(&kc(), &Ok(i), &Default::default());
        assert_eq!((ready.status, ready.reason.as_str()), (false, "KafkaUnreachable"));
    }

    #[test]
    fn an_api_the_brokers_lack_is_named_with_what_it_disables() {
        let mut i = info();
        i.apis.insert("CreatePartitions", None);
        let (s, ready) = status_from(&kc(), &Ok(i), &Default::default());
        assert!(ready.status, "everything else keeps working");
        let d = cond(&s, "Degraded");
        assert_eq!(d.reason, "UnsupportedByBroker");
        assert_eq!(d.message, "CreatePartitions unsupported: partition growth disabled");
        assert_eq!(s.api_versions["CreatePartitions"], "unsupported");
    }

    #[test]
    fn settings_that_cannot_work_stall_and_unreachable_brokers_reconcile() {
        let status = |checked: Result<ClusterInfo, Problem>| {
            let (s, _) = status_from(&kc(), &checked, &Default::default());
            (cond(&s, "Ready").status.clone(), cond(&s, "Reconciling").status.clone(), cond(&s, "Stalled").status.clone())
        };
        let t = |s: &str| s.to_string();
        assert_eq!(status(Ok(info())), (t("True"), t("False"), t("False")));
        let missing = ("SecretMissing".to_string(), "Secret creds named by spec.sasl.credentials does not exist".to_string());
        assert_eq!(status(Err(missing)), (t("False"), t("False"), t("True")));
        assert_eq!(status(Err(("AuthenticationFailed".into(), "x".into()))), (t("False"), t("False"), t("True")));
        let mut away = info();
        away.unreachable = away.brokers.keys().map(|id| (*id, "connection refused".to_string())).collect();
        assert_eq!(status(Ok(away)), (t("False"), t("True"), t("False")));
    }
}

//! KafkaCluster: resolve credentials from Secrets, keep one client per
//! cluster, and report whether the brokers answer.

use std::sync::Arc;

use futures::Stream;
use k8s_openapi::{api::core::v1::Secret, jiff::Timestamp};
use kube::{
    Api, Client, ResourceExt,
    core::PartialObjectMeta,
    runtime::{Controller, controller::Action, reflector::ObjectRef, watcher},
};
use tracing::instrument;

use super::{Context, apply_status, clusters::ClusterHandle, measured, watched_api};
use crate::{
    Result,
    api::{Cond, KafkaCluster, KafkaClusterSpec, KafkaClusterStatus, conditions},
    kafka,
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
            .filter(|kc| kc.namespace().as_deref() == Some(ns.as_str()) && kc.spec.secret_names().contains(&name.as_str()))
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
    let mut settings =
        kafka::Settings { bootstrap: spec.bootstrap_servers.split(',').map(|s| s.trim().to_string()).collect(), ..Default::default() };
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

async fn apply(kc: Arc<KafkaCluster>, ctx: Arc<Context>) -> Result<Action> {
    let ns = kc.namespace().unwrap_or_default();
    let name = kc.name_any();
    let (health, brokers) = match resolve(&ctx.client, &ns, &kc.spec).await {
        Err(problem) => {
            ctx.clusters.remove(&ns, &name);
            (Err(problem), None)
        }
        Ok(settings) => {
            let handle = ctx.clusters.ensure(&ns, &name, settings);
            let result = handle.kafka.cluster().await;
            let labels = crate::metrics::ClusterLabels { namespace: ns.clone(), cluster: name.clone() };
            ctx.metrics.kafka_requests.get_or_create(&labels).set(handle.kafka.requests_sent() as i64);
            ctx.metrics.topic_sync_requests.get_or_create(&labels).set(handle.topics.requests_sent() as i64);
            let health = result.as_ref().map(|_| ()).map_err(|e| (e.reason().to_string(), e.to_string()));
            handle.set_health(health.clone());
            (health, result.ok().map(|i| i.brokers as i32))
        }
    };

    let previous = kc.status.clone().unwrap_or_default();
    let ready = match &health {
        Ok(()) => Cond::new(conditions::types::READY, true, "Connected", format!("{} broker(s) answer", brokers.unwrap_or(0))),
        Err((reason, message)) => Cond::new(conditions::types::READY, false, reason.clone(), message.clone()),
    };
    let status = KafkaClusterStatus {
        observed_generation: kc.metadata.generation,
        conditions: conditions::merge(&previous.conditions, std::slice::from_ref(&ready), kc.metadata.generation, Timestamp::now()),
        brokers,
    };
    if apply_status(&ctx.client, kc.as_ref(), kc.status.as_ref(), &status).await? {
        let was_ready = conditions::is_true(&previous.conditions, conditions::types::READY);
        let was_reason = conditions::find(&previous.conditions, conditions::types::READY).map(|c| c.reason.clone());
        if ready.status && !was_ready {
            ctx.event(kc.as_ref(), false, "Connected", "Connect", ready.message.clone()).await;
        } else if !ready.status && was_reason.as_deref() != Some(ready.reason.as_str()) {
            ctx.event(kc.as_ref(), true, &ready.reason, "Connect", ready.message.clone()).await;
        }
    }
    let down_key = format!("{KIND}-down/{ns}/{name}");
    Ok(match health {
        Ok(()) => {
            ctx.succeeded(&down_key);
            Action::requeue(ctx.settings.cluster_check_interval)
        }
        // Settings problems wait for a change to the KafkaCluster or its Secrets.
        Err((reason, _)) if reason.starts_with("Secret") => Action::await_change(),
        Err(_) => Action::requeue(ctx.backoff(&down_key).min(ctx.settings.cluster_check_interval)),
    })
}

//! Frameworks under the processor contract v1, on the lab: the Kafka Streams
//! example (a repartition topic, a state store with a changelog, static
//! membership, the default 30 s commit interval, at-least-once) through a
//! first version, a logic change under steady input, a rollback to the
//! standby, a retirement, a return to a retired version and the
//! Processor's deletion.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Pod, Secret},
};
use kappa_operator::{
    api::{KafkaCluster, Processor, Topic, ViewVersion},
    kafka::Kafka,
};
use kube::{
    ResourceExt,
    api::{DeleteParams, ListParams},
};
use serde_json::json;
use support::{
    create, kafka, patch,
    pipeline::{caught_up, check, first_version_live, pipeline, processor_state, produce, versions},
    processor, wait_for,
};

const STREAMS_IMAGE: &str = "ghcr.io/kappa-dev/kappa-streams-example:0.1.0";
const PYTHON_IMAGE: &str = "ghcr.io/kappa-dev/kappa-python-example:0.1.0";
const WAIT: Duration = Duration::from_secs(240);

/// One framework at a time: the timings below are measured on two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn streams_processor(logic: &str) -> serde_json::Value {
    framework_processor(STREAMS_IMAGE, logic)
}

fn framework_processor(image: &str, logic: &str) -> serde_json::Value {
    json!({"metadata": {"name": "totals"}, "spec": {
        "inputs": ["orders"],
        "replicas": 1,
        "deletionPolicy": "Delete",
        "template": {
            "image": image,
            "args": ["--logic", logic],
            "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8081}, "periodSeconds": 1},
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8081}, "initialDelaySeconds": 30, "periodSeconds": 5},
            "securityContext": {"readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false},
        },
        "view": {"partitions": 3},
        // A previous version keeps running for 90 s after a cutover, so it
        // consumes the steady input below to its end before it stands by.
        "rollout": {"maxLag": 0, "stableForSeconds": 5, "retainVersions": 1, "scaleDownDelaySeconds": 90},
    }})
}

fn logic(l: &str) -> serde_json::Value {
    json!({"spec": {"template": {"args": ["--logic", l]}}})
}

async fn version(ns: &support::TestNs, id: &str) -> ViewVersion {
    versions(ns).await.into_iter().find(|v| v.spec.version == id).unwrap_or_else(|| panic!("no ViewVersion of version {id}"))
}

/// Kafka topics whose names start with `prefix`.
async fn topics_named_after(prefix: &str) -> Vec<String> {
    let mut t: Vec<String> = kafka().list_topics().await.unwrap().into_iter().filter(|t| t.starts_with(prefix)).collect();
    t.sort();
    t
}

/// The view is exact once the version has committed everything (a Kafka
/// Streams view is written at each commit, every 30 s).
async fn exact(input: &str, vv: &ViewVersion, logic: &str) -> String {
    wait_for(&format!("version {}'s view to match the input ({logic})", vv.spec.version), Duration::from_secs(90), || async {
        check(input, vv, logic)
    })
    .await
}

async fn scaled_to_zero(ns: &support::TestNs, id: &str) {
    wait_for(&format!("version {id} to stand by with no pods"), WAIT, || async {
        let d: Deployment = ns.api().get(&format!("totals-{id}")).await.map_err(|e| e.to_string())?;
        let replicas = d.spec.and_then(|s| s.replicas).unwrap_or(-1);
        let pods = ns
            .api::<Pod>()
            .list(&ListParams::default().labels(&format!("kappa.dev/version={id}")))
            .await
            .map_err(|e| e.to_string())?
            .items
            .len();
        if replicas == 0 && pods == 0 { Ok(()) } else { Err(format!("replicas {replicas}, {pods} pods")) }
    })
    .await
}

/// Waits for the candidate to become active; how long that took.
async fn promoted(ns: &support::TestNs, from: &str, since: Instant) -> (String, Duration) {
    let id = wait_for("a new version to be promoted", WAIT, || async {
        let st = processor_state(ns).await?.status.unwrap_or_default();
        match st.active_version {
            Some(a) if a != from => Ok(a),
            other => Err(format!("active {other:?}, phase {:?}, candidate {:?}", st.phase, st.candidate_version)),
        }
    })
    .await;
    let took = since.elapsed();
    wait_for(&format!("readers to be told of version {id}"), WAIT, || async {
        let cm: ConfigMap = ns.api().get("totals-view").await.map_err(|e| e.to_string())?;
        let told = cm.data.unwrap_or_default().get("version").cloned().unwrap_or_default();
        if told == id { Ok(()) } else { Err(format!("ConfigMap totals-view says {told}")) }
    })
    .await;
    (id, took)
}

/// Reverts the logic to the standby's: it is active again within 15 s.
async fn rolled_back(ns: &support::TestNs, from: &str, to: &str, logic_of_to: &str) {
    let reverted = Instant::now();
    patch::<Processor>(ns, "totals", logic(logic_of_to)).await.unwrap();
    let (back, took) = promoted(ns, from, reverted).await;
    assert_eq!(back, to);
    println!("rolled back to {to} in {:.1} s", took.as_secs_f64());
    assert!(took < Duration::from_secs(15), "rollback to the standby took {took:?}");
}

#[tokio::test]
async fn kafka_streams_through_a_rollout_a_rollback_a_retirement_and_a_return() {
    let _one = ONE_AT_A_TIME.lock().await;
    let s = pipeline("streams", &[]).await;

    // First version: a replay through a repartition topic into a state store.
    let (v1, vv1) = first_version_live(&s, streams_processor("sum"), 20_000).await;
    println!("{}", exact(&s.input, &vv1, "sum").await);
    let internal1 = topics_named_after(&format!("{}-", vv1.spec.consumer_group)).await;
    assert_eq!(
        internal1,
        [format!("{}-by-key-repartition", vv1.spec.consumer_group), format!("{}-totals-changelog", vv1.spec.consumer_group)],
        "Kafka Streams' internal topics are named after KAPPA_CONSUMER_GROUP"
    );
    // The pod got the contract: a state directory, a properties file, its instance id.
    let pod = s.ns.api::<Pod>().list(&ListParams::default().labels(&format!("kappa.dev/version={v1}"))).await.unwrap().items.remove(0);
    let env = pod.spec.unwrap().containers[0].env.clone().unwrap();
    for name in ["KAPPA_STATE_DIR", "KAPPA_PROPERTIES", "KAPPA_INSTANCE_ID", "KAPPA_CONTRACT_VERSION"] {
        assert!(env.iter().any(|e| e.name == name), "{name} is in the contract");
    }
    // With no secret in them, the properties come from the pod's own
    // annotation (the downward API), which Kafka Streams loaded above: no Secret.
    let inline = pod.metadata.annotations.unwrap_or_default().get("kappa.dev/client-properties-file").cloned().unwrap_or_default();
    assert!(inline.contains(&format!("group.id={}", vv1.spec.consumer_group)), "{inline}");
    assert!(s.ns.api::<Secret>().get_opt(&format!("{}-client", vv1.name_any())).await.unwrap().is_none(), "no Secret without a secret");

    // An in-place change (a volume) replaces the pod without a replay; the
    // old pod's static member is removed rather than waited out (45 s).
    let changed = Instant::now();
    patch::<Processor>(
        &s.ns,
        "totals",
        json!({"spec": {"template": {
            "volumes": [{"name": "scratch", "emptyDir": {}}],
            "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
        }}}),
    )
    .await
    .unwrap();
    let took = wait_for("the version's pod to be replaced in place and Ready", WAIT, || async {
        let d: Deployment = s.ns.api().get(&format!("totals-{v1}")).await.map_err(|e| e.to_string())?;
        let has =
            d.spec.as_ref().and_then(|s| s.template.spec.as_ref()?.volumes.clone()).unwrap_or_default().iter().any(|v| v.name == "scratch");
        let st = d.status.unwrap_or_default();
        let pods =
            s.ns.api::<Pod>().list(&ListParams::default().labels(&format!("kappa.dev/version={v1}"))).await.map_err(|e| e.to_string())?;
        let done = has && st.updated_replicas == Some(1) && st.ready_replicas == Some(1) && pods.items.len() == 1;
        if done { Ok(changed.elapsed()) } else { Err(format!("volume {has}, {st:?}, {} pods", pods.items.len())) }
    })
    .await;
    println!("replaced in place and Ready in {:.1} s", took.as_secs_f64());
    assert_eq!(versions(&s.ns).await.len(), 1, "an in-place change starts no version");
    caught_up(&s.ns).await;
    produce(&s.input, 2_000, 3);
    caught_up(&s.ns).await;
    println!("{}", exact(&s.input, &vv1, "sum").await);

    // A logic change under steady input (100 events/s for 90 s), with Kafka
    // Streams' default 30 s commit interval and maxLag 0: promoted within
    // two commit intervals of its start, while the input still flows.
    let input = s.input.clone();
    let steady = std::thread::spawn(move || {
        processor(&["produce", "--topic", &input, "--count", "9000", "--seed", "2", "--keys", "500", "--rate", "100"]).unwrap()
    });
    let changed = Instant::now();
    patch::<Processor>(&s.ns, "totals", logic("count")).await.unwrap();
    let (v2, took) = promoted(&s.ns, &v1, changed).await;
    println!("version {v2} promoted {:.1} s after the change, under steady input", took.as_secs_f64());
    assert!(!steady.is_finished(), "promoted while the input still flowed, {took:?} after the change");
    steady.join().unwrap();
    let vv2 = version(&s.ns, &v2).await;
    println!("{}", exact(&s.input, &vv2, "count").await);

    // Rollback: the standby (which consumed the input to its end before it
    // stood by) is revived from its own offsets and changelog, no replay.
    scaled_to_zero(&s.ns, &v1).await;
    rolled_back(&s.ns, &v2, &v1, "sum").await;
    assert_eq!(version(&s.ns, &v1).await.spec.consumer_group, vv1.spec.consumer_group, "the standby itself, not a replay");
    println!("{}", exact(&s.input, &vv1, "sum").await);

    // A third version retires the second (retainVersions 1, once its
    // scale-down delay is over): its group, its internal topics and its view
    // go, promptly (its members are removed, not waited out).
    patch::<Processor>(&s.ns, "totals", logic("max")).await.unwrap();
    let (v3, _) = promoted(&s.ns, &v1, Instant::now()).await;
    wait_for(&format!("version {v2} to start retiring"), WAIT, || async {
        let vv = s.ns.api::<ViewVersion>().get_opt(&format!("totals-{v2}")).await.map_err(|e| e.to_string())?;
        let phase = vv.as_ref().and_then(|v| v.status.as_ref()?.phase);
        if vv.is_none() || phase == Some(kappa_operator::api::VersionPhase::Retired) { Ok(()) } else { Err(format!("phase {phase:?}")) }
    })
    .await;
    let retiring = Instant::now();
    let took = wait_for(&format!("version {v2} to be retired"), WAIT, || async {
        let left = topics_named_after(&vv2.spec.consumer_group).await;
        let view = kafka().topics(std::slice::from_ref(&vv2.spec.output_topic)).await.map_err(|e| e.to_string())?;
        let vv = s.ns.api::<ViewVersion>().get_opt(&format!("totals-{v2}")).await.map_err(|e| e.to_string())?;
        if left.is_empty() && view.is_empty() && vv.is_none() { Ok(retiring.elapsed()) } else { Err(format!("left: {left:?} {view:?}")) }
    })
    .await;
    println!("version {v2} retired in {:.1} s (after the cutover to {v3})", took.as_secs_f64());
    assert!(took < Duration::from_secs(15), "retirement took {took:?}");
    let groups = kafka().committed(std::slice::from_ref(&vv2.spec.consumer_group)).await.unwrap();
    assert_eq!(groups[&vv2.spec.consumer_group].as_ref().unwrap().len(), 0, "the retired group is deleted");
    println!("{}", exact(&s.input, &version(&s.ns, &v3).await, "max").await);

    // Back to the retired version's logic: the same version id, a new
    // incarnation that inherits nothing (no changelog restored on top).
    patch::<Processor>(&s.ns, "totals", logic("count")).await.unwrap();
    let (again, _) = promoted(&s.ns, &v3, Instant::now()).await;
    assert_eq!(again, v2, "the same logic is the same version id");
    let (_, vv2b) = caught_up(&s.ns).await;
    assert_ne!(vv2b.spec.consumer_group, vv2.spec.consumer_group, "a new incarnation: a new group");
    assert_ne!(vv2b.spec.output_topic, vv2.spec.output_topic, "and a new view topic");
    assert!(topics_named_after(&vv2.spec.consumer_group).await.is_empty());
    println!("{}", exact(&s.input, &vv2b, "count").await);

    // deletionPolicy Delete: every version is retired before the Processor goes.
    let all: Vec<ViewVersion> = versions(&s.ns).await;
    assert!(all.len() >= 2, "an active version and a standby");
    s.ns.api::<Processor>().delete("totals", &DeleteParams::default()).await.unwrap();
    wait_for("the Processor and everything it had in Kafka to be gone", WAIT, || async {
        let p = s.ns.api::<Processor>().get_opt("totals").await.map_err(|e| e.to_string())?;
        let mut left = Vec::new();
        for vv in &all {
            left.extend(topics_named_after(&vv.spec.consumer_group).await);
            left.extend(kafka().topics(std::slice::from_ref(&vv.spec.output_topic)).await.map_err(|e| e.to_string())?.into_keys());
        }
        if p.is_none() && left.is_empty() { Ok(()) } else { Err(format!("processor there: {}, left in Kafka: {left:?}", p.is_some())) }
    })
    .await;
}

/// A Python processor (confluent-kafka, transactions: exactly once) under the
/// same contract: a first version, a logic change, a rollback, with exact
/// views; killed mid-replay, it loses nothing.
#[tokio::test]
async fn a_python_processor_rolls_out_and_back_with_exact_views() {
    let _one = ONE_AT_A_TIME.lock().await;
    let s = pipeline("python", &[]).await;
    let (v1, vv1) = first_version_live(&s, framework_processor(PYTHON_IMAGE, "sum"), 20_000).await;
    println!("{}", exact(&s.input, &vv1, "sum").await);

    let changed = Instant::now();
    patch::<Processor>(&s.ns, "totals", logic("count")).await.unwrap();
    // Killed while it replays: it starts again from the view and the offsets
    // its transactions committed together.
    let pod = wait_for("the new version's pod to run", WAIT, || async {
        let pods = s.ns.api::<Pod>().list(&ListParams::default().labels("kappa.dev/processor=totals")).await.map_err(|e| e.to_string())?;
        pods.items
            .into_iter()
            .find(|p| {
                p.labels().get("kappa.dev/version") != Some(&v1) && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            })
            .ok_or_else(|| "not yet".to_string())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.ns.api::<Pod>().delete(&pod.name_any(), &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await.unwrap();
    let (v2, took) = promoted(&s.ns, &v1, changed).await;
    println!("version {v2} promoted {:.1} s after the change", took.as_secs_f64());
    println!("{}", exact(&s.input, &version(&s.ns, &v2).await, "count").await);

    scaled_to_zero(&s.ns, &v1).await;
    produce(&s.input, 1_000, 4);
    rolled_back(&s.ns, &v2, &v1, "sum").await;
    println!("{}", exact(&s.input, &vv1, "sum").await);
}

/// The security settings of the contract as a Java client uses them: the
/// Kafka Streams example loads `KAPPA_PROPERTIES` as it is, against the lab's
/// listener that requires a client certificate (PEM truststore and keystore
/// inline) and against its SCRAM-SHA-512 listener (JAAS inline).
#[tokio::test]
async fn kafka_streams_connects_with_the_properties_file_over_mtls_and_scram() {
    let _one = ONE_AT_A_TIME.lock().await;
    let file = |var: &str| std::fs::read_to_string(support::required(var)).unwrap();
    let secured = [
        (
            "mtls",
            support::required("KAPPA_KAFKA_MTLS_BOOTSTRAP"),
            json!({"tls": {
                "ca": {"name": "kafka-tls", "key": "ca.crt"},
                "clientCertificate": {"secretName": "kafka-tls", "certificateKey": "tls.crt", "keyKey": "tls.key"}
            }}),
        ),
        (
            "scram",
            support::required("KAPPA_KAFKA_SCRAM_BOOTSTRAP"),
            json!({"sasl": {
                "mechanism": "SCRAM-SHA-512",
                "credentials": {"secretName": "kafka-user", "usernameKey": "username", "passwordKey": "password"}
            }}),
        ),
    ];
    for (name, bootstrap, security) in secured {
        let env = support::Env::get().await;
        support::install_crds(&env.client).await;
        let ns = support::TestNs::new(&env, &format!("streams-{name}")).await;
        create::<Secret>(
            &ns,
            json!({"metadata": {"name": "kafka-tls"}, "stringData": {
                "ca.crt": file("KAPPA_KAFKA_CA_FILE"),
                "tls.crt": file("KAPPA_KAFKA_CLIENT_CERT_FILE"),
                "tls.key": file("KAPPA_KAFKA_CLIENT_KEY_FILE"),
            }}),
        )
        .await;
        create::<Secret>(
            &ns,
            json!({"metadata": {"name": "kafka-user"}, "stringData": {
                "username": support::required("KAPPA_KAFKA_SCRAM_USER"),
                "password": file("KAPPA_KAFKA_SCRAM_PASSWORD_FILE").trim(),
            }}),
        )
        .await;
        let mut spec = json!({"bootstrapServers": bootstrap});
        spec.as_object_mut().unwrap().extend(security.as_object().unwrap().clone());
        create::<KafkaCluster>(&ns, json!({"metadata": {"name": "default"}, "spec": spec})).await;
        let input = support::unique(&format!("e2e-streams-{name}-orders"));
        create::<Topic>(
            &ns,
            json!({"metadata": {"name": "orders"}, "spec": {"topicName": input, "partitions": 3, "deletionPolicy": "Delete"}}),
        )
        .await;
        let op = support::Operator::start(&ns.name, &["--lag-poll-seconds", "1"]);
        let s = support::pipeline::Pipeline { ns, op, input };
        let mut p = framework_processor(STREAMS_IMAGE, "sum");
        p["spec"]["template"]["args"] = json!(["--logic", "sum", "--commit-interval-ms", "1000"]);
        let (_, vv) = first_version_live(&s, p, 5_000).await;
        println!("{name}: {}", exact(&s.input, &vv, "sum").await);
        // Properties that hold a secret (a client key, a password) come from the version's Secret.
        let secret = s.ns.api::<Secret>().get(&format!("{}-client", vv.name_any())).await.unwrap();
        let properties = String::from_utf8(secret.data.unwrap()["client.properties"].0.clone()).unwrap();
        assert!(properties.contains("ssl.keystore.key=") || properties.contains("sasl.jaas.config="), "{properties}");
    }
}

//! Proves the lab is real: pods run as processes and report honest status,
//! the controller manager's controllers work, RBAC applies to programs in
//! pods, and Kafka answers on both of its listeners.

mod support;

use std::{sync::Mutex, time::Duration};

use k8s_openapi::api::{
    apps::v1::Deployment,
    batch::v1::Job,
    core::v1::{ConfigMap, Pod},
    rbac::v1::{Role, RoleBinding},
};
use kube::{
    ResourceExt,
    api::{DeleteParams, ListParams},
};
use rdkafka::{
    ClientConfig, ClientContext, Message,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::{BaseConsumer, Consumer},
    error::KafkaError,
    producer::{FutureProducer, FutureRecord},
};
use serde_json::json;
use support::{Env, TestNs, create, unique, wait_for};

const WAIT: Duration = Duration::from_secs(60);

async fn pods_with(ns: &TestNs, selector: &str) -> Vec<Pod> {
    ns.api::<Pod>().list(&ListParams::default().labels(selector)).await.map(|l| l.items).unwrap_or_default()
}

fn pid_of(p: &Pod) -> Option<i32> {
    let cs = p.status.as_ref()?.container_statuses.as_ref()?.first()?;
    cs.container_id.as_deref()?.strip_prefix("process://")?.parse().ok()
}

fn ready(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[tokio::test]
async fn deployment_pod_runs_is_ready_and_restarts_when_killed() {
    let env = Env::get().await;
    let ns = TestNs::new(&env, "lab-deploy").await;
    create::<Deployment>(
        &ns,
        json!({
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{
                        "name": "app", "image": "kappa-lab/testapp:dev", "args": ["serve", "8080"],
                        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                        "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1}
                    }]}
                }
            }
        }),
    )
    .await;

    let pod = wait_for("the web pod to be Running and Ready", WAIT, || async {
        let pods = pods_with(&ns, "app=web").await;
        match pods.into_iter().next() {
            Some(p) if ready(&p) && pid_of(&p).is_some() => Ok(p),
            other => Err(format!("{:?}", other.and_then(|p| p.status).map(|s| (s.phase, s.container_statuses)))),
        }
    })
    .await;
    assert_eq!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Running"));

    // The pod is a real process, answering on its own address.
    let pid = pid_of(&pod).unwrap();
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(cmdline.contains("lab-testapp"), "pid {pid} is not the test app: {cmdline:?}");
    let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone()).expect("a pod IP");
    let body = http_get(&ip, 8080).await;
    assert!(body.ends_with("ok\n"), "unexpected answer from {ip}:8080: {body:?}");

    // Killing the process makes the kubelet restart it and count the restart.
    // SAFETY: a plain kill(2) of a process this test's pod started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let restarted = wait_for("the container to restart after SIGKILL", WAIT, || async {
        let p = ns.api::<Pod>().get(&pod.name_any()).await.map_err(|e| e.to_string())?;
        let cs = p.status.as_ref().and_then(|s| s.container_statuses.clone()).unwrap_or_default();
        match cs.first() {
            Some(c) if c.restart_count == 1 && ready(&p) && pid_of(&p) != Some(pid) => Ok(p),
            c => Err(format!("{c:?}")),
        }
    })
    .await;
    let cs = restarted.status.unwrap().container_statuses.unwrap().remove(0);
    let last = cs.last_state.and_then(|s| s.terminated).expect("the killed run in lastState");
    assert_eq!(last.exit_code, 137, "SIGKILL shows as exit code 137");
}

async fn http_get(ip: &str, port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect((ip, port)).await.expect("connect to the pod");
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn jobs_succeed_and_fail_by_exit_code() {
    let env = Env::get().await;
    let ns = TestNs::new(&env, "lab-jobs").await;
    for (name, code) in [("succeeds", 0), ("fails", 3)] {
        create::<Job>(
            &ns,
            json!({
                "metadata": {"name": name},
                "spec": {"backoffLimit": 0, "template": {"spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "c", "image": "kappa-lab/testapp", "args": ["exit", code.to_string()]}]
                }}}
            }),
        )
        .await;
    }
    for (name, want) in [("succeeds", "Complete"), ("fails", "Failed")] {
        wait_for(&format!("job {name} to be {want}"), WAIT, || async {
            let job = ns.api::<Job>().get(name).await.map_err(|e| e.to_string())?;
            let conds = job.status.and_then(|s| s.conditions).unwrap_or_default();
            if conds.iter().any(|c| c.type_ == want && c.status == "True") { Ok(()) } else { Err(format!("{conds:?}")) }
        })
        .await;
    }
    let failed = pods_with(&ns, "job-name=fails").await;
    let term = failed[0].status.as_ref().unwrap().container_statuses.as_ref().unwrap()[0].state.as_ref().unwrap().terminated.clone();
    assert_eq!(term.map(|t| t.exit_code), Some(3));
}

#[tokio::test]
async fn children_are_garbage_collected_with_their_owner() {
    let env = Env::get().await;
    let ns = TestNs::new(&env, "lab-gc").await;
    let owner: ConfigMap = create(&ns, json!({"metadata": {"name": "owner"}})).await;
    create::<ConfigMap>(
        &ns,
        json!({"metadata": {"name": "child", "ownerReferences": [{
            "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.uid().unwrap()
        }]}}),
    )
    .await;
    ns.api::<ConfigMap>().delete("owner", &DeleteParams::background()).await.unwrap();
    wait_for("the garbage collector to delete the child", WAIT, || async {
        match ns.api::<ConfigMap>().get_opt("child").await {
            Ok(None) => Ok(()),
            other => Err(format!("{:?}", other.map(|c| c.map(|c| c.name_any())))),
        }
    })
    .await;
}

#[tokio::test]
async fn programs_in_pods_are_subject_to_rbac() {
    let env = Env::get().await;
    let ns = TestNs::new(&env, "lab-rbac").await;
    create::<k8s_openapi::api::core::v1::ServiceAccount>(&ns, json!({"metadata": {"name": "reader"}})).await;
    let url = format!("/api/v1/namespaces/{}/configmaps", ns.name);
    let run = |name: &'static str| {
        let ns = &ns;
        let url = url.clone();
        async move {
            create::<Pod>(
                ns,
                json!({
                    "metadata": {"name": name},
                    "spec": {"serviceAccountName": "reader", "restartPolicy": "Never", "containers": [{
                        "name": "c", "image": "kappa-lab/kubectl", "command": ["kubectl"], "args": ["get", "--raw", url, "-v=6"]
                    }]}
                }),
            )
            .await;
            let pod = wait_for(&format!("pod {name} to finish"), WAIT, || async {
                let p = ns.api::<Pod>().get(name).await.map_err(|e| e.to_string())?;
                match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
                    Some("Succeeded" | "Failed") => Ok(p),
                    phase => Err(format!("{phase:?}")),
                }
            })
            .await;
            let logs = ns.logs(&pod, "c").await;
            (pod.status.unwrap().phase.unwrap(), logs)
        }
    };
    let (phase, logs) = run("before-grant").await;
    assert_eq!(phase, "Failed");
    assert!(logs.contains("403 Forbidden"), "expected a 403 for the unprivileged service account, got:\n{logs}");
    assert!(logs.contains(&format!("system:serviceaccount:{}:reader", ns.name)), "the request must carry the pod's identity:\n{logs}");

    create::<Role>(
        &ns,
        json!({"metadata": {"name": "read-cm"}, "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}]}),
    )
    .await;
    create::<RoleBinding>(
        &ns,
        json!({
            "metadata": {"name": "read-cm"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-cm"},
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": ns.name}]
        }),
    )
    .await;
    let (phase, logs) = run("after-grant").await;
    assert_eq!(phase, "Succeeded", "logs:\n{logs}");
    assert!(logs.contains("200 OK"), "expected a 200 once the Role is bound, got:\n{logs}");
}

#[tokio::test]
async fn kafka_round_trips_a_record() {
    let env = Env::get().await;
    let topic = unique("e2e-lab");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", &env.kafka_bootstrap).create().unwrap();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let created = admin.create_topics(&[NewTopic::new(&topic, 1, TopicReplication::Fixed(1))], &opts).await.unwrap();
    assert!(created[0].is_ok(), "{created:?}");

    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", &env.kafka_bootstrap).create().unwrap();
    producer.send(FutureRecord::to(&topic).key("k").payload("hello lab"), Duration::from_secs(10)).await.expect("delivery");

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &env.kafka_bootstrap)
        .set("group.id", unique("e2e-lab"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    let payload = loop {
        assert!(std::time::Instant::now() < deadline, "no record consumed back from {topic}");
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(500)) {
            break m.payload().map(|p| String::from_utf8_lossy(p).into_owned());
        }
    };
    assert_eq!(payload.as_deref(), Some("hello lab"));
    admin.delete_topics(&[&topic], &opts).await.unwrap();
}

/// Records the errors librdkafka reports, so a test can see why it failed.
#[derive(Default)]
struct Errors(Mutex<Vec<String>>);

impl ClientContext for Errors {
    fn error(&self, error: KafkaError, reason: &str) {
        self.0.lock().unwrap().push(format!("{error}: {reason}"));
    }
}

impl rdkafka::consumer::ConsumerContext for Errors {}

fn scram_metadata(password: &str) -> (Result<usize, KafkaError>, Vec<String>) {
    let consumer: BaseConsumer<Errors> = ClientConfig::new()
        .set("bootstrap.servers", support::required("KAPPA_KAFKA_SCRAM_BOOTSTRAP"))
        .set("security.protocol", "SASL_PLAINTEXT")
        .set("sasl.mechanism", "SCRAM-SHA-512")
        .set("sasl.username", support::required("KAPPA_KAFKA_SCRAM_USER"))
        .set("sasl.password", password)
        .create_with_context(Errors::default())
        .unwrap();
    let result = consumer.fetch_metadata(None, Duration::from_secs(10)).map(|m| m.brokers().len());
    // Client errors (authentication among them) arrive through poll.
    let _ = consumer.poll(Duration::from_millis(100));
    let errors = consumer.context().0.lock().unwrap().clone();
    (result, errors)
}

#[tokio::test]
async fn kafka_scram_listener_accepts_the_lab_user_and_refuses_a_wrong_password() {
    let password = std::fs::read_to_string(support::required("KAPPA_KAFKA_SCRAM_PASSWORD_FILE")).unwrap();
    let (ok, errors) = tokio::task::spawn_blocking(move || scram_metadata(password.trim())).await.unwrap();
    assert_eq!(ok.ok(), Some(3), "the lab user must authenticate, and see the three brokers: {errors:?}");

    let (bad, errors) = tokio::task::spawn_blocking(|| scram_metadata("not-the-password")).await.unwrap();
    assert!(bad.is_err(), "a wrong password must not get metadata");
    assert!(
        errors.iter().any(|e| e.contains("Authentication failed") || e.contains("authentication")),
        "expected an authentication failure, got: {errors:?}"
    );
}

//! Turning a Pod's container spec into a process: the executable from the
//! image map, argv, environment (with `valueFrom`, `envFrom` and `$(VAR)`
//! expansion), and volumes materialized as folders.
//!
//! A container sees the host's filesystem, so a volume cannot appear at its
//! `mountPath`. Instead, every env value and argument that starts with a
//! mount path is rewritten to the folder holding that volume.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use k8s_openapi::{
    ByteString,
    api::{
        authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec},
        core::v1::{ConfigMap, Container, ObjectFieldSelector, Pod, Secret, ServiceAccount},
    },
};
use kube::{Api, api::PostParams};

use crate::Lab;

/// Why a container cannot start; becomes its `waiting` state.
#[derive(Debug, Clone, PartialEq)]
pub struct Waiting {
    pub reason: &'static str,
    pub message: String,
}

impl Waiting {
    fn config(message: String) -> Self {
        Waiting { reason: "CreateContainerConfigError", message }
    }
}

/// The path where Kubernetes mounts a Pod's service account credentials.
pub const SA_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// A Pod's materialized volumes: volume name -> folder on the host.
pub struct Volumes {
    pub dirs: BTreeMap<String, PathBuf>,
}

/// What a container process is started with.
#[derive(Debug, Clone)]
pub struct Launch {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
}

/// Looks the image up in the image map: the exact reference first, then the
/// reference without its tag or digest.
pub fn resolve_image(map_file: &Path, image: &str) -> Result<PathBuf, Waiting> {
    let text = std::fs::read_to_string(map_file).unwrap_or_default();
    let map: BTreeMap<&str, &str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    let untagged = strip_tag(image);
    map.get(image).or_else(|| map.get(untagged)).map(PathBuf::from).filter(|p| p.is_file()).ok_or_else(|| Waiting {
        reason: "ErrImageNeverPull",
        message: format!(
            "image {image:?} is not in the lab's image map {} (or its executable is missing); \
                 add it with: hack/lab.sh image {untagged}=/path/to/executable",
            map_file.display()
        ),
    })
}

fn strip_tag(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    match image.rfind(':') {
        Some(i) if !image[i..].contains('/') => &image[..i],
        _ => image,
    }
}

pub async fn materialize_volumes(lab: &Lab, pod: &Pod, dir: &Path) -> Result<Volumes, Waiting> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut dirs = BTreeMap::new();
    let spec = pod.spec.as_ref().ok_or_else(|| Waiting::config("pod has no spec".into()))?;
    for v in spec.volumes.iter().flatten() {
        let target = dir.join("volumes").join(&v.name);
        std::fs::create_dir_all(&target).map_err(|e| Waiting::config(format!("volume {}: {e}", v.name)))?;
        if let Some(s) = &v.secret {
            let name = s.secret_name.as_deref().unwrap_or_default();
            match get::<Secret>(lab, ns, name).await? {
                Some(secret) => {
                    let data = secret.data.unwrap_or_default();
                    write_items(&target, data.iter().map(|(k, v)| (k.as_str(), v.0.as_slice())), s.items.as_deref())?
                }
                None if s.optional == Some(true) => {}
                None => return Err(Waiting::config(format!("secret {name:?} not found (volume {})", v.name))),
            }
        } else if let Some(c) = &v.config_map {
            match get::<ConfigMap>(lab, ns, &c.name).await? {
                Some(cm) => {
                    let data = cm.data.unwrap_or_default();
                    write_items(&target, data.iter().map(|(k, v)| (k.as_str(), v.as_bytes())), c.items.as_deref())?
                }
                None if c.optional == Some(true) => {}
                None => return Err(Waiting::config(format!("configmap {:?} not found (volume {})", c.name, v.name))),
            }
        } else if let Some(p) = &v.projected {
            for src in p.sources.iter().flatten() {
                if let Some(t) = &src.service_account_token {
                    let token = request_token(lab, pod, t.audience.clone(), t.expiration_seconds).await?;
                    write_file(&target.join(&t.path), token.as_bytes())?;
                }
                if let Some(c) = &src.config_map {
                    if let Some(cm) = get::<ConfigMap>(lab, ns, &c.name).await? {
                        let data = cm.data.unwrap_or_default();
                        write_items(&target, data.iter().map(|(k, v)| (k.as_str(), v.as_bytes())), c.items.as_deref())?
                    } else if c.optional != Some(true) {
                        return Err(Waiting::config(format!("configmap {:?} not found (volume {})", c.name, v.name)));
                    }
                }
                if let Some(s) = &src.secret {
                    if let Some(secret) = get::<Secret>(lab, ns, &s.name).await? {
                        let data = secret.data.unwrap_or_default();
                        write_items(&target, data.iter().map(|(k, v)| (k.as_str(), v.0.as_slice())), s.items.as_deref())?
                    } else if s.optional != Some(true) {
                        return Err(Waiting::config(format!("secret {:?} not found (volume {})", s.name, v.name)));
                    }
                }
                if let Some(d) = &src.downward_api {
                    for item in d.items.iter().flatten() {
                        if let Some(f) = &item.field_ref {
                            write_file(&target.join(&item.path), field_value(pod, f, None)?.as_bytes())?;
                        }
                    }
                }
            }
        } else if let Some(d) = &v.downward_api {
            for item in d.items.iter().flatten() {
                if let Some(f) = &item.field_ref {
                    write_file(&target.join(&item.path), field_value(pod, f, None)?.as_bytes())?;
                }
            }
        } else if let Some(h) = &v.host_path {
            // A hostPath volume is the host folder itself.
            let _ = std::fs::remove_dir(&target);
            dirs.insert(v.name.clone(), PathBuf::from(&h.path));
            continue;
        }
        // emptyDir and anything else: an empty folder in the pod's folder.
        dirs.insert(v.name.clone(), target);
    }
    Ok(Volumes { dirs })
}

async fn get<K>(lab: &Lab, ns: &str, name: &str) -> Result<Option<K>, Waiting>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + k8s_openapi::serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::namespaced(lab.client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|e| Waiting::config(format!("reading {} {ns}/{name}: {e}", K::kind(&()))))
}

async fn request_token(lab: &Lab, pod: &Pod, audience: Option<String>, expiry: Option<i64>) -> Result<String, Waiting> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let sa = pod.spec.as_ref().and_then(|s| s.service_account_name.as_deref()).unwrap_or("default");
    let api: Api<ServiceAccount> = Api::namespaced(lab.client.clone(), ns);
    let req = TokenRequest {
        spec: TokenRequestSpec {
            audiences: audience.into_iter().collect(),
            expiration_seconds: expiry.or(Some(3607)),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..Default::default()
    };
    let resp: TokenRequest = api
        .create_subresource("token", sa, &PostParams::default(), &req)
        .await
        .map_err(|e| Waiting::config(format!("token for service account {ns}/{sa}: {e}")))?;
    resp.status.map(|s| s.token).ok_or_else(|| Waiting::config(format!("token for service account {ns}/{sa}: empty answer")))
}

fn write_items<'a>(
    dir: &Path,
    data: impl Iterator<Item = (&'a str, &'a [u8])>,
    items: Option<&[k8s_openapi::api::core::v1::KeyToPath]>,
) -> Result<(), Waiting> {
    let data: BTreeMap<&str, &[u8]> = data.collect();
    match items {
        Some(items) => {
            for item in items {
                if let Some(v) = data.get(item.key.as_str()) {
                    write_file(&dir.join(&item.path), v)?;
                }
            }
        }
        None => {
            for (k, v) in data {
                write_file(&dir.join(k), v)?;
            }
        }
    }
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), Waiting> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Waiting::config(format!("{}: {e}", parent.display())))?;
    }
    std::fs::write(path, bytes).map_err(|e| Waiting::config(format!("{}: {e}", path.display())))?;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    Ok(())
}

/// Values for `fieldRef`, as the downward API gives them.
fn field_value(pod: &Pod, f: &ObjectFieldSelector, ip: Option<Ipv4Addr>) -> Result<String, Waiting> {
    let m = &pod.metadata;
    let spec = pod.spec.as_ref();
    let path = f.field_path.as_str();
    let label = |map: &Option<BTreeMap<String, String>>, prefix: &str| {
        path.strip_prefix(prefix).and_then(|k| k.strip_suffix("']")).and_then(|k| map.as_ref()?.get(k).cloned()).unwrap_or_default()
    };
    Ok(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()).unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => "127.0.0.1".into(),
        "status.podIP" | "status.podIPs" => ip.map(|i| i.to_string()).unwrap_or_default(),
        p if p.starts_with("metadata.labels['") => label(&m.labels, "metadata.labels['"),
        p if p.starts_with("metadata.annotations['") => label(&m.annotations, "metadata.annotations['"),
        other => return Err(Waiting::config(format!("fieldRef {other:?} is not supported by the lab kubelet"))),
    })
}

/// Resolves the process for one container: executable, argv, environment.
pub async fn launch(lab: &Lab, pod: &Pod, c: &Container, ip: Ipv4Addr, pod_dir: &Path, volumes: &Volumes) -> Result<Launch, Waiting> {
    let image = c.image.as_deref().unwrap_or_default();
    let entrypoint = resolve_image(&lab.image_map, image)?;
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");

    // envFrom first, then env: later definitions win, as on a real kubelet.
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, k: String, v: String| {
        env.retain(|(e, _)| *e != k);
        env.push((k, v));
    };
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match get::<ConfigMap>(lab, ns, &r.name).await? {
                Some(cm) => cm.data.unwrap_or_default().into_iter().for_each(|(k, v)| set(&mut env, format!("{prefix}{k}"), v)),
                None if r.optional == Some(true) => {}
                None => return Err(Waiting::config(format!("configmap {:?} not found", r.name))),
            }
        }
        if let Some(r) = &from.secret_ref {
            match get::<Secret>(lab, ns, &r.name).await? {
                Some(s) => {
                    s.data.unwrap_or_default().into_iter().for_each(|(k, v)| set(&mut env, format!("{prefix}{k}"), bytes_to_string(&v)))
                }
                None if r.optional == Some(true) => {}
                None => return Err(Waiting::config(format!("secret {:?} not found", r.name))),
            }
        }
    }
    for e in c.env.iter().flatten() {
        let value = match (&e.value, &e.value_from) {
            (Some(v), _) => expand(v, &env),
            (None, Some(from)) => {
                if let Some(r) = &from.secret_key_ref {
                    let s = get::<Secret>(lab, ns, &r.name).await?;
                    match s.and_then(|s| s.data?.get(&r.key).map(bytes_to_string)) {
                        Some(v) => v,
                        None if r.optional == Some(true) => continue,
                        None => {
                            return Err(Waiting::config(format!("secret {:?} or its key {:?} not found (env {})", r.name, r.key, e.name)));
                        }
                    }
                } else if let Some(r) = &from.config_map_key_ref {
                    let cm = get::<ConfigMap>(lab, ns, &r.name).await?;
                    match cm.and_then(|c| c.data?.get(&r.key).cloned()) {
                        Some(v) => v,
                        None if r.optional == Some(true) => continue,
                        None => {
                            return Err(Waiting::config(format!(
                                "configmap {:?} or its key {:?} not found (env {})",
                                r.name, r.key, e.name
                            )));
                        }
                    }
                } else if let Some(f) = &from.field_ref {
                    field_value(pod, f, Some(ip))?
                } else if let Some(r) = &from.resource_field_ref {
                    resource_value(c, &r.resource)
                } else {
                    String::new()
                }
            }
            (None, None) => String::new(),
        };
        set(&mut env, e.name.clone(), value);
    }

    let mounts: Vec<(String, PathBuf)> = c
        .volume_mounts
        .iter()
        .flatten()
        .filter_map(|m| {
            let dir = volumes.dirs.get(&m.name)?;
            let dir = match m.sub_path.as_deref() {
                Some(sub) if !sub.is_empty() => dir.join(sub),
                _ => dir.clone(),
            };
            Some((m.mount_path.trim_end_matches('/').to_string(), dir))
        })
        .collect();
    let translate = |s: String| translate_path(&mounts, s);

    let cwd = pod_dir.join(&c.name);
    std::fs::create_dir_all(&cwd).map_err(|e| Waiting::config(format!("{}: {e}", cwd.display())))?;

    let mut base: Vec<(String, String)> = vec![
        ("PATH".into(), std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into())),
        ("HOME".into(), cwd.display().to_string()),
        ("HOSTNAME".into(), pod.metadata.name.clone().unwrap_or_default()),
    ];
    // In-cluster credentials: a container that mounts the service account
    // volume gets a kubeconfig authenticating with that volume's token.
    if let Some((_, sa_dir)) = mounts.iter().find(|(p, _)| p == SA_MOUNT) {
        let kubeconfig = write_sa_kubeconfig(lab, sa_dir, ns)?;
        base.push(("KUBECONFIG".into(), kubeconfig.display().to_string()));
    }
    for (k, v) in env {
        let v = translate(v);
        base.retain(|(e, _)| *e != k);
        base.push((k, v));
    }
    let env = base;

    let mut argv: Vec<String> = Vec::new();
    match c.command.as_deref() {
        Some([cmd, rest @ ..]) => {
            argv.push(resolve_command(&entrypoint, &translate(expand(cmd, &env))));
            argv.extend(rest.iter().map(|a| translate(expand(a, &env))));
        }
        _ => argv.push(entrypoint.display().to_string()),
    }
    argv.extend(c.args.iter().flatten().map(|a| translate(expand(a, &env))));
    Ok(Launch { argv, env, cwd })
}

/// `command` replaces the image's entrypoint. A bare name is looked up next to
/// the image's executable first (the "image"), then on the host's PATH.
fn resolve_command(entrypoint: &Path, cmd: &str) -> String {
    if cmd.contains('/') {
        return cmd.to_string();
    }
    if entrypoint.file_name().is_some_and(|f| f == cmd) {
        return entrypoint.display().to_string();
    }
    if let Some(sibling) = entrypoint.parent().map(|d| d.join(cmd)).filter(|p| p.is_file()) {
        return sibling.display().to_string();
    }
    cmd.to_string()
}

fn translate_path(mounts: &[(String, PathBuf)], s: String) -> String {
    let best = mounts.iter().filter(|(p, _)| s == *p || s.starts_with(&format!("{p}/"))).max_by_key(|(p, _)| p.len());
    match best {
        Some((p, dir)) => format!("{}{}", dir.display(), &s[p.len()..]),
        None => s,
    }
}

fn write_sa_kubeconfig(lab: &Lab, sa_dir: &Path, ns: &str) -> Result<PathBuf, Waiting> {
    let path = sa_dir.with_extension("kubeconfig");
    let ca = sa_dir.join("ca.crt");
    if !ca.exists() {
        write_file(&ca, &lab.ca_pem)?;
    }
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster:\n    server: {}\n    certificate-authority: {}\n\
         users:\n- name: sa\n  user:\n    tokenFile: {}\ncontexts:\n- name: lab\n  context:\n    cluster: lab\n    user: sa\n    namespace: {ns}\n\
         current-context: lab\n",
        lab.server,
        ca.display(),
        sa_dir.join("token").display()
    );
    write_file(&path, text.as_bytes())?;
    Ok(path)
}

fn resource_value(c: &Container, resource: &str) -> String {
    let r = c.resources.as_ref();
    let (map, key) = match resource.split_once('.') {
        Some(("limits", k)) => (r.and_then(|r| r.limits.as_ref()), k),
        Some(("requests", k)) => (r.and_then(|r| r.requests.as_ref()), k),
        _ => (None, ""),
    };
    map.and_then(|m| m.get(key)).map(|q| q.0.clone()).unwrap_or_else(|| "0".into())
}

fn bytes_to_string(b: &ByteString) -> String {
    String::from_utf8_lossy(&b.0).into_owned()
}

/// Kubernetes' `$(VAR)` expansion: references to defined variables are
/// replaced, `$$` escapes, anything else is left as written.
pub fn expand(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match env.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => out.push_str(&rest[i..i + 2 + end + 1]),
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_like_kubernetes() {
        let env = vec![("A".to_string(), "x".to_string()), ("B".to_string(), "y".to_string())];
        assert_eq!(expand("$(A)-$(B)", &env), "x-y");
        assert_eq!(expand("$$(A)", &env), "$(A)");
        assert_eq!(expand("$(C) $A", &env), "$(C) $A");
        assert_eq!(expand("$(A", &env), "$(A");
    }

    #[test]
    fn strips_tags_not_registry_ports() {
        assert_eq!(strip_tag("ghcr.io/x/y:1.2"), "ghcr.io/x/y");
        assert_eq!(strip_tag("localhost:5000/y"), "localhost:5000/y");
        assert_eq!(strip_tag("y@sha256:abc"), "y");
    }

    #[test]
    fn translates_mount_paths_longest_first() {
        let mounts = vec![("/etc/kafka".to_string(), PathBuf::from("/lab/v1")), ("/etc/kafka/tls".to_string(), PathBuf::from("/lab/v2"))];
        assert_eq!(translate_path(&mounts, "/etc/kafka/tls/ca.crt".into()), "/lab/v2/ca.crt");
        assert_eq!(translate_path(&mounts, "/etc/kafka".into()), "/lab/v1");
        assert_eq!(translate_path(&mounts, "/etc/kafkax".into()), "/etc/kafkax");
    }
}

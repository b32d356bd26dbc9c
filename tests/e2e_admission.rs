//! The CRDs' own validation, judged by the lab's real API server: every
//! invalid fixture is refused with a message naming the offending field, and
//! every example is accepted.
//!
//! A fixture in `tests/fixtures/invalid/` holds one mistake and a comment
//! `# expect: TEXT` that the refusal must contain. With several documents,
//! all but the last must be accepted and the last (an update) refused.

mod support;

use std::path::{Path, PathBuf};

use kube::{
    Api, Client,
    api::{DynamicObject, GroupVersionKind, Patch, PatchParams},
    discovery::pinned_kind,
};
use serde::Deserialize;
use support::{Env, TestNs};

fn documents(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde_json::Value::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|v| !v.is_null())
        .collect()
}

/// Server-side applies one document with strict field validation.
async fn apply(client: &Client, ns: &str, doc: &serde_json::Value, dry_run: bool) -> Result<(), String> {
    let obj: DynamicObject = serde_json::from_value(doc.clone()).map_err(|e| e.to_string())?;
    let types = obj.types.clone().ok_or("document without apiVersion/kind")?;
    let gvk = GroupVersionKind::try_from(&types).map_err(|e| e.to_string())?;
    let (resource, caps) = pinned_kind(client, &gvk).await.map_err(|e| e.to_string())?;
    let api: Api<DynamicObject> = if caps.scope == kube::discovery::Scope::Namespaced {
        Api::namespaced_with(client.clone(), ns, &resource)
    } else {
        Api::all_with(client.clone(), &resource)
    };
    let mut pp = PatchParams::apply("kappa-e2e").force().validation_strict();
    if dry_run {
        pp = pp.dry_run();
    }
    let name = obj.metadata.name.clone().ok_or("document without metadata.name")?;
    api.patch(&name, &pp, &Patch::Apply(doc)).await.map(|_| ()).map_err(|e| match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    })
}

fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn invalid_manifests_are_refused_naming_the_field() {
    let env = Env::get().await;
    support::install_crds(&env.client).await;
    let files = yaml_files("tests/fixtures/invalid");
    assert!(files.len() >= 20, "at least 20 invalid fixtures, found {}", files.len());
    let mut failures = Vec::new();
    for file in &files {
        // A namespace per fixture, so updates start from a clean slate.
        let ns = TestNs::new(&env, "admission").await;
        let text = std::fs::read_to_string(file).unwrap();
        let expect = text
            .lines()
            .find_map(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} has no '# expect:' line", file.display()))
            .trim()
            .to_string();
        let docs = documents(file);
        let (last, setup) = docs.split_last().unwrap();
        for doc in setup {
            if let Err(e) = apply(&env.client, &ns.name, doc, false).await {
                failures.push(format!("{}: a setup document was refused: {e}", file.display()));
            }
        }
        match apply(&env.client, &ns.name, last, false).await {
            Ok(()) => failures.push(format!("{}: accepted, but must be refused ({expect})", file.display())),
            Err(msg) if msg.contains(&expect) => {}
            Err(msg) => failures.push(format!("{}: refused, but the message does not contain {expect:?}: {msg}", file.display())),
        }
    }
    assert!(failures.is_empty(), "{} of {} fixtures failed:\n{}", failures.len(), files.len(), failures.join("\n"));
}

#[tokio::test]
async fn every_example_is_accepted() {
    let env = Env::get().await;
    support::install_crds(&env.client).await;
    let ns = TestNs::new(&env, "examples").await;
    let files = yaml_files("examples");
    assert!(!files.is_empty());
    for file in files {
        for doc in documents(&file) {
            apply(&env.client, &ns.name, &doc, true).await.unwrap_or_else(|e| panic!("{} was refused: {e}", file.display()));
        }
    }
}

//! Pure builders of the Kubernetes objects the operator owns: each takes
//! the custom resources and returns the object to apply. No I/O.

mod contract;
mod deployment;
mod serving;
mod topic;
mod verification;

pub use contract::{
    PROPERTIES_INLINE, PropertiesFile, client_id, client_properties, client_secret, contract_env, holds_secret, properties_file,
};
/// A Processor and its versions, for other modules' tests.
#[cfg(test)]
pub(crate) use deployment::tests as fixtures;
pub use deployment::{PROPERTIES_DIGEST, deployment};
pub use serving::{preview_service, service, view_config_map};
pub use topic::{version_of, view_topic};
pub use verification::{verification_job, verification_job_name};

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::{api::labels, naming};

/// A short digest (16 hex digits) of some bytes.
pub fn digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The labels that select one version's pods.
pub fn selector(processor: &str, version: &str) -> BTreeMap<String, String> {
    [(labels::PROCESSOR.to_string(), naming::label_value(processor)), (labels::VERSION.to_string(), version.to_string())].into()
}

/// Labels on everything the operator creates for a processor.
pub fn common_labels(processor: &str) -> BTreeMap<String, String> {
    [
        (labels::PROCESSOR.to_string(), naming::label_value(processor)),
        (labels::MANAGED_BY.to_string(), labels::MANAGED_BY_VALUE.to_string()),
    ]
    .into()
}

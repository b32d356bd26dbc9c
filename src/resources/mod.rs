//! Pure builders of the Kubernetes objects the operator owns: each takes
//! the custom resources and returns the object to apply. No I/O.

mod contract;
mod deployment;
mod serving;
mod topic;
mod verification;

pub use contract::{client_id, client_properties, client_secret, contract_env};
/// A Processor and its versions, for other modules' tests.
#[cfg(test)]
pub(crate) use deployment::tests as fixtures;
pub use deployment::{PROPERTIES_DIGEST, deployment};
pub use serving::{preview_service, service, view_config_map};
pub use topic::{version_of, view_topic};
pub use verification::{verification_job, verification_job_name};

use std::collections::BTreeMap;

use crate::{api::labels, naming};

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

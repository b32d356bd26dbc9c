//! What readers use: Service `P` on the active version, `P-preview` on the
//! candidate, and ConfigMap `P-view` naming the live view topic.

use k8s_openapi::{
    api::core::v1::{ConfigMap, Service, ServicePort, ServiceSpec},
    apimachinery::pkg::util::intstr::IntOrString,
};
use kube::{Resource, ResourceExt, api::ObjectMeta};

use super::{common_labels, selector};
use crate::{
    api::{Processor, ViewVersion},
    naming,
};

fn owned_meta(p: &Processor, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: p.metadata.namespace.clone(),
        labels: Some(common_labels(&p.name_any())),
        owner_references: p.controller_owner_ref(&()).map(|r| vec![r]),
        ..Default::default()
    }
}

fn service_for(p: &Processor, name: String, version: &str) -> Option<Service> {
    let port = p.spec.serving.as_ref()?.port;
    Some(Service {
        metadata: owned_meta(p, name),
        spec: Some(ServiceSpec {
            selector: Some(selector(&p.name_any(), version)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port,
                target_port: Some(IntOrString::Int(port)),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    })
}

/// Service `P`, selecting the active version's pods (None without serving).
pub fn service(p: &Processor, active: &str) -> Option<Service> {
    service_for(p, naming::processor_names(&p.name_any()).service, active)
}

/// Service `P-preview`, selecting the candidate's pods.
pub fn preview_service(p: &Processor, candidate: &str) -> Option<Service> {
    service_for(p, naming::processor_names(&p.name_any()).preview_service, candidate)
}

/// ConfigMap `P-view`: what readers of the view need to know.
pub fn view_config_map(p: &Processor, active: &ViewVersion, bootstrap: &str) -> ConfigMap {
    ConfigMap {
        metadata: owned_meta(p, naming::processor_names(&p.name_any()).config_map),
        data: Some(
            [
                ("topic".to_string(), active.spec.output_topic.clone()),
                ("version".to_string(), active.spec.version.clone()),
                ("bootstrapServers".to_string(), bootstrap.to_string()),
            ]
            .into(),
        ),
        ..Default::default()
    }
}

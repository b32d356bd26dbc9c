//! The operator's client of the API server: every request and watch over
//! one HTTP/2 connection, as client-go does, instead of one HTTP/1.1
//! connection per request in flight.
//!
//! kube's own client speaks HTTP/1.1 only, so a burst of reconciles opens a
//! TLS connection per request in flight, each with its buffers and a
//! handshake the API server pays for, and they then idle in the pool. The
//! configuration is kube's (`Config::infer`), and so are the layers (base
//! URI, retries on 429/503/504, authentication, extra headers); only the
//! transport differs (and kube's debug span per request is not made).
//! Configurations this transport does not handle as kube does (a proxy, a
//! TLS server name, unchecked certificates, an exec credential plugin,
//! whose client certificates kube's client renews) keep kube's client, and
//! so does any when `DISABLE_HTTP2` is set (to any value), the variable
//! client-go reads for the same choice.
//!
//! Either way each request is counted, by verb and resource, in the
//! `kappa_api_requests` metric (client-go's `rest_client_requests_total`
//! says less: method and host): what the operator costs the API server,
//! told apart from what other clients cost it.
use std::time::Duration;

use http::{HeaderMap, Method, Request, Uri, header::CONTENT_TYPE};
use hyper_util::{
    client::legacy::{Client as HyperClient, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};
use kube::{
    Client, Config,
    client::{ClientBuilder, ConfigExt, retry::RetryPolicy},
};
use prometheus_client::metrics::{counter::Counter, family::Family};
use tower::{BoxError, ServiceBuilder, retry::RetryLayer, util::MapRequestLayer};

use crate::metrics::ApiRequestLabels;

/// The requests sent, by verb and resource.
pub type Requests = Family<ApiRequestLabels, Counter>;

/// How often an idle connection is pinged, and how long a ping may take
/// before the connection is dropped (client-go's `ReadIdleTimeout` and
/// `PingTimeout`): a connection the network lost is found within 45 s,
/// not when a watch times out.
const PING_EVERY: Duration = Duration::from_secs(30);
const PING_TIMEOUT: Duration = Duration::from_secs(15);

/// A client of the cluster of the current kubeconfig (or in-cluster),
/// counting its requests in `requests`.
pub async fn client(requests: Requests) -> anyhow::Result<Client> {
    let config = Config::infer().await.map_err(|e| anyhow::anyhow!("no Kubernetes configuration: {e}"))?;
    let disabled = std::env::var_os("DISABLE_HTTP2").is_some_and(|v| !v.is_empty());
    if disabled {
        tracing::info!("HTTP/2 disabled by DISABLE_HTTP2: one HTTP/1.1 connection per request in flight");
    }
    if disabled || !multiplexed(&config) {
        return Ok(ClientBuilder::try_from(config)?.with_layer(&counting(requests)).build());
    }
    http2_client(config, requests)
}

/// Counts each request as it is sent (outermost: a retry is not a request
/// of its own, and the path is still the API's, without the cluster URL's).
fn counting(requests: Requests) -> MapRequestLayer<impl Fn(Request<kube::client::Body>) -> Request<kube::client::Body> + Clone> {
    MapRequestLayer::new(move |req: Request<kube::client::Body>| {
        requests.get_or_create(&request_labels(req.method(), req.uri(), req.headers())).inc();
        req
    })
}

/// A request's verb and `resource[/subresource]`, read from its path as
/// the API server reads it: `/api/v1/...` and `/apis/GROUP/VERSION/...`,
/// then `namespaces/NS/` unless what follows is a namespace's own
/// subresource. A GET of a collection is a LIST, or a WATCH; an apply is a
/// PATCH of its own content type. Paths outside the API say `-`. Pure.
pub fn request_labels(method: &Method, uri: &Uri, headers: &HeaderMap) -> ApiRequestLabels {
    let parts: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    let rest = match parts.as_slice() {
        ["api", _, rest @ ..] | ["apis", _, _, rest @ ..] => rest,
        _ => &[],
    };
    let rest = match rest {
        ["namespaces", _, inner @ ..] if inner.first().is_some_and(|r| !matches!(*r, "status" | "finalize")) => inner,
        other => other,
    };
    let (resource, named) = match rest {
        [] => ("-".to_string(), true),
        [resource] => (resource.to_string(), false),
        [resource, _] => (resource.to_string(), true),
        [resource, _, sub, ..] => (format!("{resource}/{sub}"), true),
    };
    let watch = uri.query().is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
    let apply = headers.get(CONTENT_TYPE).is_some_and(|t| t.as_bytes().starts_with(b"application/apply-patch"));
    let verb = match *method {
        Method::GET if named => "GET",
        Method::GET if watch => "WATCH",
        Method::GET => "LIST",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH if apply => "APPLY",
        Method::PATCH => "PATCH",
        Method::DELETE if named => "DELETE",
        Method::DELETE => "DELETECOLLECTION",
        _ => "OTHER",
    };
    ApiRequestLabels { verb, resource }
}

/// Whether `config` is one the HTTP/2 transport handles as kube would.
fn multiplexed(config: &Config) -> bool {
    config.cluster_url.scheme_str() == Some("https")
        && config.proxy_url.is_none()
        && config.tls_server_name.is_none()
        && !config.accept_invalid_certs
        && config.auth_info.exec.is_none()
}

fn http2_client(config: Config, requests: Requests) -> anyhow::Result<Client> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let mut tls = config.openssl_ssl_connector_builder()?;
    tls.set_alpn_protos(b"\x02h2\x08http/1.1")?;
    let mut connector = hyper_timeout::TimeoutConnector::new(hyper_openssl::client::legacy::HttpsConnector::with_connector(http, tls)?);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let transport: HyperClient<_, kube::client::Body> = HyperClient::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .http2_keep_alive_interval(PING_EVERY)
        .http2_keep_alive_timeout(PING_TIMEOUT)
        .http2_keep_alive_while_idle(true)
        .build(connector);
    let service = ServiceBuilder::new()
        .layer(counting(requests))
        .layer(config.base_uri_layer())
        .option_layer(config.default_retry.then(|| RetryLayer::new(RetryPolicy::server_retry())))
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(BoxError::from)
        .service(transport);
    Ok(ClientBuilder::new(service, config.default_namespace).build())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> Config {
        Config::new(url.parse().unwrap())
    }

    #[test]
    fn an_https_cluster_is_multiplexed() {
        assert!(multiplexed(&config("https://10.96.0.1:443")));
    }

    #[test]
    fn what_the_transport_does_not_handle_keeps_kubes_client() {
        assert!(!multiplexed(&config("http://127.0.0.1:8001")), "no TLS (kubectl proxy)");
        let mut proxied = config("https://10.96.0.1");
        proxied.proxy_url = Some("http://proxy:3128".parse().unwrap());
        assert!(!multiplexed(&proxied), "a proxy");
        let mut named = config("https://10.96.0.1");
        named.tls_server_name = Some("kubernetes".into());
        assert!(!multiplexed(&named), "a TLS server name");
        let mut unchecked = config("https://10.96.0.1");
        unchecked.accept_invalid_certs = true;
        assert!(!multiplexed(&unchecked), "unchecked certificates");
        let mut exec = config("https://10.96.0.1");
        exec.auth_info.exec =
            Some(serde_json::from_value(serde_json::json!({"command": "aws", "apiVersion": "client.authentication.k8s.io/v1"})).unwrap());
        assert!(!multiplexed(&exec), "an exec plugin");
    }

    #[test]
    fn requests_are_counted_by_verb_and_resource_as_the_api_server_counts_them() {
        let apply = {
            let mut h = HeaderMap::new();
            h.insert(CONTENT_TYPE, "application/apply-patch+yaml".parse().unwrap());
            h
        };
        let merge = {
            let mut h = HeaderMap::new();
            h.insert(CONTENT_TYPE, "application/merge-patch+json".parse().unwrap());
            h
        };
        let none = HeaderMap::new();
        let labels = |m: Method, uri: &str, h: &HeaderMap| {
            let l = request_labels(&m, &uri.parse().unwrap(), h);
            (l.verb, l.resource)
        };
        let cases = [
            (
                labels(Method::GET, "/apis/kappa.dev/v1alpha1/namespaces/a/processors?watch=true&resourceVersion=1", &none),
                ("WATCH", "processors"),
            ),
            (labels(Method::GET, "/apis/kappa.dev/v1alpha1/processors?limit=500", &none), ("LIST", "processors")),
            (labels(Method::GET, "/api/v1/namespaces/a/configmaps/p-view", &none), ("GET", "configmaps")),
            (
                labels(Method::PATCH, "/apis/kappa.dev/v1alpha1/namespaces/a/viewversions/p-1/status?fieldManager=x", &apply),
                ("APPLY", "viewversions/status"),
            ),
            (labels(Method::PATCH, "/apis/kappa.dev/v1alpha1/namespaces/a/topics/t", &merge), ("PATCH", "topics")),
            (labels(Method::POST, "/apis/events.k8s.io/v1/namespaces/a/events", &none), ("POST", "events")),
            (labels(Method::DELETE, "/apis/apps/v1/namespaces/a/deployments/d", &none), ("DELETE", "deployments")),
            (labels(Method::DELETE, "/api/v1/namespaces/a/pods", &none), ("DELETECOLLECTION", "pods")),
            // A namespace itself, and its own subresources.
            (labels(Method::GET, "/api/v1/namespaces/a", &none), ("GET", "namespaces")),
            (labels(Method::PUT, "/api/v1/namespaces/a/finalize", &none), ("PUT", "namespaces/finalize")),
            (labels(Method::GET, "/api/v1/namespaces/a/status", &none), ("GET", "namespaces/status")),
            (labels(Method::GET, "/api/v1/namespaces", &none), ("LIST", "namespaces")),
            // Outside the API's resources.
            (labels(Method::GET, "/version", &none), ("GET", "-")),
            (labels(Method::GET, "/apis/kappa.dev/v1alpha1", &none), ("GET", "-")),
        ];
        for (got, (verb, resource)) in cases {
            assert_eq!(got, (verb, resource.to_string()));
        }
    }
}

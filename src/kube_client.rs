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
use std::time::Duration;

use hyper_util::{
    client::legacy::{Client as HyperClient, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};
use kube::{
    Client, Config,
    client::{ClientBuilder, ConfigExt, retry::RetryPolicy},
};
use tower::{BoxError, ServiceBuilder, retry::RetryLayer};

/// How often an idle connection is pinged, and how long a ping may take
/// before the connection is dropped (client-go's `ReadIdleTimeout` and
/// `PingTimeout`): a connection the network lost is found within 45 s,
/// not when a watch times out.
const PING_EVERY: Duration = Duration::from_secs(30);
const PING_TIMEOUT: Duration = Duration::from_secs(15);

/// A client of the cluster of the current kubeconfig (or in-cluster).
pub async fn client() -> anyhow::Result<Client> {
    let config = Config::infer().await.map_err(|e| anyhow::anyhow!("no Kubernetes configuration: {e}"))?;
    let disabled = std::env::var_os("DISABLE_HTTP2").is_some_and(|v| !v.is_empty());
    if disabled {
        tracing::info!("HTTP/2 disabled by DISABLE_HTTP2: one HTTP/1.1 connection per request in flight");
    }
    if disabled || !multiplexed(&config) {
        return Ok(Client::try_from(config)?);
    }
    http2_client(config)
}

/// Whether `config` is one the HTTP/2 transport handles as kube would.
fn multiplexed(config: &Config) -> bool {
    config.cluster_url.scheme_str() == Some("https")
        && config.proxy_url.is_none()
        && config.tls_server_name.is_none()
        && !config.accept_invalid_certs
        && config.auth_info.exec.is_none()
}

fn http2_client(config: Config) -> anyhow::Result<Client> {
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
}

//! One connection to one broker: TCP or TLS, SASL, API version negotiation,
//! and request/response framing.

use std::{collections::HashMap, time::Duration};

use bytes::{Buf, BufMut, BytesMut};
use kafka_protocol::{
    messages::{ApiKey, ApiVersionsRequest, RequestHeader, ResponseHeader, SaslAuthenticateRequest, SaslHandshakeRequest},
    protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes},
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
    time::timeout,
};

use super::{
    KafkaError, Result, Sasl, Settings, Tls,
    scram::{self, Scram},
};
use crate::api::SaslMechanism;

/// TCP connect, and the TLS handshake after it.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// ApiVersions and SASL after connecting: a broker that accepts a
/// connection and then says nothing must not hold its slot.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Any one request (admin requests ask Kafka to finish within 25 s).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(35);
const CLIENT_ID: &str = "kappa-operator";

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

pub struct Conn {
    addr: String,
    stream: Box<dyn Stream>,
    correlation: i32,
    /// The versions the broker offers, per API key: (min, max).
    versions: HashMap<i16, (i16, i16)>,
    /// The broker finalizes `metadata.version`: a KRaft cluster.
    pub kraft: bool,
}

fn api_name(key: i16) -> &'static str {
    ApiKey::try_from(key).map(api_key_name).unwrap_or("Unknown")
}

pub fn api_key_name(key: ApiKey) -> &'static str {
    match key {
        ApiKey::Metadata => "Metadata",
        ApiKey::CreateTopics => "CreateTopics",
        ApiKey::DeleteTopics => "DeleteTopics",
        ApiKey::CreatePartitions => "CreatePartitions",
        ApiKey::DescribeConfigs => "DescribeConfigs",
        ApiKey::IncrementalAlterConfigs => "IncrementalAlterConfigs",
        ApiKey::ListOffsets => "ListOffsets",
        ApiKey::FindCoordinator => "FindCoordinator",
        ApiKey::OffsetFetch => "OffsetFetch",
        ApiKey::Fetch => "Fetch",
        ApiKey::DeleteGroups => "DeleteGroups",
        ApiKey::DescribeGroups => "DescribeGroups",
        ApiKey::LeaveGroup => "LeaveGroup",
        ApiKey::DescribeQuorum => "DescribeQuorum",
        ApiKey::ApiVersions => "ApiVersions",
        ApiKey::SaslHandshake => "SaslHandshake",
        ApiKey::SaslAuthenticate => "SaslAuthenticate",
        _ => "Other",
    }
}

pub fn error_name(code: i16) -> String {
    use kafka_protocol::error::ParseResponseErrorCode;
    match code.err() {
        Some(e) => format!("{e:?}"),
        None => format!("error code {code}"),
    }
}

impl Conn {
    pub async fn open(addr: &str, settings: &Settings) -> Result<Conn> {
        let unreachable = |reason: String| KafkaError::Unreachable { addr: addr.to_string(), reason };
        let tcp = timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| unreachable(format!("no connection within {}s", CONNECT_TIMEOUT.as_secs())))?
            .map_err(|e| unreachable(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Stream> = match &settings.tls {
            None => Box::new(tcp),
            Some(tls) => Box::new(tls_connect(addr, tcp, tls).await?),
        };
        let mut conn = Conn { addr: addr.to_string(), stream, correlation: 0, versions: HashMap::new(), kraft: false };
        let handshake = async {
            conn.negotiate().await?;
            if let Some(sasl) = &settings.sasl {
                conn.authenticate(sasl).await?;
            }
            Ok::<(), KafkaError>(())
        };
        match timeout(HANDSHAKE_TIMEOUT, handshake).await {
            Ok(r) => r?,
            Err(_) => return Err(KafkaError::Timeout { api: "ApiVersions/SASL handshake", seconds: HANDSHAKE_TIMEOUT.as_secs() }),
        }
        Ok(conn)
    }

    /// Asks the broker for its API versions again: a cheap check that the
    /// connection (and the broker) still answers.
    pub async fn ping(&mut self) -> Result<()> {
        match timeout(REQUEST_TIMEOUT, self.negotiate()).await {
            Ok(r) => r,
            Err(_) => Err(KafkaError::Timeout { api: "ApiVersions", seconds: REQUEST_TIMEOUT.as_secs() }),
        }
    }

    async fn negotiate(&mut self) -> Result<()> {
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("kappa-operator"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let resp = self.send_raw(&req, 3).await?;
        if resp.error_code != 0 {
            return Err(KafkaError::Protocol { api: "ApiVersions", reason: error_name(resp.error_code) });
        }
        self.versions = resp.api_keys.iter().map(|k| (k.api_key, (k.min_version, k.max_version))).collect();
        self.kraft = resp.finalized_features.iter().any(|f| f.name.as_str() == "metadata.version");
        Ok(())
    }

    async fn authenticate(&mut self, sasl: &Sasl) -> Result<()> {
        let auth_err = |m: String| KafkaError::Authentication(m);
        let hs =
            self.send_raw(&SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(sasl.mechanism.as_str())), 1).await?;
        if hs.error_code != 0 {
            let offered: Vec<String> = hs.mechanisms.iter().map(|m| m.to_string()).collect();
            return Err(auth_err(format!("the broker does not accept {} (it offers {})", sasl.mechanism.as_str(), offered.join(", "))));
        }
        match sasl.mechanism {
            SaslMechanism::Plain => {
                let token = format!("\0{}\0{}", sasl.username, sasl.password);
                self.sasl_step(token.into_bytes()).await?;
            }
            SaslMechanism::ScramSha256 | SaslMechanism::ScramSha512 => {
                let hash = if sasl.mechanism == SaslMechanism::ScramSha256 { scram::Hash::Sha256 } else { scram::Hash::Sha512 };
                let mut s = Scram::new(hash, &sasl.username, &sasl.password, scram::nonce());
                let server_first = self.sasl_step(s.first()).await?;
                let client_final = s.respond(&server_first).map_err(auth_err)?;
                let server_final = self.sasl_step(client_final).await?;
                s.verify(&server_final).map_err(auth_err)?;
            }
        }
        Ok(())
    }

    async fn sasl_step(&mut self, bytes: Vec<u8>) -> Result<Vec<u8>> {
        let resp = self.send_raw(&SaslAuthenticateRequest::default().with_auth_bytes(bytes.into()), 2).await?;
        if resp.error_code != 0 {
            let msg = resp.error_message.map(|m| m.to_string()).unwrap_or_else(|| error_name(resp.error_code));
            return Err(KafkaError::Authentication(msg));
        }
        Ok(resp.auth_bytes.to_vec())
    }

    /// The version to use for an API: the highest both sides support, up to
    /// `preferred`, and no lower than `min`; the API unsupported when the
    /// broker does not offer it, or no version in that range.
    pub fn version(&self, key: ApiKey, min: i16, preferred: i16) -> Result<i16> {
        pick_version(self.versions.get(&(key as i16)).copied(), min, preferred).map_err(|offered| KafkaError::Unsupported {
            api: api_key_name(key),
            addr: self.addr.clone(),
            offered,
        })
    }

    /// Sends one request and reads its response.
    pub async fn send<R: Request>(&mut self, req: &R, version: i16) -> Result<R::Response> {
        match timeout(REQUEST_TIMEOUT, self.send_raw(req, version)).await {
            Ok(r) => r,
            Err(_) => Err(KafkaError::Timeout { api: api_name(R::KEY), seconds: REQUEST_TIMEOUT.as_secs() }),
        }
    }

    async fn send_raw<R: Request>(&mut self, req: &R, version: i16) -> Result<R::Response> {
        let api = api_name(R::KEY);
        let proto = |e: anyhow::Error| KafkaError::Protocol { api, reason: e.to_string() };
        let io = |e: std::io::Error| KafkaError::Unreachable { addr: String::new(), reason: format!("{api}: {e}") };
        self.correlation = self.correlation.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
        let mut body = BytesMut::new();
        header.encode(&mut body, R::header_version(version)).map_err(proto)?;
        req.encode(&mut body, version).map_err(proto)?;
        let mut frame = BytesMut::with_capacity(body.len() + 4);
        frame.put_i32(body.len() as i32);
        frame.extend_from_slice(&body);
        self.stream.write_all(&frame).await.map_err(io)?;
        self.stream.flush().await.map_err(io)?;

        let len = self.stream.read_i32().await.map_err(|e| match e.kind() {
            // The broker read the request and hung up instead of answering.
            std::io::ErrorKind::UnexpectedEof => KafkaError::Closed { api, version },
            _ => io(e),
        })?;
        if !(0..=512 * 1024 * 1024).contains(&len) {
            return Err(KafkaError::Protocol { api, reason: format!("implausible response size {len}") });
        }
        let mut buf = vec![0u8; len as usize];
        self.stream.read_exact(&mut buf).await.map_err(io)?;
        let mut buf = bytes::Bytes::from(buf);
        let rh = ResponseHeader::decode(&mut buf, R::Response::header_version(version)).map_err(proto)?;
        if rh.correlation_id != self.correlation {
            return Err(KafkaError::Protocol { api, reason: "response out of order".into() });
        }
        let resp = R::Response::decode(&mut buf, version).map_err(proto)?;
        if buf.has_remaining() {
            return Err(KafkaError::Protocol { api, reason: format!("{} bytes left after the response", buf.remaining()) });
        }
        Ok(resp)
    }
}

/// Why a TLS handshake failed, in terms of what to check: from OpenSSL's
/// error and its certificate verification result (code and text).
fn tls_failure(error: &str, verify_code: i32, verify_text: &str, own_ca: bool) -> String {
    const OK: i32 = 0;
    const HOSTNAME_MISMATCH: i32 = 62;
    let ca = if own_ca { "spec.tls.ca" } else { "the system's trust store (set spec.tls.ca)" };
    match verify_code {
        OK => error.to_string(),
        HOSTNAME_MISMATCH => {
            format!(
                "the broker's certificate does not name this host (hostname mismatch: {verify_text}); use the address it was issued for"
            )
        }
        _ => format!("the broker's certificate is not trusted by {ca}: {verify_text}"),
    }
}

/// The highest version in `min..=preferred` within what the broker offers;
/// Err(what it offers, if anything) when there is none.
pub fn pick_version(offered: Option<(i16, i16)>, min: i16, preferred: i16) -> std::result::Result<i16, Option<i16>> {
    let (low, high) = offered.ok_or(None)?;
    let v = preferred.min(high);
    if v < min || v < low { Err(Some(high)) } else { Ok(v) }
}

async fn tls_connect(addr: &str, tcp: TcpStream, tls: &Tls) -> Result<tokio_openssl::SslStream<TcpStream>> {
    use openssl::{
        pkey::PKey,
        ssl::{SslConnector, SslMethod},
        x509::{X509, store::X509StoreBuilder},
    };
    let fail = |reason: String| KafkaError::Tls { addr: addr.to_string(), reason };
    let mut builder = SslConnector::builder(SslMethod::tls_client()).map_err(|e| fail(e.to_string()))?;
    if let Some(ca) = &tls.ca_pem {
        // spec.tls.ca replaces the system's trust roots: only it is trusted.
        let certs = X509::stack_from_pem(ca).map_err(|e| fail(format!("spec.tls.ca is not a PEM CA bundle: {e}")))?;
        if certs.is_empty() {
            return Err(fail("spec.tls.ca holds no certificate".into()));
        }
        let mut store = X509StoreBuilder::new().map_err(|e| fail(e.to_string()))?;
        for cert in certs {
            store.add_cert(cert).map_err(|e| fail(e.to_string()))?;
        }
        builder.set_cert_store(store.build());
    }
    if let Some((cert, key)) = &tls.client_cert_pem {
        let cert = X509::from_pem(cert).map_err(|e| fail(format!("the client certificate is not PEM: {e}")))?;
        let key = PKey::private_key_from_pem(key).map_err(|e| fail(format!("the client key is not PEM: {e}")))?;
        builder.set_certificate(&cert).map_err(|e| fail(e.to_string()))?;
        builder.set_private_key(&key).map_err(|e| fail(e.to_string()))?;
    }
    let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr).trim_matches(['[', ']']);
    let ssl = builder.build().configure().and_then(|c| c.into_ssl(host)).map_err(|e| fail(e.to_string()))?;
    let mut stream = tokio_openssl::SslStream::new(ssl, tcp).map_err(|e| fail(e.to_string()))?;
    timeout(CONNECT_TIMEOUT, std::pin::Pin::new(&mut stream).connect())
        .await
        .map_err(|_| fail("no handshake within 10s".into()))?
        .map_err(|e| {
            let verify = stream.ssl().verify_result();
            fail(tls_failure(&e.to_string(), verify.as_raw(), verify.error_string(), tls.ca_pem.is_some()))
        })?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_is_the_highest_both_speak_or_the_api_is_unsupported() {
        assert_eq!(pick_version(Some((0, 12)), 4, 12), Ok(12));
        assert_eq!(pick_version(Some((0, 9)), 4, 12), Ok(9));
        assert_eq!(pick_version(Some((0, 3)), 4, 12), Err(Some(3)), "too old");
        assert_eq!(pick_version(Some((13, 15)), 4, 12), Err(Some(15)), "too new");
        assert_eq!(pick_version(None, 0, 3), Err(None), "not offered at all");
    }

    #[test]
    fn a_tls_failure_says_what_to_check() {
        let untrusted = tls_failure("handshake failed", 20, "unable to get local issuer certificate", true);
        assert_eq!(untrusted, "the broker's certificate is not trusted by spec.tls.ca: unable to get local issuer certificate");
        let mismatch = tls_failure("handshake failed", 62, "hostname mismatch", true);
        assert!(mismatch.contains("does not name this host"), "{mismatch}");
        assert_eq!(tls_failure("connection reset", 0, "ok", false), "connection reset");
    }
}

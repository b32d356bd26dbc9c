//! Readiness and liveness probes: exec, httpGet and tcpSocket.

use std::{net::Ipv4Addr, time::Duration};

use k8s_openapi::{
    api::core::v1::{Container, Probe},
    apimachinery::pkg::util::intstr::IntOrString,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::timeout,
};

use crate::spec::Launch;

/// Runs a probe once; true when it passed.
pub async fn check(probe: &Probe, c: &Container, ip: Ipv4Addr, launch: &Launch) -> bool {
    let limit = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    if let Some(exec) = &probe.exec {
        let Some((cmd, args)) = exec.command.as_deref().and_then(|c| c.split_first()) else {
            return false;
        };
        let run = tokio::process::Command::new(cmd)
            .args(args)
            .env_clear()
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&launch.cwd)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .status();
        return matches!(timeout(limit, run).await, Ok(Ok(s)) if s.success());
    }
    if let Some(http) = &probe.http_get {
        let Some(port) = port(&http.port, c) else { return false };
        let host = http.host.clone().unwrap_or_else(|| ip.to_string());
        let path = http.path.clone().unwrap_or_else(|| "/".into());
        return matches!(timeout(limit, http_get(&host, port, &path)).await, Ok(Some(code)) if (200..400).contains(&code));
    }
    if let Some(tcp) = &probe.tcp_socket {
        let Some(port) = port(&tcp.port, c) else { return false };
        let host = tcp.host.clone().unwrap_or_else(|| ip.to_string());
        return matches!(timeout(limit, TcpStream::connect((host.as_str(), port))).await, Ok(Ok(_)));
    }
    false
}

fn port(p: &IntOrString, c: &Container) -> Option<u16> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.name.as_deref() == Some(name.as_str()))
            .and_then(|cp| u16::try_from(cp.container_port).ok()),
    }
}

/// The smallest HTTP/1.1 GET that yields a status code.
async fn http_get(host: &str, port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect((host, port)).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.34\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        let read = s.read(&mut buf[n..]).await.ok()?;
        if read == 0 {
            break;
        }
        n += read;
    }
    let line = std::str::from_utf8(&buf[..n]).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}

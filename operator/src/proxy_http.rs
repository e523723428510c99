//! Reading a proxy pod's own report: `GET http://<podIP>:<metricsPort>/connects` or
//! `/federation`, with a short timeout and a bounded body, on a plain HTTP/1 connection (the
//! proxy's listener has no TLS), from every ready pod at once. Only the requests are here; what
//! the answers mean is `connect_status.rs`'s and `federation_status.rs`'s.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use tokio::net::TcpStream;

use crate::crd::ZmqProxy;

/// The path of the proxy's connect report.
pub const CONNECTS_PATH: &str = "/connects";
/// How long one pod is given to connect and answer.
pub const TIMEOUT: Duration = Duration::from_secs(2);
/// Largest answer read: 16 entries of a few hundred addresses each fit well below it.
pub const MAX_BODY: usize = 1 << 20;

/// The body of `GET <path>` at `ip:port`, or why there is none (one line).
pub async fn get(ip: IpAddr, port: u16, path: &str) -> Result<Bytes, String> {
    match tokio::time::timeout(TIMEOUT, get_unbounded(SocketAddr::new(ip, port), path)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {} s", TIMEOUT.as_secs())),
    }
}

/// `GET <path>` of each ready, not terminating pod of `zp` among `pods` (the first `most` by
/// name), asked at once: each pod's name with its answer's body or why there is none.
pub async fn ask_ready_pods(
    zp: &ZmqProxy,
    pods: &[&Pod],
    path: &str,
    most: usize,
) -> Vec<(String, Result<Bytes, String>)> {
    let port = u16::try_from(zp.spec.metrics_port).unwrap_or(0);
    let mut ready: Vec<(String, Option<IpAddr>)> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p))
        .map(|p| {
            let ip = p.status.as_ref().and_then(|s| s.pod_ip.as_deref());
            (p.name_any(), ip.and_then(|ip| ip.parse().ok()))
        })
        .collect();
    ready.sort();
    ready.truncate(most);
    let asks = ready.into_iter().map(|(pod, ip)| async move {
        let answer = match ip {
            Some(ip) => get(ip, port, path).await,
            None => Err("no pod IP yet".to_string()),
        };
        (pod, answer)
    });
    futures::future::join_all(asks).await
}

/// The pod's Ready condition is True.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn get_unbounded(addr: SocketAddr, path: &str) -> Result<Bytes, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    // Ends with the request: the connection is dropped with this task's future.
    let driver = tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let result = async {
        let response = sender.send_request(request).await.map_err(|e| format!("{addr}: {e}"))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("{addr}{path}: HTTP {status}"));
        }
        Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map(|body| body.to_bytes())
            .map_err(|e| format!("{addr}{path}: {e}"))
    }
    .await;
    driver.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-shot HTTP server on loopback that answers the first request with `response`.
    async fn answer_once(response: &'static str) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            if let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(response.as_bytes()).await;
            }
        });
        port
    }

    #[tokio::test]
    async fn a_body_comes_back_and_a_refusal_is_one_line() {
        let ok =
            "HTTP/1.1 200 OK\r\ncontent-length: 14\r\nconnection: close\r\n\r\n{\"sockets\":[]}";
        let port = answer_once(ok).await;
        let body = get(IpAddr::from([127, 0, 0, 1]), port, CONNECTS_PATH).await;
        assert_eq!(body.as_deref().ok(), Some(&b"{\"sockets\":[]}"[..]));
        let missing = "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
        let port = answer_once(missing).await;
        let e = get(IpAddr::from([127, 0, 0, 1]), port, CONNECTS_PATH).await.unwrap_err();
        assert!(e.contains("HTTP 404") && !e.contains('\n'), "{e}");
        // Nothing listens on a port just freed: a connect error, at once.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let e = get(IpAddr::from([127, 0, 0, 1]), port, CONNECTS_PATH).await.unwrap_err();
        assert!(e.starts_with("connect 127.0.0.1:"), "{e}");
    }
}

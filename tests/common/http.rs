//! A plain-HTTP client for the admin listener on loopback.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub struct Answer {
    pub status: u16,
    pub content_type: String,
    /// The `Retry-After` header, when the answer has one.
    pub retry_after: Option<String>,
    pub text: String,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.text))
    }
    /// The stable error code of a JSON error answer.
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code: {} {}", self.status, self.text))
            .to_string()
    }
}

/// A free loopback port (bound, read, released) for a daemon's admin listener.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub async fn request(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&serde_json::Value>,
) -> Result<Answer, String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = hyper::Request::builder().method(method).uri(url);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let bytes = match body {
        Some(b) => {
            req = req.header("content-type", "application/json");
            Bytes::from(b.to_string())
        }
        None => Bytes::new(),
    };
    let resp = tokio::time::timeout(
        Duration::from_secs(30),
        client.request(req.body(Full::new(bytes)).unwrap()),
    )
    .await
    .map_err(|_| "timed out".to_string())?
    .map_err(|e| e.to_string())?;
    Ok(answer(resp).await)
}

pub async fn get(url: &str) -> Answer {
    request("GET", url, None, None).await.unwrap()
}

/// Waits until `url` answers with `status` (the listener may still be starting).
pub async fn wait_status(url: &str, status: u16, timeout: Duration) -> Answer {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = request("GET", url, None, None).await;
        if let Ok(a) = &last {
            if a.status == status {
                return last.unwrap();
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url} did not answer {status} within {timeout:?}; last: {:?}",
            last.map(|a| (a.status, a.text))
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A GET with one raw header (e.g. an Authorization of another scheme).
pub async fn request_with_header(url: &str, header: (&str, &str)) -> Answer {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = hyper::Request::builder()
        .uri(url)
        .header(header.0, header.1)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    answer(resp).await
}

async fn answer(resp: hyper::Response<hyper::body::Incoming>) -> Answer {
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text =
        String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).to_string();
    Answer {
        status,
        content_type,
        retry_after,
        text,
    }
}

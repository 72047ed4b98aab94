use super::tls::handshake;
use super::Probe;
use crate::config::HealthCheck;
use async_trait::async_trait;
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Alive when `GET <path>` answers one of the expected statuses.
pub struct HttpProbe {
    path: String,
    host: Option<String>,
    expect: Vec<u16>,
    tls: bool,
}

/// A status line and headers longer than this are not a health answer we wait for.
const MAX_HEAD: usize = 16 * 1024;

impl HttpProbe {
    pub fn new(check: &HealthCheck, tls: bool) -> Self {
        Self {
            path: check.path().to_owned(),
            host: check.host.clone(),
            expect: check.expected_statuses(),
            tls,
        }
    }

    async fn ask<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut stream: S,
        server: SocketAddr,
    ) -> Result<(), String> {
        let host = self.host.clone().unwrap_or_else(|| server.to_string());
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: lab-lb-health-check\r\nConnection: close\r\n\r\n",
            self.path
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("send: {e}"))?;
        let mut head = Vec::with_capacity(1024);
        let mut chunk = [0u8; 2048];
        loop {
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("closed before answering".into());
            }
            head.extend_from_slice(&chunk[..n]);
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&head) {
                Ok(httparse::Status::Complete(_)) => {
                    let status = response.code.unwrap_or(0);
                    return if self.expect.contains(&status) {
                        Ok(())
                    } else {
                        Err(format!(
                            "status {status}, expected one of {:?}",
                            self.expect
                        ))
                    };
                }
                Ok(httparse::Status::Partial) if head.len() < MAX_HEAD => {}
                Ok(httparse::Status::Partial) => return Err("response head too long".into()),
                Err(e) => return Err(format!("not an HTTP response: {e}")),
            }
        }
    }
}

#[async_trait]
impl Probe for HttpProbe {
    async fn probe(&self, server: SocketAddr) -> Result<(), String> {
        if self.tls {
            let stream = handshake(server, self.host.as_deref()).await?;
            self.ask(stream, server).await
        } else {
            let stream = tokio::net::TcpStream::connect(server)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            self.ask(stream, server).await
        }
    }
}

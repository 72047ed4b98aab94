use super::Probe;
use async_trait::async_trait;
use std::net::SocketAddr;

/// Alive when it accepts a TCP connection.
pub struct TcpProbe;

#[async_trait]
impl Probe for TcpProbe {
    async fn probe(&self, server: SocketAddr) -> Result<(), String> {
        tokio::net::TcpStream::connect(server)
            .await
            .map(drop)
            .map_err(|e| format!("connect: {e}"))
    }
}

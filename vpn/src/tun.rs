//! The virtual interface: a TUN device (`/dev/net/tun`, `IFF_NO_PI`) read in batches.

use std::io;
use tun_rs::{AsyncDevice, DeviceBuilder};

/// Largest IP packet the data path handles (the TUN MTU is far below it).
pub const MAX_PACKET: usize = 65535;

/// Packets taken from the device per wake-up.
pub const BATCH: usize = 64;

/// The gateway's TUN device, open for reading and writing packets.
pub struct Tun {
    device: AsyncDevice,
    /// The interface name.
    pub name: String,
}

impl Tun {
    /// Creates `name` with `mtu`. Not persistent: the kernel removes it when the daemon exits.
    pub fn create(name: &str, mtu: u16) -> io::Result<Self> {
        let device = DeviceBuilder::new()
            .name(name)
            .mtu(mtu)
            .packet_information(false)
            .build_async()?;
        Ok(Self {
            device,
            name: name.to_owned(),
        })
    }

    /// Waits for packets and reads up to `buffers.len()` of them; `lengths[i]` is the size of
    /// the packet in `buffers[i]`. Returns how many were read.
    pub async fn read_batch(
        &self,
        buffers: &mut [Vec<u8>],
        lengths: &mut [usize],
    ) -> io::Result<usize> {
        let mut count = 0;
        while count == 0 {
            self.device.readable().await?;
            while count < buffers.len() {
                match self.device.try_recv(&mut buffers[count]) {
                    Ok(n) => {
                        lengths[count] = n;
                        count += 1;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if count > 0 => {
                        tracing::debug!(error = %e, "TUN read failed after a partial batch");
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(count)
    }

    /// Writes packets to the device (towards the gateway's own stack and its networks).
    pub async fn write_batch(&self, packets: &[&[u8]]) -> io::Result<()> {
        for packet in packets {
            self.device.send(packet).await?;
        }
        Ok(())
    }
}

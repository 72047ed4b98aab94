//! MAC addresses, and the ones machines get when `lab.toml` gives none.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An Ethernet MAC address, written `BC:24:11:00:0C:81`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MacAddr([u8; 6]);

/// The prefix Proxmox VE uses for the MACs it generates.
pub const PROXMOX_OUI: [u8; 3] = [0xBC, 0x24, 0x11];

/// Text that is not six colon-separated pairs of hex digits; it holds that text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a MAC address like BC:24:11:00:0C:81")]
pub struct MacError(String);

impl MacAddr {
    /// The MAC of NIC `index` of machine `vmid`, under Proxmox's prefix: the low 24 bits hold
    /// `vmid * 16 + index`, so every VMID below 1,048,576 with up to 16 NICs gets its own, and the
    /// same plan always gives the same addresses (DHCP reservations depend on it).
    pub fn derived(vmid: u32, index: u8) -> Self {
        let low = (vmid.wrapping_mul(16).wrapping_add(u32::from(index & 0x0F))) & 0x00FF_FFFF;
        let [_, a, b, c] = low.to_be_bytes();
        Self([PROXMOX_OUI[0], PROXMOX_OUI[1], PROXMOX_OUI[2], a, b, c])
    }

    /// The six bytes, first on the wire first.
    pub fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// Multicast addresses cannot be a NIC's own.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }
}

impl std::str::FromStr for MacAddr {
    type Err = MacError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(MacError(s.to_owned()));
        }
        let mut octets = [0u8; 6];
        for (octet, part) in octets.iter_mut().zip(parts) {
            if part.len() != 2 {
                return Err(MacError(s.to_owned()));
            }
            *octet = u8::from_str_radix(part, 16).map_err(|_| MacError(s.to_owned()))?;
        }
        Ok(Self(octets))
    }
}

impl TryFrom<String> for MacAddr {
    type Error = MacError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<MacAddr> for String {
    fn from(mac: MacAddr) -> Self {
        mac.to_string()
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02X}:{b:02X}:{c:02X}:{d:02X}:{e:02X}:{g:02X}")
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MacAddr({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_macs_are_stable_and_distinct() {
        assert_eq!(MacAddr::derived(200, 1).to_string(), "BC:24:11:00:0C:81");
        assert_eq!(MacAddr::derived(200, 1), MacAddr::derived(200, 1));
        assert_ne!(MacAddr::derived(200, 0), MacAddr::derived(201, 0));
        assert!(!MacAddr::derived(999_999, 15).is_multicast());
    }

    #[test]
    fn parses_and_prints_colon_hex() {
        let mac: MacAddr = "bc:24:11:0a:0b:0c".parse().unwrap();
        assert_eq!(mac.to_string(), "BC:24:11:0A:0B:0C");
        assert!("bc:24:11:0a:0b".parse::<MacAddr>().is_err());
        assert!("zz:24:11:0a:0b:0c".parse::<MacAddr>().is_err());
    }
}

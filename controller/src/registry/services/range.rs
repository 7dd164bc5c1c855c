//! The two ranges Services draw from, as flags and config give them: the service
//! network (`--service-cidr 10.96.0.0/16`) and the node-port range
//! (`--service-node-port-range 30000-32767`).

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// kube-apiserver's bound on an IPv4 service network: at most a /12 (a million
/// addresses), so a bad flag cannot make the allocator scan billions.
const WIDEST_PREFIX: u8 = 12;
/// A /30 has two usable addresses, one of them reserved: the narrowest that serves.
const NARROWEST_PREFIX: u8 = 30;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("{0:?} is not an IPv4 CIDR such as 10.96.0.0/16")]
    NotCidr(String),
    #[error("{text:?}: the prefix must be between /{WIDEST_PREFIX} and /{NARROWEST_PREFIX}")]
    Prefix { text: String },
    #[error("{text:?} has host bits set: the network address is {network}/{prefix}")]
    HostBits {
        text: String,
        network: Ipv4Addr,
        prefix: u8,
    },
    #[error(
        "{0:?} is not a port range such as 30000-32767 (first-last, 1 to 65535, first <= last)"
    )]
    NotPortRange(String),
}

/// An IPv4 service network. Its network and broadcast addresses are never handed
/// out, and its first usable address is kept for the `kubernetes` Service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Cidr {
    network: u32,
    prefix: u8,
}

impl Ipv4Cidr {
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.network)
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    /// Is `ip` one that may be allocated (in the network, neither its network nor
    /// its broadcast address)?
    pub fn contains_usable(&self, ip: Ipv4Addr) -> bool {
        let ip = u64::from(u32::from(ip));
        let first = u64::from(self.network);
        ip > first && ip < first + self.size() - 1
    }

    /// The first usable address, which Kubernetes gives the `kubernetes` Service
    /// (`10.96.0.1`): never picked at random.
    pub fn reserved(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.network + 1)
    }

    /// The addresses random allocation draws from: after the reserved one, up to
    /// the broadcast address (excluded), as (first, count).
    pub(super) fn dynamic(&self) -> (u32, u64) {
        (self.network + 2, self.size() - 3)
    }
}

impl Default for Ipv4Cidr {
    /// `10.96.0.0/16`, kubeadm's default.
    fn default() -> Self {
        Ipv4Cidr {
            network: u32::from(Ipv4Addr::new(10, 96, 0, 0)),
            prefix: 16,
        }
    }
}

impl FromStr for Ipv4Cidr {
    type Err = RangeError;

    fn from_str(text: &str) -> Result<Self, RangeError> {
        let not_cidr = || RangeError::NotCidr(text.to_string());
        let (ip, prefix) = text.trim().split_once('/').ok_or_else(not_cidr)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| not_cidr())?;
        let prefix: u8 = prefix.parse().map_err(|_| not_cidr())?;
        if !(WIDEST_PREFIX..=NARROWEST_PREFIX).contains(&prefix) {
            return Err(RangeError::Prefix {
                text: text.to_string(),
            });
        }
        let mask = u32::MAX << (32 - u32::from(prefix));
        let network = u32::from(ip) & mask;
        if network != u32::from(ip) {
            return Err(RangeError::HostBits {
                text: text.to_string(),
                network: Ipv4Addr::from(network),
                prefix,
            });
        }
        Ok(Ipv4Cidr { network, prefix })
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), self.prefix)
    }
}

/// An inclusive range of node ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn contains(&self, port: i32) -> bool {
        (i32::from(self.first)..=i32::from(self.last)).contains(&port)
    }

    pub(super) fn len(&self) -> u64 {
        u64::from(self.last - self.first) + 1
    }
}

impl Default for PortRange {
    /// `30000-32767`, Kubernetes' default.
    fn default() -> Self {
        PortRange {
            first: 30000,
            last: 32767,
        }
    }
}

impl FromStr for PortRange {
    type Err = RangeError;

    fn from_str(text: &str) -> Result<Self, RangeError> {
        let bad = || RangeError::NotPortRange(text.to_string());
        let (first, last) = text.trim().split_once('-').ok_or_else(bad)?;
        let first: u16 = first.trim().parse().map_err(|_| bad())?;
        let last: u16 = last.trim().parse().map_err(|_| bad())?;
        if first == 0 || first > last {
            return Err(bad());
        }
        Ok(PortRange { first, last })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cidr_parses_and_keeps_its_ends_and_first_address_back() {
        let c: Ipv4Cidr = "10.96.0.0/16".parse().unwrap();
        assert_eq!(c, Ipv4Cidr::default());
        assert_eq!(c.to_string(), "10.96.0.0/16");
        assert!(!c.contains_usable("10.96.0.0".parse().unwrap()));
        assert!(!c.contains_usable("10.96.255.255".parse().unwrap()));
        assert!(c.contains_usable("10.96.0.1".parse().unwrap()));
        assert!(c.contains_usable("10.96.255.254".parse().unwrap()));
        assert!(!c.contains_usable("10.97.0.1".parse().unwrap()));
        assert_eq!(c.reserved(), Ipv4Addr::new(10, 96, 0, 1));
        assert_eq!(c.dynamic(), (u32::from(Ipv4Addr::new(10, 96, 0, 2)), 65533));
    }

    #[test]
    fn bad_cidrs_say_what_is_wrong() {
        assert!(matches!(
            "10.96.0.0".parse::<Ipv4Cidr>(),
            Err(RangeError::NotCidr(_))
        ));
        assert!(matches!(
            "10.0.0.0/8".parse::<Ipv4Cidr>(),
            Err(RangeError::Prefix { .. })
        ));
        assert!(matches!(
            "10.0.0.0/31".parse::<Ipv4Cidr>(),
            Err(RangeError::Prefix { .. })
        ));
        let err = "10.96.0.5/16".parse::<Ipv4Cidr>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "\"10.96.0.5/16\" has host bits set: the network address is 10.96.0.0/16"
        );
    }

    #[test]
    fn port_ranges_parse_as_first_dash_last() {
        assert_eq!(
            "30000-32767".parse::<PortRange>().unwrap(),
            PortRange::default()
        );
        assert_eq!("31000-31000".parse::<PortRange>().unwrap().len(), 1);
        for bad in ["32767-30000", "0-10", "30000", "a-b", "30000-70000"] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad}");
        }
    }
}

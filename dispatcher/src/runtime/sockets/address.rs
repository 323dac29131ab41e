//! Addresses as the socket extension encodes them: `WasiAddress` in and out, ports, and the
//! `WasiAddrinfo` records `sock_getaddrinfo` fills (`docs/wasmedge-socket-abi.md` §2, §4).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use wasmtime::Caller;

use crate::runtime::abi::socket_types::{
    address_family, addrinfo, protocol, sockaddr, socket_type, wasi_address,
};
use crate::runtime::abi::{Errno, GuestMemory, GuestPtr};
use crate::runtime::host::{with_mem, Cap, Host};

/// A port as the guest passes it (a `u32`): `EINVAL` past 65535, never truncated.
pub fn port(raw: u32) -> Result<u16, Errno> {
    u16::try_from(raw).map_err(|_| Errno::Inval)
}

/// Reads a `WasiAddress {buf, size}` holding raw IP bytes (4 or 16 of them).
pub fn read_ip(m: &GuestMemory<'_>, addr: GuestPtr) -> Result<IpAddr, Errno> {
    let buf = m.read_ptr(addr.add(wasi_address::BUF)?)?;
    let len = m.read_u32(addr.add(wasi_address::LEN)?)?;
    let bytes = m.bytes(buf, len)?;
    match len {
        wasi_address::V4_LEN => {
            let mut b = [0u8; wasi_address::V4_LEN as usize];
            b.copy_from_slice(bytes);
            Ok(IpAddr::V4(Ipv4Addr::from(b)))
        }
        wasi_address::V6_LEN => {
            let mut b = [0u8; wasi_address::V6_LEN as usize];
            b.copy_from_slice(bytes);
            Ok(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => Err(Errno::Inval),
    }
}

/// Reads the `WasiAddress` and port of `sock_bind` / `sock_connect`.
pub fn read_socket_addr(
    m: &GuestMemory<'_>,
    addr: GuestPtr,
    raw_port: u32,
) -> Result<SocketAddr, Errno> {
    Ok(SocketAddr::new(read_ip(m, addr)?, port(raw_port)?))
}

/// Writes an address as `get{local,peer}addr` return it: IP bytes into the `WasiAddress`'s
/// buffer (which must hold 16), the family (1 or 2) and the port, each as a `u32`.
pub fn write_addr(
    m: &mut GuestMemory<'_>,
    addr: SocketAddr,
    addr_ptr: GuestPtr,
    family_out: GuestPtr,
    port_out: GuestPtr,
) -> Result<(), Errno> {
    let buf = m.read_ptr(addr_ptr.add(wasi_address::BUF)?)?;
    let size = m.read_u32(addr_ptr.add(wasi_address::LEN)?)?;
    if size < wasi_address::V6_LEN {
        return Err(Errno::Inval);
    }
    let family = match addr.ip() {
        IpAddr::V4(ip) => {
            m.write_bytes(buf, &ip.octets())?;
            address_family::INET4
        }
        IpAddr::V6(ip) => {
            m.write_bytes(buf, &ip.octets())?;
            address_family::INET6
        }
    };
    m.write_u32(family_out, u32::from(family))?;
    m.write_u32(port_out, u32::from(addr.port()))
}

/// Fills the guest-allocated `WasiAddrinfo` record at `rec` (and the `WasiSockaddr` and
/// `sa_data` it points at) with an IPv4 stream address, port 0 (the guest patches the port
/// in). Returns the record's `ai_next`.
fn write_addrinfo(m: &mut GuestMemory<'_>, rec: GuestPtr, ip: Ipv4Addr) -> Result<GuestPtr, Errno> {
    // The whole record first, so a record that does not fit is left untouched.
    m.bytes(rec, addrinfo::SIZE)?;
    m.write_u16(rec.add(addrinfo::FLAGS)?, 0)?;
    m.write_u8(rec.add(addrinfo::FAMILY)?, address_family::INET4)?;
    m.write_u8(rec.add(addrinfo::SOCKTYPE)?, socket_type::STREAM)?;
    m.write_u8(rec.add(addrinfo::PROTOCOL)?, protocol::TCP)?;
    m.write_u32(rec.add(addrinfo::ADDRLEN)?, addrinfo::V4_ADDRLEN)?;
    m.write_u32(rec.add(addrinfo::CANONNAMELEN)?, 0)?;
    let sa = m.read_ptr(rec.add(addrinfo::ADDR)?)?;
    m.write_u8(sa.add(sockaddr::FAMILY)?, address_family::INET4)?;
    m.write_u32(sa.add(sockaddr::DATA_LEN)?, sockaddr::V4_DATA_LEN)?;
    let data = m.read_ptr(sa.add(sockaddr::DATA)?)?;
    let data = m.bytes_mut(data, sockaddr::V4_DATA_LEN)?;
    data.fill(0);
    data[sockaddr::V4_DATA_IP..sockaddr::V4_DATA_IP + 4].copy_from_slice(&ip.octets());
    m.read_ptr(rec.add(addrinfo::NEXT)?)
}

/// The longest name `sock_getaddrinfo` looks up: DNS's limit.
const MAX_NAME: usize = 253;

/// `sock_getaddrinfo`: resolves `node` (only if the allow-list names it), remembers what it
/// resolved to for the connect check, and fills up to `max` of the guest's records with the
/// IPv4 addresses (the guest crates decode no others).
pub async fn getaddrinfo(
    c: &mut Caller<'_, Host>,
    node: GuestPtr,
    node_len: u32,
    res: GuestPtr,
    max: u32,
    res_len: GuestPtr,
) -> Result<(), Errno> {
    let name = with_mem(c, |m, _| {
        let raw = m.bytes(node, node_len)?;
        let raw = raw.split(|&b| b == 0).next().unwrap_or_default();
        // No host name is longer than 253 bytes (RFC 1035).
        if raw.len() > MAX_NAME {
            return Err(Errno::Inval);
        }
        String::from_utf8(raw.to_vec()).map_err(|_| Errno::Inval)
    })?;
    let ips: Vec<IpAddr> = if let Ok(ip) = name.parse::<IpAddr>() {
        vec![ip]
    } else {
        let host = c.data_mut();
        if !host.net.allows_name(&name) {
            tracing::warn!(function = %host.function, name, "network: name lookup denied: the name is not in the manifest's [network] allow list");
            return Err(Errno::Acces);
        }
        host.within(Cap::Lookups, host.lookups, host.caps.lookups)?;
        host.lookups += 1;
        match tokio::net::lookup_host((name.as_str(), 0)).await {
            Ok(addrs) => addrs.map(|a| a.ip()).collect(),
            Err(e) => {
                tracing::debug!(name, "lookup failed: {e}");
                return Err(Errno::Io);
            }
        }
    };
    let mut v4: Vec<Ipv4Addr> = ips
        .iter()
        .filter_map(|ip| match ip {
            IpAddr::V4(v4) => Some(*v4),
            IpAddr::V6(_) => None,
        })
        .collect();
    v4.dedup();
    v4.truncate(usize::try_from(max).unwrap_or(usize::MAX));
    let host = c.data_mut();
    for ip in &v4 {
        host.resolved.push((name.clone(), IpAddr::V4(*ip)));
    }
    with_mem(c, |m, _| {
        let mut rec = m.read_ptr(res)?;
        // At most `max` (a u32) entries.
        let mut n = 0u32;
        for ip in &v4 {
            rec = write_addrinfo(m, rec, *ip)?;
            n += 1;
        }
        m.write_u32(res_len, n)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ip_addresses() {
        let mut raw = vec![0u8; 64];
        let mut m = GuestMemory::new(&mut raw);
        m.write_u32(GuestPtr(0), 16).unwrap();
        m.write_u32(GuestPtr(4), 4).unwrap();
        m.write_bytes(GuestPtr(16), &[127, 0, 0, 1]).unwrap();
        assert_eq!(
            read_ip(&m, GuestPtr(0)),
            Ok(IpAddr::V4(Ipv4Addr::LOCALHOST))
        );
        m.write_u32(GuestPtr(4), 16).unwrap();
        m.write_bytes(GuestPtr(16), &Ipv6Addr::LOCALHOST.octets())
            .unwrap();
        assert_eq!(
            read_ip(&m, GuestPtr(0)),
            Ok(IpAddr::V6(Ipv6Addr::LOCALHOST))
        );
        m.write_u32(GuestPtr(4), 5).unwrap();
        assert_eq!(read_ip(&m, GuestPtr(0)), Err(Errno::Inval));
        // A buffer past the end of memory, and a WasiAddress that is.
        m.write_u32(GuestPtr(4), 60).unwrap();
        assert_eq!(read_ip(&m, GuestPtr(0)), Err(Errno::Fault));
        assert_eq!(read_ip(&m, GuestPtr(60)), Err(Errno::Fault));
    }

    #[test]
    fn ports_are_never_truncated() {
        assert_eq!(port(0), Ok(0));
        assert_eq!(port(65535), Ok(65535));
        assert_eq!(port(65536), Err(Errno::Inval));
        assert_eq!(port(u32::MAX), Err(Errno::Inval));
        let mut raw = vec![0u8; 64];
        let mut m = GuestMemory::new(&mut raw);
        m.write_u32(GuestPtr(0), 16).unwrap();
        m.write_u32(GuestPtr(4), 4).unwrap();
        m.write_bytes(GuestPtr(16), &[10, 0, 0, 1]).unwrap();
        assert_eq!(
            read_socket_addr(&m, GuestPtr(0), 3306),
            Ok("10.0.0.1:3306".parse().unwrap())
        );
        assert_eq!(
            read_socket_addr(&m, GuestPtr(0), 3306 + 65536),
            Err(Errno::Inval)
        );
    }

    #[test]
    fn writes_addresses_for_the_guest() {
        let mut raw = vec![0u8; 64];
        let mut m = GuestMemory::new(&mut raw);
        m.write_u32(GuestPtr(0), 32).unwrap();
        m.write_u32(GuestPtr(4), 16).unwrap();
        let addr = "10.1.2.3:3306".parse().unwrap();
        write_addr(&mut m, addr, GuestPtr(0), GuestPtr(8), GuestPtr(12)).unwrap();
        assert_eq!(m.bytes(GuestPtr(32), 4), Ok(&[10, 1, 2, 3][..]));
        assert_eq!(m.read_u32(GuestPtr(8)), Ok(1));
        assert_eq!(m.read_u32(GuestPtr(12)), Ok(3306));
        // WasmEdge wants a 16-byte buffer, whatever the family.
        m.write_u32(GuestPtr(4), 4).unwrap();
        assert_eq!(
            write_addr(&mut m, addr, GuestPtr(0), GuestPtr(8), GuestPtr(12)),
            Err(Errno::Inval)
        );
        // A buffer at the very end of memory.
        m.write_u32(GuestPtr(0), 62).unwrap();
        m.write_u32(GuestPtr(4), 16).unwrap();
        assert_eq!(
            write_addr(&mut m, addr, GuestPtr(0), GuestPtr(8), GuestPtr(12)),
            Err(Errno::Fault)
        );
    }

    #[test]
    fn fills_addrinfo_records_in_place() {
        // Record at 0 (28 bytes), its sockaddr at 32, the sockaddr's data at 48.
        let mut raw = vec![0xaau8; 80];
        let mut m = GuestMemory::new(&mut raw);
        m.write_u32(GuestPtr(12), 32).unwrap();
        m.write_u32(GuestPtr(24), 0x1234).unwrap();
        m.write_u32(GuestPtr(40), 48).unwrap();
        let next = write_addrinfo(&mut m, GuestPtr(0), Ipv4Addr::new(192, 0, 2, 7)).unwrap();
        assert_eq!(next, GuestPtr(0x1234));
        assert_eq!(m.read_u16(GuestPtr(0)), Ok(0));
        assert_eq!(m.bytes(GuestPtr(2), 3), Ok(&[1, 2, 1][..]));
        assert_eq!(m.read_u32(GuestPtr(8)), Ok(16));
        assert_eq!(m.read_u32(GuestPtr(20)), Ok(0));
        assert_eq!(m.read_u8(GuestPtr(32)), Ok(1));
        assert_eq!(m.read_u32(GuestPtr(36)), Ok(14));
        assert_eq!(
            m.bytes(GuestPtr(48), 14),
            Ok(&[0, 0, 192, 0, 2, 7, 0, 0, 0, 0, 0, 0, 0, 0][..])
        );
        // A record that runs off the end, or a sockaddr pointer that does.
        assert_eq!(
            write_addrinfo(&mut m, GuestPtr(60), Ipv4Addr::LOCALHOST),
            Err(Errno::Fault)
        );
        m.write_u32(GuestPtr(12), 78).unwrap();
        assert_eq!(
            write_addrinfo(&mut m, GuestPtr(0), Ipv4Addr::LOCALHOST),
            Err(Errno::Fault)
        );
    }
}

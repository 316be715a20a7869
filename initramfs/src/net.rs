//! Network bring-up. DHCP is busybox's `udhcpc` (from Debian's busybox-static), one per
//! interface with carrier, in the foreground as our child so it keeps renewing the lease
//! during a long capture; its event script (below) writes the address with busybox `ip`,
//! `/etc/resolv.conf`, and a lease file the init waits for. A static `p2v.net=` uses `ip`
//! directly. Then the first interface from which the server answers a TCP connect wins.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cmdline::{Config, Net, StaticNet};
use crate::hw;

/// The udhcpc event script installed at [`SCRIPT`] by the image builder.
pub const UDHCPC_SCRIPT: &str = r#"#!/bin/sh
# udhcpc event script of the P2V live image (see initramfs/src/net.rs).
mkdir -p /run/p2v
case "$1" in
deconfig)
    ip -4 addr flush dev "$interface"
    ip link set dev "$interface" up
    ;;
bound|renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    for r in $router; do
        ip route replace default via "$r" dev "$interface" metric "${metric:-0}" && break
    done
    if [ -n "$dns" ] && [ ! -s /etc/resolv.conf ]; then
        : > /etc/resolv.conf
        [ -n "$domain" ] && echo "search $domain" >> /etc/resolv.conf
        for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf; done
    fi
    echo "$ip/${mask:-24} router=${router:-none} dns=${dns:-none}" > "/run/p2v/lease.$interface"
    ;;
esac
exit 0
"#;

/// Where the image carries the script.
pub const SCRIPT: &str = "/etc/p2v/udhcpc.script";

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("/bin/ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Whether the server accepts a TCP connection now.
pub fn reachable(host: &str, port: u16) -> bool {
    let Ok(addrs) = (host, port).to_socket_addrs() else {
        return false;
    };
    addrs
        .into_iter()
        .any(|a| TcpStream::connect_timeout(&a, Duration::from_secs(3)).is_ok())
}

/// The running network: DHCP clients stay alive as long as this does.
#[derive(Debug)]
pub struct Network {
    pub clients: Vec<Child>,
    pub interface: String,
    pub address: String,
}

/// Brings links up and waits briefly for carrier; returns the interfaces with carrier (all of
/// them if none reports it: some drivers never do).
fn links() -> Vec<String> {
    let nics = hw::nics();
    for n in &nics {
        if let Err(e) = ip(&["link", "set", "dev", n, "up"]) {
            crate::say!("{e}");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let up: Vec<String> = nics.iter().filter(|n| hw::carrier(n)).cloned().collect();
        if !up.is_empty() || Instant::now() > deadline {
            return if up.is_empty() { nics } else { up };
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Configures the network and waits until the server is reachable. Never gives up: it says
/// what it is waiting for every 30 s, for the operator to fix a cable or a DHCP scope.
pub fn bring_up(config: &Config) -> Network {
    let _ = std::fs::create_dir_all("/run/p2v");
    let _ = ip(&["link", "set", "dev", "lo", "up"]);
    let mut nics = links();
    if nics.is_empty() {
        crate::say!("no network interface found: is the NIC's driver in the image? waiting for one to appear");
        while nics.is_empty() {
            std::thread::sleep(Duration::from_secs(2));
            nics = links();
        }
    }
    crate::say!(
        "network: {} on {}",
        match &config.net {
            Net::Dhcp => "dhcp".to_string(),
            Net::Static(s) => format!("static {}/{}", s.address, s.prefix),
        },
        nics.join(", ")
    );
    let mut clients = Vec::new();
    match &config.net {
        Net::Static(s) => {
            let dev = s.device.clone().unwrap_or_else(|| nics[0].clone());
            if let Err(e) = configure_static(&dev, s) {
                crate::say!("static network on {dev}: {e}");
            } else {
                let _ = std::fs::write(
                    format!("/run/p2v/lease.{dev}"),
                    format!("{}/{}", s.address, s.prefix),
                );
            }
        }
        Net::Dhcp => {
            for (i, n) in nics.iter().enumerate() {
                let child = Command::new("/bin/udhcpc")
                    .args([
                        "-f",
                        "-i",
                        n,
                        "-s",
                        SCRIPT,
                        "-t",
                        "5",
                        "-T",
                        "3",
                        "-A",
                        "5",
                        "-x",
                        "hostname:p2v-live",
                    ])
                    .env("metric", i.to_string())
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn();
                match child {
                    Ok(c) => clients.push(c),
                    Err(e) => crate::say!("udhcpc on {n}: {e}"),
                }
            }
        }
    }
    let start = Instant::now();
    let mut last_note = Instant::now();
    loop {
        for n in &nics {
            let lease = Path::new("/run/p2v").join(format!("lease.{n}"));
            if let Ok(text) = std::fs::read_to_string(&lease) {
                if reachable(&config.server_host, config.server_port) {
                    let address = text.trim().to_string();
                    crate::say!("network: {n} {address}; server {} reachable", config.server);
                    return Network {
                        clients,
                        interface: n.clone(),
                        address,
                    };
                }
            }
        }
        if last_note.elapsed() >= Duration::from_secs(30) {
            last_note = Instant::now();
            let leases: Vec<String> = nics
                .iter()
                .filter_map(|n| {
                    std::fs::read_to_string(format!("/run/p2v/lease.{n}"))
                        .ok()
                        .map(|l| format!("{n} {}", l.trim()))
                })
                .collect();
            if leases.is_empty() {
                crate::say!(
                    "still no address after {} s on {} (check the cable, the VLAN, the DHCP server; or set p2v.net=ADDRESS/PREFIX,gw=...,dns=...)",
                    start.elapsed().as_secs(),
                    nics.join(", ")
                );
            } else {
                crate::say!(
                    "have {} but {}:{} does not answer (check p2v.server=, routing, firewalls, that p2v-server is running)",
                    leases.join("; "),
                    config.server_host,
                    config.server_port
                );
            }
        }
        crate::sys::reap_zombies();
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn configure_static(dev: &str, s: &StaticNet) -> Result<(), String> {
    ip(&["-4", "addr", "flush", "dev", dev])?;
    ip(&[
        "addr",
        "add",
        &format!("{}/{}", s.address, s.prefix),
        "dev",
        dev,
    ])?;
    ip(&["link", "set", "dev", dev, "up"])?;
    if let Some(gw) = s.gateway {
        ip(&[
            "route",
            "replace",
            "default",
            "via",
            &gw.to_string(),
            "dev",
            dev,
        ])?;
    }
    if !s.dns.is_empty() {
        let text: String = s.dns.iter().map(|d| format!("nameserver {d}\n")).collect();
        std::fs::write("/etc/resolv.conf", text).map_err(|e| format!("/etc/resolv.conf: {e}"))?;
    }
    Ok(())
}

//! Hosts in network namespaces: each process of a test cluster gets its own namespace and
//! address on a bridge, so advertised addresses, peer dialing and timeouts work as between real
//! machines, and the test can make the network fail the way real ones do.
//!
//! A partition drops packets without a word (no FIN, no RST, no ICMP): the hosts' neighbour
//! tables get a permanent entry for the other side with a hardware address nobody has, so
//! frames leave and vanish on the bridge. (Filtering with `tc` needs classifier modules this
//! kernel may lack, and iptables may not be installed; the neighbour table is always there.)
//! Delay and loss use `tc netem` where the kernel has it, and otherwise a userspace shaper in
//! the test process (`common::impair`).
//!
//! Creating namespaces needs root; [`Net::create`] says why it cannot, and the tests skip with
//! that message. Everything is removed on drop, and namespaces a killed test run left behind are
//! removed by the next one.
use super::impair::{Impairment, Shaper};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A hardware address no host has: frames sent to it are lost on the bridge.
const NOWHERE: &str = "02:00:00:00:0d:0d";

/// One host: a namespace with one interface (`eth0`) on the bridge.
pub struct Host {
    /// The namespace's name (`ip netns exec NAME ...`).
    pub ns: String,
    /// Its IPv4 address on the bridge.
    pub ip: String,
    /// The bridge-side end of its veth pair.
    outside: String,
}

/// A bridge with hosts on it; the test process itself reaches them through the bridge's own
/// address (it plays the clients and the operator).
pub struct Net {
    bridge: String,
    /// The address of the test process on the bridge.
    pub local_ip: String,
    pub hosts: Vec<Host>,
    /// Userspace impairments in place, by host.
    shapers: std::sync::Mutex<Vec<(usize, Shaper)>>,
}

/// Runs `ip ARGS` (or another program) and fails with its stderr.
pub(super) fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program).args(args).output().map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{program} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Runs `ip ARGS` inside namespace `ns`.
fn ip_in(ns: &str, args: &[&str]) -> Result<(), String> {
    let mut all = vec!["netns", "exec", ns, "ip"];
    all.extend_from_slice(args);
    run("ip", &all)
}

/// True when a process with this PID exists.
fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes the namespaces and bridges of test runs that are gone (killed before their drop).
fn remove_leftovers() {
    let listed = Command::new("ip").args(["netns", "list"]).output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    for name in listed.lines().filter_map(|l| l.split_whitespace().next()) {
        let pid = name.strip_prefix("vasto-").and_then(|r| r.split('-').next()).and_then(|p| p.parse().ok());
        if pid.is_some_and(|p| !alive(p)) {
            let _ = run("ip", &["netns", "del", name]);
        }
    }
    // Bridges (`vb<pid>n<n>`) and the host-side veth ends (`vh<pid>n<n>i<i>`, shown as
    // `name@peer`) of dead test processes: a veth end whose namespace went first stays behind.
    let links = Command::new("ip").args(["-o", "link", "show"]).output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    for name in links.lines().filter_map(|l| l.split(": ").nth(1)).map(|n| n.split('@').next().unwrap_or(n)) {
        let owner = name.strip_prefix("vb").or_else(|| name.strip_prefix("vh"));
        let pid = owner.and_then(|r| r.split('n').next()).and_then(|p| u32::from_str_radix(p, 16).ok());
        if pid.is_some_and(|p| !alive(p)) {
            let _ = run("ip", &["link", "del", name]);
        }
    }
}

impl Net {
    /// A bridge with `hosts` namespaces on it, or why that cannot be done here.
    pub fn create(hosts: usize) -> Result<Net, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("network namespaces need root".into());
        }
        run("ip", &["-V"]).map_err(|e| format!("iproute2 is not usable: {e}"))?;
        remove_leftovers();
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let subnet = format!("10.213.{}", (pid.wrapping_mul(7).wrapping_add(n)) % 250);
        let bridge = format!("vb{pid:x}n{n:x}");
        let local_ip = format!("{subnet}.1");
        let mut net = Net { bridge: bridge.clone(), local_ip: local_ip.clone(), hosts: Vec::new(), shapers: Default::default() };
        run("ip", &["link", "add", &bridge, "type", "bridge"])?;
        run("ip", &["addr", "add", &format!("{local_ip}/24"), "dev", &bridge])?;
        run("ip", &["link", "set", &bridge, "up"])?;
        for i in 0..hosts {
            let ns = format!("vasto-{pid}-{n}-{i}");
            let ip = format!("{subnet}.{}", 10 + i);
            let (outside, inside) = (format!("vh{pid:x}n{n:x}i{i:x}"), format!("vi{pid:x}n{n:x}i{i:x}"));
            run("ip", &["netns", "add", &ns])?;
            net.hosts.push(Host { ns: ns.clone(), ip: ip.clone(), outside: outside.clone() });
            run("ip", &["link", "add", &outside, "type", "veth", "peer", "name", &inside])?;
            run("ip", &["link", "set", &inside, "netns", &ns])?;
            run("ip", &["link", "set", &outside, "master", &bridge])?;
            run("ip", &["link", "set", &outside, "up"])?;
            ip_in(&ns, &["link", "set", &inside, "name", "eth0"])?;
            ip_in(&ns, &["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
            ip_in(&ns, &["link", "set", "eth0", "up"])?;
            ip_in(&ns, &["link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    /// Drops every packet between hosts `a` and `b`, both ways, without telling either.
    pub fn cut(&self, a: usize, b: usize) {
        self.unreachable_from(a, &self.hosts[b].ip);
        self.unreachable_from(b, &self.hosts[a].ip);
    }

    /// Drops every packet between host `a` and everyone: the other hosts and the test process.
    pub fn isolate(&self, a: usize) {
        for b in (0..self.hosts.len()).filter(|b| *b != a) {
            self.cut(a, b);
        }
        self.unreachable_from(a, &self.local_ip);
        run("ip", &["neigh", "replace", &self.hosts[a].ip, "lladdr", NOWHERE, "dev", &self.bridge, "nud", "permanent"]).expect("cut the test process off");
    }

    /// Ends every cut that involves host `a` (addresses are learnt again on the next packet).
    pub fn heal(&self, a: usize) {
        for b in (0..self.hosts.len()).filter(|b| *b != a) {
            let _ = ip_in(&self.hosts[a].ns, &["neigh", "del", &self.hosts[b].ip, "dev", "eth0"]);
            let _ = ip_in(&self.hosts[b].ns, &["neigh", "del", &self.hosts[a].ip, "dev", "eth0"]);
        }
        let _ = ip_in(&self.hosts[a].ns, &["neigh", "del", &self.local_ip, "dev", "eth0"]);
        let _ = run("ip", &["neigh", "del", &self.hosts[a].ip, "dev", &self.bridge]);
    }

    /// Host `from` sends whatever it addresses to `ip` into the void.
    fn unreachable_from(&self, from: usize, ip: &str) {
        ip_in(&self.hosts[from].ns, &["neigh", "replace", ip, "lladdr", NOWHERE, "dev", "eth0", "nud", "permanent"]).expect("cut a host off");
    }

    /// Impairs everything host `a` sends: with `tc netem` where the kernel has it, otherwise
    /// with a userspace shaper (`seed` picks its losses and delays). Returns which was used.
    pub fn impair(&self, a: usize, impairment: Impairment, seed: u64) -> Result<&'static str, String> {
        let ms = |d: std::time::Duration| format!("{}ms", d.as_millis());
        let (delay, jitter, loss) = (ms(impairment.delay), ms(impairment.jitter), format!("{}%", impairment.loss * 100.0));
        let netem = ["netns", "exec", &self.hosts[a].ns, "tc", "qdisc", "replace", "dev", "eth0", "root", "netem", "delay", &delay, &jitter, "loss", &loss];
        if run("ip", &netem).is_ok() {
            return Ok("tc netem");
        }
        let tap = format!("{}t", self.hosts[a].outside);
        let shaper = Shaper::start(&self.bridge, &self.hosts[a].outside, &tap, impairment, seed)?;
        self.shapers.lock().unwrap_or_else(|p| p.into_inner()).push((a, shaper));
        Ok("a userspace shaper (no netem in this kernel)")
    }

    /// Removes host `a`'s impairment. Returns the frames the shaper forwarded from the host,
    /// dropped, and forwarded to it (zeros under netem).
    pub fn unimpair(&self, a: usize) -> [u64; 3] {
        let _ = run("ip", &["netns", "exec", &self.hosts[a].ns, "tc", "qdisc", "del", "dev", "eth0", "root"]);
        let mut shapers = self.shapers.lock().unwrap_or_else(|p| p.into_inner());
        let Some(at) = shapers.iter().position(|(host, _)| *host == a) else { return [0; 3] };
        shapers.swap_remove(at).1.stop()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for host in &self.hosts {
            let _ = run("ip", &["netns", "del", &host.ns]);
        }
        let _ = run("ip", &["link", "del", &self.bridge]);
    }
}

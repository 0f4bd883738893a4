//! Delay, jitter and loss in userspace, for kernels without `tc netem`: what one host sends
//! goes through this test process, which drops each frame with a probability and holds the rest
//! for the delay plus or minus the jitter, in order.
//!
//! The host's bridge-side veth end is taken off the bridge and a TAP device on the bridge takes
//! its place. Frames the host sends arrive on the veth end (an `AF_PACKET` socket) and are
//! written to the TAP after the delay; frames for the host come out of the TAP and are sent on
//! the veth end at once. Both sides carry a virtio-net header, so checksum offload and GSO
//! survive the trip (without it, frames whose checksum the kernel never filled in would be
//! dropped by the receiver). A lost GSO frame loses all of its segments, as with netem.
use rand::{RngExt, SeedableRng};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// How frames a host sends are impaired.
#[derive(Debug, Clone, Copy)]
pub struct Impairment {
    /// Added to every frame.
    pub delay: Duration,
    /// Each frame's delay varies uniformly by up to this much either way.
    pub jitter: Duration,
    /// Probability of dropping a frame (0 to 1).
    pub loss: f64,
}

/// A running impairment; stopping or dropping it restores the direct path.
pub struct Shaper {
    bridge: String,
    outside: String,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// What it did: frames forwarded from the host, dropped, and forwarded to the host.
    pub counts: Arc<[std::sync::atomic::AtomicU64; 3]>,
}

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const PACKET_VNET_HDR: libc::c_int = 15;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
/// Room for a GSO frame and its virtio-net header.
const FRAME_ROOM: usize = 65_536 + 64;

fn os_error(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// Creates TAP device `name` (in this process's namespace) and returns its descriptor.
fn open_tap(name: &str) -> Result<OwnedFd, String> {
    // SAFETY: a plain open of a device node; the result is checked.
    let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(os_error("open /dev/net/tun"));
    }
    // SAFETY: fd was just opened and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // struct ifreq: the name, then the flags (a short) in the union.
    let mut ifreq = [0u8; 40];
    let bytes = name.as_bytes();
    if bytes.len() >= libc::IFNAMSIZ {
        return Err(format!("interface name {name} is too long"));
    }
    ifreq[..bytes.len()].copy_from_slice(bytes);
    ifreq[16..18].copy_from_slice(&(IFF_TAP | IFF_NO_PI | IFF_VNET_HDR).to_ne_bytes());
    // SAFETY: ifreq is a 40-byte buffer laid out as struct ifreq, live for the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, ifreq.as_mut_ptr()) } < 0 {
        return Err(os_error("TUNSETIFF"));
    }
    Ok(fd)
}

/// A raw socket bound to interface `name` that reads what arrives on it (not what it sends)
/// and sends frames out of it, both with a virtio-net header.
fn open_packet_socket(name: &str) -> Result<OwnedFd, String> {
    let c_name = std::ffi::CString::new(name).map_err(|e| e.to_string())?;
    // SAFETY: c_name is a valid C string for the call.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index == 0 {
        return Err(os_error(&format!("no interface {name}")));
    }
    let all = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: creating a socket has no preconditions; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::c_int::from(all)) };
    if fd < 0 {
        return Err(os_error("AF_PACKET socket"));
    }
    // SAFETY: fd was just created and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    for option in [PACKET_VNET_HDR, PACKET_IGNORE_OUTGOING] {
        let on: libc::c_int = 1;
        // SAFETY: the option value is a live c_int of the given size.
        let set = unsafe {
            libc::setsockopt(fd.as_raw_fd(), libc::SOL_PACKET, option, (&on as *const libc::c_int).cast(), size_of::<libc::c_int>() as libc::socklen_t)
        };
        if set < 0 {
            return Err(os_error("setsockopt SOL_PACKET"));
        }
    }
    // SAFETY: sockaddr_ll is plain data; zeroed is a valid value.
    let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    address.sll_family = libc::AF_PACKET as u16;
    address.sll_protocol = all;
    address.sll_ifindex = i32::try_from(index).map_err(|e| e.to_string())?;
    // SAFETY: address is a live sockaddr_ll of the given size.
    let bound = unsafe { libc::bind(fd.as_raw_fd(), (&address as *const libc::sockaddr_ll).cast(), size_of::<libc::sockaddr_ll>() as libc::socklen_t) };
    if bound < 0 {
        return Err(os_error("bind AF_PACKET"));
    }
    Ok(fd)
}

/// Waits up to 50 ms for `fd` to be readable, then reads one frame; `None` on a timeout.
fn read_frame(fd: &OwnedFd, buf: &mut [u8]) -> Option<usize> {
    let mut poll = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one live pollfd.
    if unsafe { libc::poll(&mut poll, 1, 50) } <= 0 {
        return None;
    }
    // SAFETY: buf is live and writable for its length.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    usize::try_from(n).ok().filter(|n| *n > 0)
}

/// Writes one frame; a frame the kernel refuses is lost, as on a real link.
fn write_frame(fd: &OwnedFd, frame: &[u8]) {
    // SAFETY: frame is live and readable for its length.
    let _ = unsafe { libc::write(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
}

impl Shaper {
    /// Puts the impairment between veth end `outside` (on `bridge`) and the bridge, using a TAP
    /// device named `tap`. `seed` picks which frames are lost and how long each is held.
    pub fn start(bridge: &str, outside: &str, tap: &str, impairment: Impairment, seed: u64) -> Result<Shaper, String> {
        let tap_fd = open_tap(tap)?;
        super::netns::run("ip", &["link", "set", tap, "master", bridge])?;
        super::netns::run("ip", &["link", "set", tap, "up"])?;
        // Off the bridge, the veth end must not answer ARP for this machine's addresses itself.
        super::netns::run("ip", &["link", "set", outside, "nomaster"])?;
        super::netns::run("ip", &["link", "set", outside, "arp", "off"])?;
        let packet_fd = match open_packet_socket(outside) {
            Ok(fd) => fd,
            Err(e) => {
                reattach(bridge, outside);
                return Err(e);
            }
        };
        let (tap_fd, packet_fd) = (Arc::new(tap_fd), Arc::new(packet_fd));
        let stop = Arc::new(AtomicBool::new(false));
        let counts: Arc<[std::sync::atomic::AtomicU64; 3]> = Arc::default();
        let (held_tx, held_rx) = mpsc::channel::<(Instant, Vec<u8>)>();
        let mut threads = Vec::new();
        // From the host: drop or stamp with a due time.
        threads.push({
            let (stop, counts, packet_fd) = (Arc::clone(&stop), Arc::clone(&counts), Arc::clone(&packet_fd));
            std::thread::spawn(move || {
                let mut rng = rand_xorshift::XorShiftRng::seed_from_u64(seed);
                let mut buf = vec![0u8; FRAME_ROOM];
                let mut last_due = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    let Some(n) = read_frame(&packet_fd, &mut buf) else { continue };
                    if rng.random_bool(impairment.loss) {
                        counts[1].fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let jitter = impairment.jitter.as_secs_f64() * (rng.random::<f64>() * 2.0 - 1.0);
                    let held = Duration::from_secs_f64((impairment.delay.as_secs_f64() + jitter).max(0.0));
                    // In order, like a link: a frame never overtakes the one before it.
                    last_due = last_due.max(Instant::now() + held);
                    if held_tx.send((last_due, buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            })
        });
        // Held frames, released onto the bridge when due.
        threads.push({
            let (stop, counts, tap_fd) = (Arc::clone(&stop), Arc::clone(&counts), Arc::clone(&tap_fd));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok((due, frame)) = held_rx.recv_timeout(Duration::from_millis(50)) else { continue };
                    std::thread::sleep(due.saturating_duration_since(Instant::now()));
                    write_frame(&tap_fd, &frame);
                    counts[0].fetch_add(1, Ordering::Relaxed);
                }
            })
        });
        // To the host: passed on at once.
        threads.push({
            let (stop, counts) = (Arc::clone(&stop), Arc::clone(&counts));
            std::thread::spawn(move || {
                let mut buf = vec![0u8; FRAME_ROOM];
                while !stop.load(Ordering::Relaxed) {
                    let Some(n) = read_frame(&tap_fd, &mut buf) else { continue };
                    write_frame(&packet_fd, &buf[..n]);
                    counts[2].fetch_add(1, Ordering::Relaxed);
                }
            })
        });
        Ok(Shaper { bridge: bridge.to_owned(), outside: outside.to_owned(), stop, threads, counts })
    }

    /// Stops forwarding and puts the veth end back on the bridge; returns the frames forwarded
    /// from the host, dropped, and forwarded to it.
    pub fn stop(mut self) -> [u64; 3] {
        self.halt();
        [0, 1, 2].map(|i| self.counts[i].load(Ordering::Relaxed))
    }

    /// Ends the threads (the TAP goes with its descriptor) and restores the direct path; the
    /// second call finds nothing to do.
    fn halt(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        reattach(&self.bridge, &self.outside);
    }
}

/// Puts veth end `outside` back on `bridge`, answering ARP again.
fn reattach(bridge: &str, outside: &str) {
    let _ = super::netns::run("ip", &["link", "set", outside, "arp", "on"]);
    let _ = super::netns::run("ip", &["link", "set", outside, "master", bridge]);
}

impl Drop for Shaper {
    fn drop(&mut self) {
        self.halt();
    }
}

// SPDX-License-Identifier: MPL-2.0
//! A bad network between two network namespaces of this machine: a veth
//! pair, bandwidth from `tc tbf`, and delay, jitter, loss and partitions
//! from a small userspace impairer on an NFQUEUE rule (this kernel has no
//! `sch_netem`). Needs root, `ip`, `tc` and `iptables-legacy`.

use std::collections::BinaryHeap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the link does to each packet, in both directions.
#[derive(Debug, Clone, Copy, Default)]
pub struct Impairment {
    pub delay: Duration,
    /// Each packet's delay is `delay` plus or minus up to this.
    pub jitter: Duration,
    /// Packets dropped, in parts per thousand.
    pub loss_per_mille: u32,
}

/// Counts the impairer keeps.
#[derive(Debug, Default)]
pub struct Counts {
    pub packets: AtomicU64,
    pub dropped: AtomicU64,
}

/// Why a bad network cannot be made here, if it cannot.
pub fn unavailable() -> Option<String> {
    if unsafe { libc::geteuid() } != 0 {
        return Some("it needs root (network namespaces, iptables)".into());
    }
    for (tool, arg) in [("ip", "-V"), ("tc", "-V"), ("iptables-legacy", "--version")] {
        let ok = Command::new(tool)
            .arg(arg)
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            return Some(format!("{tool} is missing (iproute2, iptables)"));
        }
    }
    None
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A namespace `ns` joined to this one by a veth pair, with the link's
/// impairments; undone when dropped.
pub struct Link {
    pub ns: String,
    /// The address on this side, and the namespace's.
    pub here: String,
    pub there: String,
    host_if: String,
    queue: u16,
    pub impairment: Arc<Mutex<Impairment>>,
    /// While true every packet is dropped: a partition.
    pub partitioned: Arc<AtomicBool>,
    pub counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
    impairer: Option<std::thread::JoinHandle<()>>,
}

impl Link {
    /// Makes the pair; `id` (1 to 250) keeps parallel links apart, and
    /// `rate_kbit` limits each direction (0: no limit).
    pub fn new(id: u8, rate_kbit: u32) -> Link {
        let ns = format!("kvsnet{id}-{}", std::process::id());
        // Leftover rules of a test that was killed.
        for rule in Link::rules(&format!("kvsa{id}"), 1000 + u16::from(id)) {
            while Command::new("iptables-legacy")
                .arg("-D")
                .args(&rule)
                .output()
                .is_ok_and(|o| o.status.success())
            {}
        }
        let host_if = format!("kvsa{id}");
        let ns_if = format!("kvsb{id}");
        let (here, there) = (format!("10.231.{id}.1"), format!("10.231.{id}.2"));
        // Leftovers of a test that was killed.
        let _ = Command::new("ip").args(["link", "del", &host_if]).output();
        sh(&["ip", "netns", "add", &ns]);
        sh(&[
            "ip", "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ]);
        sh(&["ip", "link", "set", &ns_if, "netns", &ns]);
        sh(&["ip", "addr", "add", &format!("{here}/30"), "dev", &host_if]);
        sh(&["ip", "link", "set", &host_if, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["ip", "netns", "exec", &ns];
            all.extend_from_slice(args);
            sh(&all);
        };
        inside(&["ip", "addr", "add", &format!("{there}/30"), "dev", &ns_if]);
        inside(&["ip", "link", "set", &ns_if, "up"]);
        inside(&["ip", "link", "set", "lo", "up"]);
        if rate_kbit > 0 {
            let rate = format!("{rate_kbit}kbit");
            let tbf = [
                "root", "tbf", "rate", &rate, "burst", "16kb", "latency", "2s",
            ];
            let mut host = vec!["tc", "qdisc", "add", "dev", &host_if];
            host.extend_from_slice(&tbf);
            sh(&host);
            let mut far = vec!["tc", "qdisc", "add", "dev", &ns_if];
            far.extend_from_slice(&tbf);
            inside(&far);
        }
        // Both directions through one queue of this namespace (queues are
        // per namespace): what leaves on the veth, and what comes in on it.
        let queue = 1000 + u16::from(id);
        for rule in Link::rules(&host_if, queue) {
            let mut add = vec!["iptables-legacy", "-A"];
            add.extend(rule.iter().map(String::as_str));
            sh(&add);
        }
        let mut link = Link {
            ns,
            here,
            there,
            host_if,
            queue,
            impairment: Arc::default(),
            partitioned: Arc::default(),
            counts: Arc::default(),
            stop: Arc::default(),
            impairer: None,
        };
        let ready = Arc::new(AtomicBool::new(false));
        let (imp, part, counts, stop, up) = (
            link.impairment.clone(),
            link.partitioned.clone(),
            link.counts.clone(),
            link.stop.clone(),
            ready.clone(),
        );
        link.impairer = Some(std::thread::spawn(move || {
            nfqueue::run(queue, imp, part, counts, stop, up)
        }));
        let wait = Instant::now();
        while !ready.load(Ordering::SeqCst) {
            assert!(
                wait.elapsed() < Duration::from_secs(5),
                "the impairer did not bind"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        link
    }

    /// The iptables rules (after -A or -D) that queue the veth's packets.
    fn rules(host_if: &str, queue: u16) -> [Vec<String>; 2] {
        let q = queue.to_string();
        let rule = |chain: &str, dir: &str| {
            [chain, dir, host_if, "-j", "NFQUEUE", "--queue-num", &q]
                .map(String::from)
                .to_vec()
        };
        [rule("OUTPUT", "-o"), rule("INPUT", "-i")]
    }

    /// A TCP listener on the namespace's address: a thread enters the
    /// namespace, binds, and the socket stays there wherever it is used.
    pub fn listen(&self, port: u16) -> std::net::TcpListener {
        let (ns, addr) = (self.ns.clone(), format!("{}:{port}", self.there));
        std::thread::spawn(move || {
            let file = std::fs::File::open(format!("/var/run/netns/{ns}")).unwrap();
            use std::os::fd::AsRawFd;
            let entered = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(entered, 0, "setns: {}", std::io::Error::last_os_error());
            std::net::TcpListener::bind(&addr).unwrap()
        })
        .join()
        .unwrap()
    }

    pub fn set(&self, impairment: Impairment) {
        *self.impairment.lock().unwrap() = impairment;
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.impairer.take() {
            let _ = t.join();
        }
        for rule in Link::rules(&self.host_if, self.queue) {
            let _ = Command::new("iptables-legacy")
                .arg("-D")
                .args(rule)
                .output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

/// A packet held back, due at `at`.
#[derive(PartialEq, Eq)]
struct Held {
    at: Instant,
    id: u32,
}

impl Ord for Held {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.at.cmp(&self.at).then(other.id.cmp(&self.id))
    }
}

impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// The NFQUEUE side, on a raw netlink socket: each queued packet's id is
/// read (no payload is copied), then a verdict is given when its delay is
/// up: accept, or drop for the loss or a partition.
mod nfqueue {
    use super::*;

    const NETLINK_NETFILTER: i32 = 12;
    const NFNL_SUBSYS_QUEUE: u16 = 3;
    const NFQNL_MSG_PACKET: u16 = 0;
    const NFQNL_MSG_VERDICT: u16 = 1;
    const NFQNL_MSG_CONFIG: u16 = 2;
    const NFQA_PACKET_HDR: u16 = 1;
    const NFQA_VERDICT_HDR: u16 = 2;
    const NFQA_CFG_CMD: u16 = 1;
    const NFQA_CFG_PARAMS: u16 = 2;
    const NFQNL_CFG_CMD_BIND: u8 = 1;
    const NFQNL_COPY_META: u8 = 1;
    const NLM_F_REQUEST: u16 = 1;
    const NF_DROP: u32 = 0;
    const NF_ACCEPT: u32 = 1;

    /// A netfilter netlink message: header, nfgenmsg, attributes.
    fn message(kind: u16, queue: u16, attrs: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut body = vec![libc::AF_UNSPEC as u8, 0];
        body.extend_from_slice(&queue.to_be_bytes());
        for (t, data) in attrs {
            let len = 4 + data.len();
            body.extend_from_slice(&(len as u16).to_ne_bytes());
            body.extend_from_slice(&t.to_ne_bytes());
            body.extend_from_slice(data);
            body.resize(body.len().next_multiple_of(4), 0);
        }
        let mut msg = Vec::with_capacity(16 + body.len());
        msg.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&((NFNL_SUBSYS_QUEUE << 8) | kind).to_ne_bytes());
        msg.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(&body);
        msg
    }

    fn send(fd: i32, msg: &[u8]) {
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        let sent = unsafe {
            libc::sendto(
                fd,
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        assert!(
            sent >= 0,
            "netlink send: {}",
            std::io::Error::last_os_error()
        );
    }

    fn verdict(fd: i32, queue: u16, id: u32, accept: bool) {
        let mut hdr = (if accept { NF_ACCEPT } else { NF_DROP })
            .to_be_bytes()
            .to_vec();
        hdr.extend_from_slice(&id.to_be_bytes());
        send(
            fd,
            &message(NFQNL_MSG_VERDICT, queue, &[(NFQA_VERDICT_HDR, hdr)]),
        );
    }

    /// The packet ids in a batch of netlink messages.
    fn packet_ids(buf: &[u8]) -> Vec<u32> {
        let mut ids = Vec::new();
        let mut at = 0;
        while at + 16 <= buf.len() {
            let len = u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap()) as usize;
            let kind = u16::from_ne_bytes(buf[at + 4..at + 6].try_into().unwrap());
            if len < 16 || at + len > buf.len() {
                break;
            }
            if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET {
                let mut a = at + 20;
                while a + 4 <= at + len {
                    let alen = u16::from_ne_bytes(buf[a..a + 2].try_into().unwrap()) as usize;
                    let atype = u16::from_ne_bytes(buf[a + 2..a + 4].try_into().unwrap()) & 0x7fff;
                    if alen < 4 {
                        break;
                    }
                    if atype == NFQA_PACKET_HDR && alen >= 8 {
                        ids.push(u32::from_be_bytes(buf[a + 4..a + 8].try_into().unwrap()));
                    }
                    a += alen.next_multiple_of(4);
                }
            }
            at += len.next_multiple_of(4);
        }
        ids
    }

    pub fn run(
        queue: u16,
        impairment: Arc<Mutex<Impairment>>,
        partitioned: Arc<AtomicBool>,
        counts: Arc<Counts>,
        stop: Arc<AtomicBool>,
        ready: Arc<AtomicBool>,
    ) {
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, NETLINK_NETFILTER) };
        assert!(
            fd >= 0,
            "netlink socket: {}",
            std::io::Error::last_os_error()
        );
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 2000,
        };
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            );
            let size: i32 = 4 << 20;
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&size as *const i32).cast(),
                4,
            );
        }
        let mut cmd = vec![NFQNL_CFG_CMD_BIND, 0];
        cmd.extend_from_slice(&(libc::AF_INET as u16).to_be_bytes());
        send(
            fd,
            &message(NFQNL_MSG_CONFIG, queue, &[(NFQA_CFG_CMD, cmd)]),
        );
        let mut params = 0u32.to_be_bytes().to_vec();
        params.push(NFQNL_COPY_META);
        send(
            fd,
            &message(NFQNL_MSG_CONFIG, queue, &[(NFQA_CFG_PARAMS, params)]),
        );
        ready.store(true, Ordering::SeqCst);
        let mut held: BinaryHeap<Held> = BinaryHeap::new();
        let mut rng = 0x2545_F491_4F6C_DD1Du64;
        let mut random = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut buf = vec![0u8; 1 << 16];
        while !stop.load(Ordering::SeqCst) {
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            let now = Instant::now();
            if n > 0 {
                let imp = *impairment.lock().unwrap();
                for id in packet_ids(&buf[..n as usize]) {
                    counts.packets.fetch_add(1, Ordering::Relaxed);
                    let lost =
                        imp.loss_per_mille > 0 && (random() % 1000) < u64::from(imp.loss_per_mille);
                    if lost || partitioned.load(Ordering::SeqCst) {
                        counts.dropped.fetch_add(1, Ordering::Relaxed);
                        verdict(fd, queue, id, false);
                        continue;
                    }
                    let jitter = imp.jitter.as_micros() as u64;
                    let spread = if jitter > 0 {
                        random() % (2 * jitter + 1)
                    } else {
                        0
                    };
                    let delay =
                        (imp.delay + Duration::from_micros(spread)).saturating_sub(imp.jitter);
                    if delay.is_zero() {
                        verdict(fd, queue, id, true);
                    } else {
                        held.push(Held {
                            at: now + delay,
                            id,
                        });
                    }
                }
            }
            let now = Instant::now();
            while held.peek().is_some_and(|h| h.at <= now) {
                let h = held.pop().unwrap();
                // A partition that began while it waited takes it too.
                let accept = !partitioned.load(Ordering::SeqCst);
                if !accept {
                    counts.dropped.fetch_add(1, Ordering::Relaxed);
                }
                verdict(fd, queue, h.id, accept);
            }
        }
        for h in held.drain() {
            verdict(fd, queue, h.id, true);
        }
        unsafe { libc::close(fd) };
    }
}

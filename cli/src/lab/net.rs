//! The lab's network: one network namespace per host on a bridge of its own, each host's link
//! shaped with `tc`, nothing in the caller's namespace.
//!
//! Every namespace is held by a `sleep` process that created it (`unshare(CLONE_NEWNET)`)
//! and dies with this process (`PR_SET_PDEATHSIG`), so no namespace is ever named in
//! `/run/netns` and none outlives the lab, whatever ends it: when its holder dies, the
//! namespace goes, and its veths with it. Commands run inside a namespace by `setns` into the
//! holder's namespace between fork and exec.
#![allow(
    clippy::disallowed_methods,
    reason = "waits a bounded time for a namespace holder process to start; no network rule"
)]

use std::fs::File;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

/// The lab's subnet: it exists only inside the lab's namespaces.
const SUBNET: [u8; 2] = [10, 77];

/// A namespace, alive as long as its holder process.
pub struct Netns {
    holder: Child,
    fd: File,
}

impl Netns {
    /// Creates a network namespace held by a child `sleep`.
    fn new() -> std::io::Result<Netns> {
        let mut cmd = Command::new("sleep");
        cmd.arg("infinity")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: between fork and exec only async-signal-safe system calls are made.
        unsafe {
            cmd.pre_exec(|| {
                die_with_parent()?;
                if libc::unshare(libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let holder = cmd.spawn()?;
        // The namespace exists once the holder has called unshare; wait for its link to
        // differ from ours (a few microseconds).
        let ours = std::fs::read_link("/proc/self/ns/net")?;
        let path = format!("/proc/{}/ns/net", holder.id());
        let start = std::time::Instant::now();
        loop {
            match std::fs::read_link(&path) {
                Ok(l) if l != ours => break,
                _ if start.elapsed() > std::time::Duration::from_secs(5) => {
                    return Err(std::io::Error::other("a namespace holder did not start"));
                }
                _ => std::thread::sleep(std::time::Duration::from_millis(1)),
            }
        }
        let fd = File::open(&path)?;
        Ok(Netns { holder, fd })
    }

    /// The holder's PID (what `ip link … netns PID` takes).
    fn pid(&self) -> u32 {
        self.holder.id()
    }

    /// `program args…` to be run inside this namespace, dying with this process.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        enter(&mut cmd, self.fd.as_raw_fd());
        cmd
    }

    /// Runs `ip -batch -` in the namespace with `lines` as its input.
    fn ip_batch(&self, lines: &str) -> std::io::Result<()> {
        run_with_input(self.command("ip").args(["-batch", "-"]), lines)
    }

    /// Runs `tc -batch -` in the namespace with `lines` as its input.
    fn tc_batch(&self, lines: &str) -> std::io::Result<()> {
        run_with_input(self.command("tc").args(["-batch", "-"]), lines)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// Makes `cmd` enter the network namespace `fd` and die with this process.
fn enter(cmd: &mut Command, fd: RawFd) {
    // SAFETY: between fork and exec only async-signal-safe system calls are made, on a file
    // descriptor that stays open in the parent for the child's whole start.
    unsafe {
        cmd.pre_exec(move || {
            die_with_parent()?;
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Asks the kernel to kill the calling (child) process when its parent dies; if the parent
/// is already gone, exits.
fn die_with_parent() -> std::io::Result<()> {
    // SAFETY: prctl and getppid are async-signal-safe system calls without pointers.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::getppid() == 1 {
            libc::_exit(1);
        }
    }
    Ok(())
}

fn run_with_input(cmd: &mut Command, input: &str) -> std::io::Result<()> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if out.status.success() {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(std::io::Error::other(
            err.lines().next().unwrap_or("failed").trim().to_owned(),
        ))
    }
}

/// The lab's hosts: `hosts` namespaces on a bridge in a namespace of its own, each with
/// `eth0` at [`Lan::addr`] and, with a rate, its link shaped to it in both directions.
pub struct Lan {
    /// Host namespaces, host 0 first.
    pub hosts: Vec<Netns>,
    /// The switch, dropped after the hosts (field order); the veths go with them.
    _switch: Netns,
}

impl Lan {
    /// Builds the LAN. `rate_bps`: each host's link rate in bits per second, both ways.
    pub fn up(hosts: usize, rate_bps: Option<u64>) -> std::io::Result<Lan> {
        let switch = Netns::new()?;
        switch.ip_batch(
            "link add br0 type bridge mcast_snooping 0\nlink set br0 up\nlink set lo up\n",
        )?;
        let mut list = Vec::with_capacity(hosts);
        let mut sw = String::new();
        let mut shape_sw = String::new();
        for k in 0..hosts {
            let h = Netns::new()?;
            sw.push_str(&format!(
                "link add v{k} type veth peer name eth0 netns {}\nlink set v{k} master br0 up\n",
                h.pid()
            ));
            list.push(h);
        }
        switch.ip_batch(&sw)?;
        for (k, h) in list.iter().enumerate() {
            h.ip_batch(&format!(
                "addr add {}/16 dev eth0\nlink set eth0 up\nlink set lo up\n",
                Lan::addr(k)
            ))?;
            if let Some(rate) = rate_bps {
                h.tc_batch(&tbf("eth0", rate))?;
                shape_sw.push_str(&tbf(&format!("v{k}"), rate));
            }
        }
        if !shape_sw.is_empty() {
            switch.tc_batch(&shape_sw)?;
        }
        Ok(Lan {
            hosts: list,
            _switch: switch,
        })
    }

    /// Host `k`'s address.
    pub fn addr(k: usize) -> Ipv4Addr {
        let n = k + 1;
        Ipv4Addr::new(SUBNET[0], SUBNET[1], (n / 250) as u8, (n % 250) as u8 + 1)
    }
}

/// A token bucket on `dev`'s egress at `rate` bits/s. The bucket holds 4 ms of the rate (at
/// least 16 KiB, so a full-size datagram always fits) and the queue 50 ms.
fn tbf(dev: &str, rate: u64) -> String {
    let burst = (rate / 8 / 250).max(16 * 1024);
    format!("qdisc replace dev {dev} root tbf rate {rate}bit burst {burst} latency 50ms\n")
}

/// Whether namespaces can be made here (root, `ip` and `tc` present, the kernel allowing):
/// `Err` says why not.
pub fn available() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not root".into());
    }
    for tool in ["ip", "tc", "sleep"] {
        let found = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
        if !found {
            return Err(format!("`{tool}` not found (iproute2)"));
        }
    }
    let probe = Netns::new().map_err(|e| format!("cannot make a network namespace: {e}"))?;
    probe
        .ip_batch("link set lo up\n")
        .map_err(|e| format!("cannot configure a network namespace: {e}"))?;
    Ok(())
}

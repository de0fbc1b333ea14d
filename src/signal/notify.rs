//! systemd's notification protocol (`sd_notify(3)`): one datagram per message, sent to the
//! unix socket `NOTIFY_SOCKET` names (a path, or `@name` in the abstract namespace).

use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::time::Duration;

/// A connection to the service manager.
pub(super) struct Notify {
    socket: UnixDatagram,
    to: SocketAddr,
    /// Half of `WATCHDOG_USEC`, when systemd watches this process.
    keepalive: Option<Duration>,
}

impl Notify {
    /// The service manager's socket, if `NOTIFY_SOCKET` names one ota can reach.
    pub(super) fn from_env() -> Option<Notify> {
        let var = std::env::var_os("NOTIFY_SOCKET")?;
        let name = var.as_bytes();
        let to = match name.first() {
            Some(b'@') => SocketAddr::from_abstract_name(&name[1..]),
            Some(b'/') => SocketAddr::from_pathname(Path::new(&var)),
            _ => {
                tracing::warn!(
                    "NOTIFY_SOCKET is {:?}, which is neither a path nor an abstract socket \
                     (@name): ota does not notify the service manager",
                    String::from_utf8_lossy(name)
                );
                return None;
            }
        };
        // Non-blocking: a service manager that does not read must never stall an update
        // (a full queue loses a message, with a warning).
        let socket = UnixDatagram::unbound().and_then(|s| s.set_nonblocking(true).map(|()| s));
        match to.and_then(|to| Ok((to, socket?))) {
            Ok((to, socket)) => Some(Notify {
                socket,
                to,
                keepalive: keepalive(),
            }),
            Err(e) => {
                tracing::warn!("cannot use NOTIFY_SOCKET: {e}; ota does not notify systemd");
                None
            }
        }
    }

    /// How often `WATCHDOG=1` is due, when systemd asked for it.
    pub(super) fn keepalive_interval(&self) -> Option<Duration> {
        self.keepalive
    }

    /// Sends one message; a failure only warns.
    pub(super) fn send(&self, message: &str) {
        if let Err(e) = self.socket.send_to_addr(message.as_bytes(), &self.to) {
            tracing::warn!("could not tell systemd {message:?} through NOTIFY_SOCKET: {e}");
        }
    }
}

/// Half of `WATCHDOG_USEC` (as `sd_watchdog_enabled(3)` advises), unless `WATCHDOG_PID`
/// names another process (the variables were meant for a parent).
fn keepalive() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.trim().parse() != Ok(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec) / 2)
}

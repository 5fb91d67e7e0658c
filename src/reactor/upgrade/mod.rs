//! Upgrade in place: on SIGUSR2 the daemon becomes a new build of itself, same PID,
//! and keeps every listener and every connection, with its state.
//!
//! nginx made SIGUSR2 the binary-upgrade signal. nginx starts the new binary as a child
//! and lets old and new workers overlap; we can do something simpler, because all of
//! a connection that is not its socket is a plain value. A [`Connection`] holds its
//! state, its buffers and its deadlines, and touches neither socket nor clock, so a
//! connection *is* a descriptor plus a value. The descriptor survives `exec` if we
//! want it to; the value we write down and read back. So:
//!
//! 1. **Ask first** ([`check`]). SIGUSR2 runs `NEW-BINARY --resume-formats` and keeps
//!    serving while it answers (its stdout is one more source in the poll). Only if it
//!    exits 0 and lists our [`FORMAT`] do we go on; a binary that is missing, broken,
//!    too old, or silent for [`Timings::upgrade_check`](crate::config::Timings::upgrade_check) is refused, and the running image
//!    carries on as if nothing happened. During a drain, or while an upgrade is already
//!    under way, SIGUSR2 is refused.
//! 2. **Write down the state** ([`state`]), at the end of a turn of the loop, when no
//!    connection is half visited: the counters, and per connection its address, byte
//!    counts, flags and [`Connection`] value, into an anonymous, sealed memory file.
//! 3. **Hand over the descriptors** ([`fds`]): the memory file, the listeners (the
//!    `--metrics` one too) and the connections go, as `SCM_RIGHTS` messages, into one end
//!    of a Unix socket pair.
//!    The kernel keeps them there, as copies, until someone reads that socket.
//! 4. **`exec`** the new binary with the same arguments, passing the socket pair's
//!    other end (the only descriptor we let survive `exec`) the way systemd passes
//!    sockets: `LISTEN_FDS=1`, `LISTEN_PID`, `LISTEN_FDS_FIRST_FD`, plus
//!    `ECHOD_RESUME=1`. If `exec` fails, nothing was lost (the descriptors we sent are
//!    copies): we drop the pair and the file and keep serving.
//! 5. **Resume** (`resume.rs`): the new image adopts the socket pair, reads every
//!    descriptor and the state back, registers everything with a new poll, and runs.
//!    Clients notice a pause of a few milliseconds; what they sent meanwhile waits in
//!    the kernel's socket buffers, and new clients wait in the listeners' queues.
//!
//! Once `exec` has succeeded the old image is gone: a new binary that passed the check
//! but cannot resume (it crashes, or reads the state wrong) logs why and exits 1, and
//! the clients are lost. The check makes that unlikely; it cannot make it impossible.
//!
//! All of this is Linux-only (`memfd_create`, and the descriptor passing as written
//! here); elsewhere SIGUSR2 is logged as not supported.
//!
//! [`Connection`]: crate::protocol::conn::Connection

#[cfg(target_os = "linux")]
pub mod check;
#[cfg(target_os = "linux")]
pub mod fds;
#[cfg(target_os = "linux")]
mod handover;
#[cfg(target_os = "linux")]
mod resume;
#[cfg(target_os = "linux")]
pub mod state;

#[cfg(target_os = "linux")]
pub use handover::Upgrade;

#[cfg(not(target_os = "linux"))]
use crate::reactor::server::Server;

/// The one saved-state format this build writes and reads. A new binary must list it
/// in its `--resume-formats` answer to be run.
pub const FORMAT: &str = "echod-state-1";

/// The environment variable that tells a new image to resume instead of binding.
pub const RESUME_ENV: &str = "ECHOD_RESUME";

/// The saved-state formats this binary can resume from, for `--resume-formats` (none
/// where upgrades are not supported).
pub fn resume_formats() -> &'static [&'static str] {
    if cfg!(target_os = "linux") {
        &[FORMAT]
    } else {
        &[]
    }
}

/// True when the previous image of this process handed its state over to us
/// (`ECHOD_RESUME=1`): start with
/// [`Server::resume`](crate::reactor::server::Server::resume) instead of
/// [`Server::bind`](crate::reactor::server::Server::bind).
pub fn resume_requested() -> bool {
    std::env::var_os(RESUME_ENV).is_some_and(|v| v == "1")
}

#[cfg(not(target_os = "linux"))]
impl Server {
    /// SIGUSR2 where upgrades are not supported: say so, and carry on.
    pub(super) fn start_upgrade(&mut self) {
        log::warn!("SIGUSR2: upgrade in place is not supported on this platform");
    }

    /// Where upgrades are not supported there is nothing to resume from.
    pub fn resume(_config: &crate::config::Config) -> std::io::Result<Server> {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "upgrade in place is not supported on this platform",
        ))
    }
}

//! SIGUSR2, as the running loop sees it: check the new binary, then save the state,
//! queue the descriptors and `exec` (see [`crate::reactor::upgrade`] for the whole
//! story).

use std::ffi::OsString;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use log::{error, info, warn};

use super::check::{self, Check, Verdict};
use super::{fds, state, RESUME_ENV};
use crate::config::Config;
use crate::reactor::server::{Server, UPGRADE_CHECK};

/// What the loop keeps for SIGUSR2: the binary to become, and the upgrade under way.
#[derive(Debug)]
pub struct Upgrade {
    /// The binary to `exec`: `--upgrade-binary`, else the path we were started
    /// from, resolved at start-up (`None` if it could not be).
    binary: Option<PathBuf>,
    /// Our arguments at start-up, program name first: the new image gets the same.
    args: Vec<OsString>,
    /// The `--resume-formats` check under way.
    check: Option<Check>,
    /// The check passed: hand over at the end of this turn.
    due: bool,
    /// Checks we killed, until they are reaped.
    dying: Vec<Child>,
    /// How long a check may take ([`Timings::upgrade_check`](crate::config::Timings::upgrade_check)).
    check_timeout: Duration,
}

impl Upgrade {
    /// Resolves the binary and records the arguments, once, at start-up: by the
    /// time SIGUSR2 comes, the file at our path may be a different program (that
    /// is the point), and the working directory may have changed.
    pub fn new(config: &Config) -> Upgrade {
        let binary = match &config.upgrade_binary {
            Some(path) => Some(path.clone()),
            None => std::env::current_exe()
                .map_err(|e| warn!("cannot resolve our own binary for SIGUSR2: {e}"))
                .ok(),
        };
        Upgrade {
            binary,
            args: std::env::args_os().collect(),
            check: None,
            due: false,
            dying: Vec::new(),
            check_timeout: config.timings.upgrade_check,
        }
    }

    /// When the check must have answered, if one is under way.
    pub fn check_deadline(&self) -> Option<Instant> {
        self.check.as_ref().map(Check::deadline)
    }
}

impl Server {
    /// SIGUSR2: start the check of the new binary, unless we cannot upgrade now.
    pub(crate) fn start_upgrade(&mut self) {
        if self.drain_deadline.is_some() {
            info!("SIGUSR2 refused: shutting down");
            return;
        }
        if self.upgrade.check.is_some() || self.upgrade.due {
            info!("SIGUSR2 refused: an upgrade is already in progress");
            return;
        }
        check::reap(&mut self.upgrade.dying);
        if !self.upgrade.dying.is_empty() {
            // Its zombie would outlive us: the new image would not know to reap it.
            info!("SIGUSR2 refused: a killed upgrade check has not exited yet");
            return;
        }
        let Some(binary) = self.upgrade.binary.clone() else {
            warn!("SIGUSR2 refused: the binary to upgrade to is unknown");
            return;
        };
        info!(
            "SIGUSR2: asking {} which state formats it reads",
            binary.display()
        );
        match Check::spawn(
            &binary,
            self.poll.registry(),
            UPGRADE_CHECK,
            self.now,
            self.upgrade.check_timeout,
        ) {
            Ok(check) => self.upgrade.check = Some(check),
            Err(e) => warn!("upgrade refused: cannot run {}: {e}", binary.display()),
        }
    }

    /// The check's pipe is readable: take its answer.
    pub(crate) fn upgrade_check_readable(&mut self) {
        if let Some(check) = &mut self.upgrade.check {
            check.read(self.poll.registry());
        }
        self.conclude_upgrade_check();
    }

    /// SIGCHLD: the check's process may have exited.
    pub(crate) fn reap_upgrade_check(&mut self) {
        if let Some(check) = &mut self.upgrade.check {
            check.poll_exit();
        }
        check::reap(&mut self.upgrade.dying);
        self.conclude_upgrade_check();
    }

    /// The check took too long: kill it, and keep serving.
    pub(crate) fn expire_upgrade_check(&mut self) {
        if self.upgrade.check_deadline().is_some_and(|t| t <= self.now) {
            if let Some(check) = self.upgrade.check.take() {
                let (why, child) = check.give_up(self.poll.registry());
                warn!("upgrade refused: {why}");
                self.upgrade.dying.extend(child);
            }
        }
    }

    /// Once the check has answered and exited: go on, or say why not.
    fn conclude_upgrade_check(&mut self) {
        let Some(check) = &self.upgrade.check else {
            return;
        };
        match check.verdict() {
            Verdict::Pending => return,
            Verdict::Refused(why) => warn!("upgrade refused: {why}"),
            Verdict::Accepted => self.upgrade.due = true,
        }
        if let Some(check) = self.upgrade.check.take() {
            self.upgrade.dying.extend(check.into_remains());
        }
    }

    /// At the end of a turn: if the check passed, become the new image. Returns
    /// only if that failed, and then we go on serving as before.
    pub(crate) fn hand_over_if_due(&mut self) {
        if !std::mem::take(&mut self.upgrade.due) {
            return;
        }
        if self.drain_deadline.is_some() {
            info!("upgrade cancelled: shutting down");
            return;
        }
        let Some(binary) = self.upgrade.binary.clone() else {
            return;
        };
        info!("upgrading: exec {}", binary.display());
        let mut reloading = vec![sd_notify::NotifyState::Reloading];
        // systemd 253 and later want the time of the reload with RELOADING=1.
        reloading.extend(sd_notify::NotifyState::monotonic_usec_now().ok());
        self.notify_systemd(&reloading);
        let e = self.exec_with_state(&binary);
        error!("upgrade failed, still serving with the current image: {e}");
        self.notify_systemd(&[sd_notify::NotifyState::Ready]);
    }

    /// Saves the state, queues every descriptor for the new image, and `exec`s it.
    /// Returns only on failure; what it opened is closed again on the way out.
    fn exec_with_state(&self, binary: &std::path::Path) -> io::Error {
        let saved = state::save(self);
        let (ours, theirs) = match fds::queue(self, &saved) {
            Ok(pair) => pair,
            Err(e) => return e,
        };
        let mut command = Command::new(binary);
        if let Some((program, args)) = self.upgrade.args.split_first() {
            command.arg0(program).args(args);
        }
        command
            .env("LISTEN_FDS", "1")
            .env("LISTEN_PID", std::process::id().to_string())
            .env("LISTEN_FDS_FIRST_FD", fds::raw_number(&theirs).to_string())
            .env_remove("LISTEN_FDNAMES")
            .env(RESUME_ENV, "1");
        let e = command.exec();
        // Still here: nothing was closed (the kernel holds copies). Dropping the
        // pair discards the copies.
        drop((ours, theirs));
        e
    }
}

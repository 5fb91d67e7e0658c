//! Before we `exec` anything: ask the new binary whether it can read our state.
//!
//! `exec` cannot be undone. Once it succeeds the old program is gone, and if the new
//! one cannot read what we saved, every client is lost. So we first run
//! `NEW-BINARY --resume-formats` and read its answer: one saved-state format per line.
//! Only a binary that exits 0 and lists our [`FORMAT`](super::FORMAT) is run. That
//! also catches the usual accidents: a path that is not there, a file that is not
//! executable, a build for another machine, an old build that knows no upgrades.
//!
//! The loop must not wait for the answer (a binary on a hung disk could take for
//! ever), so the child's stdout becomes one more source in the poll, and its exit is
//! reported by SIGCHLD through the signal pipe. We need both before we decide: end of
//! output alone does not mean the process exited (it may close stdout and go on), and
//! its exit alone does not mean we have read all it wrote. A check that does not
//! finish within [`Timings::upgrade_check`](crate::config::Timings::upgrade_check)
//! (5 s: it only has to print a line; that allows for a cold disk) is killed. Every child is reaped: one that is
//! killed goes on a list that each SIGCHLD looks at, so no zombie is left behind and
//! the loop never blocks in `wait`.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use log::debug;
use mio::unix::pipe::Receiver;
use mio::{Interest, Registry, Token};

use crate::io_errors::{interrupted, would_block};

/// The longest answer we read. A real one is a few short lines; a binary that prints
/// more is not echod.
const MAX_ANSWER: usize = 4096;

/// What the check has shown so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Still waiting for its output to end, or for it to exit.
    Pending,
    /// It exited 0 and lists our format: go ahead.
    Accepted,
    /// Do not upgrade, and this is why (for the log).
    Refused(String),
}

/// One run of `NEW-BINARY --resume-formats`.
#[derive(Debug)]
pub struct Check {
    /// The binary asked (for the log).
    binary: PathBuf,
    /// The child process, until it has been reaped.
    child: Option<Child>,
    /// How it exited, once reaped.
    status: Option<ExitStatus>,
    /// Its stdout, registered with the poll, until the end of its output.
    stdout: Option<Receiver>,
    /// What it printed so far.
    answer: Vec<u8>,
    /// Reading its output failed, or it printed too much: the reason to refuse.
    broken: Option<String>,
    /// When we stop waiting and kill it.
    deadline: Instant,
    /// How long it was given (for the log).
    timeout: Duration,
}

impl Check {
    /// Starts `binary --resume-formats`, with its stdout registered under `token`.
    pub fn spawn(
        binary: &Path,
        registry: &Registry,
        token: Token,
        now: Instant,
        timeout: Duration,
    ) -> io::Result<Check> {
        let mut child = Command::new(binary)
            .arg("--resume-formats")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            // Its complaints, if any, belong in our log.
            .stderr(Stdio::inherit())
            // It must answer, not try to resume (our environment may still say
            // ECHOD_RESUME=1 from the upgrade that started us).
            .env_remove(super::RESUME_ENV)
            // Only the daemon itself talks to systemd.
            .env_remove("NOTIFY_SOCKET")
            .spawn()?;
        let registered = child.stdout.take().map(Receiver::from).map(|mut stdout| {
            stdout.set_nonblocking(true)?;
            registry.register(&mut stdout, token, Interest::READABLE)?;
            Ok::<_, io::Error>(stdout)
        });
        let stdout = match registered {
            Some(Ok(stdout)) => Some(stdout),
            failed => {
                // We cannot listen to it: stop it now (the error is what we report;
                // a kill that fails means it already exited, and `wait` reaps it).
                let _ = child.kill();
                let _ = child.wait();
                return Err(match failed {
                    Some(Err(e)) => e,
                    _ => io::Error::other("no pipe to the child's stdout"),
                });
            }
        };
        Ok(Check {
            binary: binary.to_path_buf(),
            child: Some(child),
            status: None,
            stdout,
            answer: Vec::new(),
            broken: None,
            deadline: now + timeout,
            timeout,
        })
    }

    /// When we give up on it.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The pipe is readable: read until `WouldBlock` or the end of the output.
    pub fn read(&mut self, registry: &Registry) {
        let Some(stdout) = &mut self.stdout else {
            return;
        };
        let mut buf = [0; 512];
        let ended = loop {
            match stdout.read(&mut buf) {
                Ok(0) => break true,
                Ok(n) if self.answer.len() + n > MAX_ANSWER => {
                    self.broken = Some(format!("its answer is over {MAX_ANSWER} bytes"));
                    break true;
                }
                Ok(n) => self.answer.extend_from_slice(&buf[..n]),
                Err(e) if would_block(&e) => break false,
                Err(e) if interrupted(&e) => {}
                Err(e) => {
                    self.broken = Some(format!("reading its answer failed: {e}"));
                    break true;
                }
            }
        };
        if ended {
            if let Some(mut stdout) = self.stdout.take() {
                let _ = registry.deregister(&mut stdout);
            }
            // The exit may already have happened, its SIGCHLD handled before this.
            self.poll_exit();
        }
    }

    /// SIGCHLD (or the end of its output): has it exited? Reaps it if so.
    pub fn poll_exit(&mut self) {
        if let Some(child) = &mut self.child {
            match child.try_wait() {
                Ok(Some(status)) => {
                    debug!("upgrade check exited: {status}");
                    self.status = Some(status);
                    self.child = None;
                }
                Ok(None) => {}
                Err(e) => {
                    // Not our child any more, or never was: nothing left to wait for.
                    self.broken = Some(format!("waiting for it failed: {e}"));
                    self.child = None;
                }
            }
        }
    }

    /// What the check has shown so far.
    pub fn verdict(&self) -> Verdict {
        let name = self.binary.display();
        if let Some(why) = &self.broken {
            return Verdict::Refused(format!("{name} --resume-formats: {why}"));
        }
        let (None, Some(status)) = (&self.stdout, self.status) else {
            return Verdict::Pending;
        };
        if !status.success() {
            return Verdict::Refused(format!("{name} --resume-formats: {status}"));
        }
        let answer = String::from_utf8_lossy(&self.answer);
        let formats: Vec<&str> = answer.lines().map(str::trim).collect();
        if formats.contains(&super::FORMAT) {
            return Verdict::Accepted;
        }
        let listed = if formats.iter().all(|f| f.is_empty()) {
            "none".to_string()
        } else {
            formats.join(", ")
        };
        Verdict::Refused(format!(
            "{name} cannot read state format {} (it reads: {listed})",
            super::FORMAT
        ))
    }

    /// Timed out: kill it. Returns the reason to log.
    pub fn give_up(mut self, registry: &Registry) -> (String, Option<Child>) {
        if let Some(mut stdout) = self.stdout.take() {
            let _ = registry.deregister(&mut stdout);
        }
        let why = format!(
            "{} --resume-formats did not answer within {:?}; killed it",
            self.binary.display(),
            self.timeout
        );
        (why, self.into_remains())
    }

    /// The check is over: a child that has not exited yet is killed and returned, to
    /// be reaped when its SIGCHLD comes.
    pub fn into_remains(mut self) -> Option<Child> {
        let mut child = self.child.take()?;
        // An error means it exited meanwhile; either way a SIGCHLD is on its way.
        let _ = child.kill();
        Some(child)
    }
}

/// Reaps the children of earlier checks that were killed; keeps those not yet gone.
pub fn reap(dying: &mut Vec<Child>) {
    dying.retain_mut(|child| matches!(child.try_wait(), Ok(None)));
}

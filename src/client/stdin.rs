//! Standard input as one more source in the poll loop, without threads.
//!
//! # Why this needs care
//!
//! We would like stdin to behave like a socket: register it, wait for a
//! READABLE event, read until `WouldBlock`. Two things stand in the way.
//!
//! 1. **We cannot make fd 0 non-blocking.** That takes `fcntl`, which is
//!    outside safe Rust without a helper crate, and it would also change the
//!    terminal or pipe for every other process sharing it (a shell left with
//!    a non-blocking terminal misbehaves after we exit). So our reads block,
//!    and we must only read when we know a read will not wait.
//! 2. **mio is edge-triggered.** An event says "something new arrived", not
//!    "something is there". If one read leaves data behind, no new event
//!    comes for it. With a pipe that happens when the data is bigger than our
//!    buffer; with a terminal it happens all the time, since a terminal read
//!    returns one line even when several lines were pasted at once.
//!
//! # What we do
//!
//! *One* blocking read per readiness report, which cannot block because the
//! kernel just told us data (or end of file) is there. Then we
//! **re-register** stdin. Re-registering (`epoll_ctl(EPOLL_CTL_MOD)`) makes the
//! kernel check readiness again on the spot and, if data is still waiting,
//! queue a fresh event, so the next `poll` reports it at once. Each read thus
//! gets its own proof that it will not block, and leftovers are never
//! stranded. The cost is one extra system call per read of stdin, which is
//! nothing at typing or piping speeds.
//!
//! When the loop is busy (the socket's send buffer is full) we simply remember
//! that stdin is ready and read it later; no readiness is lost by waiting.
//!
//! # Regular files
//!
//! epoll refuses regular files (and `/dev/null`) with `EPERM`, since they are
//! "always ready". For those we fall back to plain blocking reads, which for a
//! file never wait: stdin then counts as ready until end of file, and the
//! loop reads it whenever it has room to send more.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use super::connect::{interrupted, would_block};

/// How we learn that stdin has data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Registered with the poll loop (pipes, terminals, sockets).
    Polled,
    /// Could not be registered (regular files): always ready.
    AlwaysReady,
}

/// What one call to [`Stdin::read_into`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StdinRead {
    /// This many bytes were appended.
    Data(usize),
    /// Nothing read: no readiness report since the last read.
    NotReady,
    /// End of input (Ctrl-D on a terminal, the writer closed a pipe).
    Eof,
}

/// Standard input, read without threads from inside a mio loop.
#[derive(Debug)]
pub struct Stdin {
    /// Our own handle on fd 0 (a duplicate), `None` after end of input.
    file: Option<File>,
    mode: Mode,
    token: Token,
    /// Whether a read now is known not to block.
    ready: bool,
}

/// Bytes we ask for in one read: a pipe read returns at most what the pipe
/// holds (64 KiB by default), so this usually drains a pipe in one go.
const READ_SIZE: usize = 64 * 1024;

impl Stdin {
    /// Takes stdin and registers it with `registry` under `token` when it can
    /// be polled.
    pub fn open(registry: &Registry, token: Token) -> Stdin {
        // We read through a duplicate of fd 0 rather than `io::stdin()`: the
        // latter buffers, and bytes sitting in a user-space buffer are
        // invisible to epoll. A closed fd 0 fails to duplicate; treat that
        // as empty input, as std does.
        let Ok(fd) = io::stdin().as_fd().try_clone_to_owned() else {
            return Stdin {
                file: None,
                mode: Mode::AlwaysReady,
                token,
                ready: true,
            };
        };
        let file = File::from(fd);
        let raw = file.as_raw_fd();
        let mode = match registry.register(&mut SourceFd(&raw), token, Interest::READABLE) {
            Ok(()) => Mode::Polled,
            // EPERM for regular files and /dev/null; for anything else that
            // epoll will not take, blocking reads are still correct.
            Err(_) => Mode::AlwaysReady,
        };
        Stdin {
            file: Some(file),
            mode,
            token,
            ready: mode == Mode::AlwaysReady,
        }
    }

    /// The poll loop saw an event for our token.
    pub fn on_event(&mut self) {
        self.ready = true;
    }

    /// Whether input has ended.
    pub fn at_eof(&self) -> bool {
        self.file.is_none()
    }

    /// Whether a read would make progress right now. When true, the loop
    /// must not sleep in `poll` (an always-ready file sends no events).
    pub fn is_ready(&self) -> bool {
        self.ready && !self.at_eof()
    }

    /// Reads once, if known to be safe, appending to `buf`.
    pub fn read_into(&mut self, registry: &Registry, buf: &mut Vec<u8>) -> io::Result<StdinRead> {
        if !self.is_ready() {
            return Ok(StdinRead::NotReady);
        }
        let Some(file) = self.file.as_mut() else {
            return Ok(StdinRead::Eof);
        };
        let old_len = buf.len();
        buf.resize(old_len + READ_SIZE, 0);
        let result = loop {
            match file.read(&mut buf[old_len..]) {
                Err(e) if interrupted(&e) => continue,
                other => break other,
            }
        };
        buf.truncate(old_len + *result.as_ref().unwrap_or(&0));
        match result {
            // Only if someone else made our stdin non-blocking and the event
            // was spurious: nothing there after all, wait for the next one.
            Err(e) if would_block(&e) => {
                self.rearm(registry)?;
                Ok(StdinRead::NotReady)
            }
            Err(e) => Err(e),
            Ok(0) => {
                self.close(registry);
                Ok(StdinRead::Eof)
            }
            Ok(n) => {
                self.rearm(registry)?;
                Ok(StdinRead::Data(n))
            }
        }
    }

    /// After a read: ask the kernel whether more is waiting (see the module
    /// docs). In always-ready mode there is nothing to ask.
    fn rearm(&mut self, registry: &Registry) -> io::Result<()> {
        if self.mode == Mode::AlwaysReady {
            return Ok(());
        }
        self.ready = false;
        if let Some(file) = &self.file {
            let raw = file.as_raw_fd();
            registry.reregister(&mut SourceFd(&raw), self.token, Interest::READABLE)?;
        }
        Ok(())
    }

    /// End of input: leave the poll loop and close our duplicate.
    fn close(&mut self, registry: &Registry) {
        if let Some(file) = self.file.take() {
            if self.mode == Mode::Polled {
                let _ = registry.deregister(&mut SourceFd(&file.as_raw_fd()));
            }
        }
        self.ready = false;
    }
}

//! The few questions both ends of a socket ask of an `io::Error`.
//!
//! Every `io::Error` arm in the reactor and the client reads like prose thanks to these
//! predicates (the idea comes from mio's own `tcp_server` example).

use std::io;

/// The operation would block: the readiness we acted on is used up. With edge-triggered
/// polling this is the *only* signal that we may stop and wait for the next event.
pub fn would_block(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::WouldBlock
}

/// A signal arrived during a system call: just try again.
pub fn interrupted(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::Interrupted
}

/// The process (EMFILE) or the whole system (ENFILE) has no file descriptor left.
pub fn out_of_fds(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// `accept` cannot take a connection *now*: no descriptor (EMFILE, ENFILE), no kernel
/// memory (ENOMEM, ENOBUFS), or a security module said no (EPERM). The kernel fails these
/// before it takes the connection off the queue, so trying again at once fails again:
/// the caller must back off, not loop.
pub fn accept_must_wait(err: &io::Error) -> bool {
    out_of_fds(err)
        || matches!(
            err.raw_os_error(),
            Some(libc::ENOMEM | libc::ENOBUFS | libc::EPERM)
        )
}

/// `accept` failed for that one connection only: it was reset or aborted while it
/// waited in the queue, and is gone. The next one may succeed at once.
pub fn accept_aborted(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ECONNABORTED | libc::EPROTO))
        || err.kind() == io::ErrorKind::ConnectionReset
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predicates_name_the_right_errors() {
        assert!(would_block(&io::ErrorKind::WouldBlock.into()));
        assert!(interrupted(&io::ErrorKind::Interrupted.into()));
        assert!(out_of_fds(&io::Error::from_raw_os_error(libc::EMFILE)));
        assert!(out_of_fds(&io::Error::from_raw_os_error(libc::ENFILE)));
        assert!(!out_of_fds(&io::ErrorKind::WouldBlock.into()));
        assert!(accept_aborted(&io::Error::from_raw_os_error(
            libc::ECONNABORTED
        )));
        for errno in [
            libc::EMFILE,
            libc::ENFILE,
            libc::ENOMEM,
            libc::ENOBUFS,
            libc::EPERM,
        ] {
            let e = io::Error::from_raw_os_error(errno);
            assert!(accept_must_wait(&e) && !accept_aborted(&e), "{e}");
        }
    }
}

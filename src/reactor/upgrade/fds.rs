//! Carrying descriptors across `exec`: a sealed memory file for the state, and a Unix
//! socket pair that holds every descriptor as `SCM_RIGHTS` messages.
//!
//! A descriptor survives `exec` when its close-on-exec flag is clear. We could clear it
//! on every socket and write their numbers into the state; but the new image would then
//! have to turn bare numbers back into sockets (`FromRawFd`), which Rust rightly calls
//! `unsafe`: nothing proves the number is the socket we think it is. Passing them
//! through a socket pair instead gives the receiver `OwnedFd`s from the kernel, each a
//! fresh descriptor it owns, and only one number crosses `exec` bare: the pair's
//! receiving end, which the new image adopts with the `listenfd` crate, the way it
//! adopts systemd's sockets (it checks that the number really is a Unix stream socket).
//!
//! The messages queue in the socket's buffer until the new image reads them; the
//! sending end is non-blocking so that a full buffer fails the upgrade instead of
//! hanging the loop. Each message carries at most [`FDS_PER_MESSAGE`] descriptors and
//! a 4-byte payload: how many, so the receiver can tell a cut-off message.

use std::fs::File;
use std::io::{self, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use rustix::fs::{memfd_create, MemfdFlags, SealFlags};
use rustix::io::{fcntl_setfd, FdFlags, IoSlice, IoSliceMut};
use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
};

use crate::reactor::server::Server;

/// Descriptors per message: Linux takes at most 253 (`SCM_MAX_FD`) in one.
pub const FDS_PER_MESSAGE: usize = 200;

/// How long the new image waits for a message that should already be queued: only a
/// bug could make it wait at all, and then failing beats hanging.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(2);

/// The socket pair's two ends, once the descriptors are queued: we keep the first (and
/// drop it if `exec` fails); the second crosses `exec`.
pub type Pair = (UnixStream, UnixStream);

/// Puts `saved` in a sealed memory file and queues it, the listeners, the `--metrics`
/// listener and the connections (in slab order, as [`super::state::save`] wrote them)
/// on a new socket pair whose receiving end survives `exec`. (Open scrapes are not
/// handed over: a scraper whose scrape is cut simply tries again.)
pub fn queue(server: &Server, saved: &[u8]) -> io::Result<Pair> {
    let memory = memory_file(saved)?;
    let (ours, theirs) = UnixStream::pair()?;
    // The one descriptor that must survive `exec`.
    fcntl_setfd(&theirs, FdFlags::empty())?;
    ours.set_nonblocking(true)?;
    let mut all: Vec<BorrowedFd<'_>> = vec![memory.as_fd()];
    all.extend(server.listeners.iter().map(|l| l.as_fd()));
    all.extend(server.metrics.as_ref().map(|m| m.listener().as_fd()));
    all.extend(server.conns.live().map(|entry| entry.stream.as_fd()));
    make_room(&ours, all.len().div_ceil(FDS_PER_MESSAGE));
    for chunk in all.chunks(FDS_PER_MESSAGE) {
        send_chunk(&ours, chunk)?;
    }
    Ok((ours, theirs))
}

/// Asks for a send buffer that holds `messages` messages. Each queued message costs the
/// buffer about 800 bytes (its bookkeeping, not its 4-byte payload), so the default
/// (`net.core.wmem_default`, usually 208 KiB) holds about 270 of them: some 50,000
/// descriptors. We ask for 1 KiB per message; the kernel grants at most
/// `net.core.wmem_max`. Asking is all we can do: if the buffer is still too small,
/// a send says `WouldBlock` and the upgrade is refused with that error.
fn make_room(socket: &UnixStream, messages: usize) {
    let wanted = messages.saturating_add(16).saturating_mul(1024);
    let socket = socket2::SockRef::from(socket);
    if socket.send_buffer_size().is_ok_and(|size| size < wanted) {
        if let Err(e) = socket.set_send_buffer_size(wanted) {
            log::debug!("upgrade: cannot grow the socket pair's send buffer: {e}");
        }
    }
}

/// The descriptor number of the end that crosses `exec`, for `LISTEN_FDS_FIRST_FD`.
pub fn raw_number(theirs: &UnixStream) -> RawFd {
    theirs.as_raw_fd()
}

/// An anonymous file in memory holding `bytes`, sealed against any change: it has no
/// name in any file system, so nothing else can open it, and it vanishes with its
/// last descriptor.
fn memory_file(bytes: &[u8]) -> io::Result<File> {
    let fd = memfd_create(
        "echod-state",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )?;
    let mut file = File::from(fd);
    file.write_all(bytes)?;
    rustix::fs::fcntl_add_seals(
        &file,
        SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE | SealFlags::SEAL,
    )?;
    Ok(file)
}

/// Reads the whole memory file (from the start: the offset is shared with the writer,
/// which left it at the end).
pub fn read_memory_file(file: &File) -> io::Result<Vec<u8>> {
    let len = usize::try_from(file.metadata()?.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "saved state too large"))?;
    let mut bytes = vec![0; len];
    file.read_exact_at(&mut bytes, 0)?;
    Ok(bytes)
}

/// Sends one message: the count as payload, the descriptors as `SCM_RIGHTS`.
fn send_chunk(socket: &UnixStream, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(FDS_PER_MESSAGE))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other("too many descriptors for one message"));
    }
    let count = u32::try_from(fds.len()).unwrap_or(u32::MAX).to_le_bytes();
    let sent = sendmsg(
        socket,
        &[IoSlice::new(&count)],
        &mut control,
        SendFlags::empty(),
    )
    .map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("queueing descriptors for the new image: {e}"),
        )
    })?;
    if sent != count.len() {
        return Err(io::Error::other("a descriptor message was cut short"));
    }
    Ok(())
}

/// The new image: receives the next message's descriptors (close-on-exec, so that
/// they do not leak into the next upgrade check's child).
pub fn receive_chunk(socket: &UnixStream) -> io::Result<Vec<OwnedFd>> {
    socket.set_read_timeout(Some(RECEIVE_TIMEOUT))?;
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(FDS_PER_MESSAGE))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut count = [0; 4];
    let got = recvmsg(
        socket,
        &mut [IoSliceMut::new(&mut count)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    if got.bytes == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the upgrade channel ended early",
        ));
    }
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    let want = usize::try_from(u32::from_le_bytes(count)).unwrap_or(usize::MAX);
    if got.bytes != count.len() || got.flags.contains(ReturnFlags::CTRUNC) || fds.len() != want {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "a descriptor message was cut short ({} of {want} descriptors)",
                fds.len()
            ),
        ));
    }
    Ok(fds)
}

//! A [`Connection`] as bytes, for an upgrade in place (SIGUSR2, see
//! [`crate::reactor::upgrade`]).
//!
//! This is why the state machine being sans-IO pays off a second time: a connection
//! holds no socket, no clock, no pointer into the loop, so all of it is a value that
//! can be written down in one program and read back in another. The socket travels
//! separately, as a descriptor.
//!
//! Two things change on the way. The output buffer is saved from its first unsent
//! byte (`sent` is 0 again afterwards), and the deadlines are saved as milliseconds
//! from now, because a [`Tick`] counts from the start of the loop that made it.

use super::{CloseReason, Connection, State};
use crate::config::MAX_BUFFER;
use crate::protocol::proxy::Source;
use crate::protocol::state::{Malformed, Read, Reader, Writer};
use crate::protocol::telnet;
use crate::protocol::tick::Tick;

/// The longest buffer we accept back. `--max-line` and `--max-pending` are at most
/// [`MAX_BUFFER`], and a buffer holds at most about twice its limit; anything longer
/// did not come from a connection.
const MAX_SAVED_BUFFER: usize = 2 * MAX_BUFFER + 1024;

impl Connection {
    /// Writes this connection; its deadlines are saved relative to `now`.
    pub fn save(&self, w: &mut Writer, now: Tick) {
        // Taken apart field by field: a field added to `Connection` without a place
        // here does not compile.
        let Connection {
            state,
            reason,
            peer_eof,
            // Only ever set during one visit of the reactor, and we save between visits.
            lent: _,
            waiting,
            input,
            output,
            sent,
            telnet,
            lines,
            proxied,
            deadline,
            send_deadline,
        } = self;
        w.u8(state_code(*state));
        w.u8(reason.map_or(0, reason_code));
        w.bool(*peer_eof);
        w.bool(*waiting);
        w.bytes(input);
        w.bytes(&output[*sent..]);
        w.u64(*lines);
        telnet.save(w);
        match proxied.as_deref() {
            None => w.u8(0),
            Some(Source::Unknown) => w.u8(1),
            Some(Source::Tcp { client, server }) => {
                w.u8(2);
                w.addr(*client);
                w.addr(*server);
            }
        }
        w.deadline(*deadline, now);
        w.deadline(*send_deadline, now);
    }

    /// Reads a connection written by [`Connection::save`]; its deadlines come back
    /// relative to `now`.
    pub fn load(r: &mut Reader<'_>, now: Tick) -> Read<Connection> {
        let state = state_of(r.u8()?)?;
        let reason = match r.u8()? {
            0 => None,
            n => Some(
                *CloseReason::ALL
                    .get(usize::from(n - 1))
                    .ok_or(Malformed("an unknown close reason"))?,
            ),
        };
        let peer_eof = r.bool()?;
        let waiting = r.bool()?;
        let input = r.bytes(MAX_SAVED_BUFFER)?.to_vec();
        let output = r.bytes(MAX_SAVED_BUFFER)?.to_vec();
        let lines = r.u64()?;
        let telnet = telnet::Filter::load(r)?;
        let proxied = match r.u8()? {
            0 => None,
            1 => Some(Box::new(Source::Unknown)),
            2 => Some(Box::new(Source::Tcp {
                client: r.addr()?,
                server: r.addr()?,
            })),
            _ => return Err(Malformed("an unknown PROXY source")),
        };
        let connection = Connection {
            state,
            reason,
            peer_eof,
            lent: false,
            waiting,
            input,
            output,
            sent: 0,
            telnet,
            lines,
            proxied,
            deadline: r.deadline(now)?,
            send_deadline: r.deadline(now)?,
        };
        if connection.could_never_move() {
            return Err(Malformed("a connection that could never move again"));
        }
        Ok(connection)
    }

    /// True for a connection that, once adopted, would neither read, nor send, nor
    /// close: it waits for output to drain (lines waiting for room, finishing, flushing)
    /// but has none. The state machine never rests like this (a line waits only behind
    /// output, and finishing and flushing move on as soon as the output is sent), so
    /// such bytes were not written by a connection; loaded, it would hold its slot
    /// until a timeout, or for ever with none.
    fn could_never_move(&self) -> bool {
        let waits_for_output = match self.state {
            State::Open => self.waiting,
            State::Finishing | State::Flushing => true,
            State::ProxyHeader | State::Lingering | State::Closed => false,
        };
        waits_for_output && self.output.is_empty()
    }
}

/// A state's code in the saved state. Written out, not derived from the enum's
/// order: the codes are a file format, and must not move when the enum does.
fn state_code(state: State) -> u8 {
    match state {
        State::ProxyHeader => 0,
        State::Open => 1,
        State::Finishing => 2,
        State::Flushing => 3,
        State::Lingering => 4,
        State::Closed => 5,
    }
}

/// The state with code `code`.
fn state_of(code: u8) -> Read<State> {
    Ok(match code {
        0 => State::ProxyHeader,
        1 => State::Open,
        2 => State::Finishing,
        3 => State::Flushing,
        4 => State::Lingering,
        5 => State::Closed,
        _ => return Err(Malformed("an unknown connection state")),
    })
}

/// A close reason's code: 1 + its place in [`CloseReason::ALL`] (0 is "none yet").
fn reason_code(reason: CloseReason) -> u8 {
    let index = CloseReason::ALL.iter().position(|r| *r == reason);
    // `ALL` lists every reason (the counters rely on it too), and there are ten.
    index.map_or(0, |i| u8::try_from(i + 1).unwrap_or(0))
}

#[cfg(test)]
mod tests;

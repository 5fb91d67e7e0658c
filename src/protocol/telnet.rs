//! Telnet command filtering: a sans-IO decoder, and the `--telnet auto|on|off` filter.
//!
//! A telnet client does not send only the characters you type. Mixed into the byte stream are
//! *commands*, each introduced by the byte IAC ("interpret as command", 0xFF, RFC 854):
//!
//! * two-byte commands such as `IAC IP` (interrupt process), `IAC AYT` (are you there?), or
//!   `IAC NOP`;
//! * three-byte option negotiations, `IAC WILL|WONT|DO|DONT option` (RFC 855), by which the
//!   two ends agree on features such as echo or terminal type;
//! * subnegotiations, `IAC SB option ... IAC SE`, which carry an option's parameters;
//! * `IAC IAC`, which is how a literal 0xFF data byte travels.
//!
//! When the user presses Ctrl-C, a typical client sends `IAC IP IAC DO TIMING-MARK`
//! (`FF F4 FF FD 06`). The `DO TIMING-MARK` (RFC 860) asks the server to reply once it has
//! dealt with everything before it, and the client hides all output until that reply arrives.
//! A plain echo server echoes those five bytes back as if they were text: the client receives
//! `DO TIMING-MARK` instead of an answer, never gets its answer, and appears frozen.
//!
//! So a telnet-aware connection passes its input through this [`Decoder`] before line framing.
//! The decoder removes every command, reports `IAC IP`/`IAC AO`/`IAC BRK` as
//! [`Event::EraseLine`] (the user gave up on the line being typed), and writes the negotiation
//! answers: we refuse every option (`DO x` → `WONT x`, `WILL x` → `DONT x`), which RFC 855
//! always allows, and we answer each option once so that two refusing peers cannot loop. The
//! exception is TIMING-MARK: every `DO TIMING-MARK` is a fresh request the client waits on, so
//! every one gets its `WONT TIMING-MARK`, which is all the client needs to carry on.
//!
//! The decoder is sans-IO: it sees byte slices, not sockets, and it is an explicit state
//! machine, so input split at any byte (even inside a command) decodes exactly as it would in
//! one piece. Output going the other way needs its 0xFF bytes doubled; [`escape_iac`] does that.
//!
//! When is a connection telnet-aware? A [`Filter`] per connection says: never
//! (`--telnet off`, every byte is data), always (`on`), or, by default (`auto`), from the
//! first telnet command the client sends on. Until then an `auto` connection is byte-exact,
//! which is what every client that is not telnet needs; a telnet client's first command
//! (its Ctrl-C, at the latest) makes it telnet-aware, before any harm is done.
//!
//! Subnegotiation edge cases (our choice; RFC 855 leaves malformed input open): inside
//! `IAC SB`, only `IAC SE` ends the subnegotiation, `IAC IAC` is an escaped data byte, and any
//! other `IAC x` is ignored while the subnegotiation continues. Since we refuse every option, a
//! conforming client never sends us a subnegotiation at all; its bytes are discarded as they
//! arrive, never buffered, so even an unterminated one costs no memory.

use crate::config::Telnet;

/// IAC, "interpret as command": introduces every telnet command; `IAC IAC` is a literal 0xFF.
pub const IAC: u8 = 0xFF;
/// DONT: asks the peer to stop (or not start) using an option. We never answer it.
pub const DONT: u8 = 0xFE;
/// DO: asks us to use an option. We answer `IAC WONT option`.
pub const DO: u8 = 0xFD;
/// WONT: the peer will not (or will no longer) use an option. We never answer it.
pub const WONT: u8 = 0xFC;
/// WILL: the peer offers to use an option. We answer `IAC DONT option`.
pub const WILL: u8 = 0xFB;
/// SB: begins a subnegotiation, which runs until `IAC SE`.
pub const SB: u8 = 0xFA;
/// GA, "go ahead": a half-duplex turn signal. Removed and ignored.
pub const GA: u8 = 0xF9;
/// EL, "erase line". Removed and ignored: a line-echo server has no line editor to drive.
pub const EL: u8 = 0xF8;
/// EC, "erase character". Removed and ignored, for the same reason as [`EL`].
pub const EC: u8 = 0xF7;
/// AYT, "are you there?". Removed and ignored: the echo of the next line is answer enough.
pub const AYT: u8 = 0xF6;
/// AO, "abort output". Removed; reported as [`Event::EraseLine`].
pub const AO: u8 = 0xF5;
/// IP, "interrupt process" (what Ctrl-C sends). Removed; reported as [`Event::EraseLine`].
pub const IP: u8 = 0xF4;
/// BRK, "break". Removed; reported as [`Event::EraseLine`].
pub const BRK: u8 = 0xF3;
/// DM, "data mark" (the end of a telnet Synch). Removed and ignored.
pub const DM: u8 = 0xF2;
/// NOP, "no operation". Removed and ignored.
pub const NOP: u8 = 0xF1;
/// SE: ends a subnegotiation. Outside one it is an ignored two-byte command.
pub const SE: u8 = 0xF0;
/// The TIMING-MARK option (RFC 860): every `DO TIMING-MARK` is answered, not only the first.
pub const TIMING_MARK: u8 = 6;

/// One piece of decoded input, in stream order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// Plain data bytes (never contains a telnet command; may contain 0xFF from IAC IAC).
    Data(&'a [u8]),
    /// IAC IP / IAC AO / IAC BRK: the caller discards its partial (unterminated) line.
    EraseLine,
    /// Our answer to a negotiation (`IAC WONT x` or `IAC DONT x`), to send at this point
    /// of the reply stream. Only [`Decoder::next_event`] reports it.
    Answer([u8; 3]),
}

/// Where the decoder is within the telnet byte grammar. Carried between `decode` calls, so a
/// command split across reads resumes exactly where it stopped.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between commands: bytes are data until the next IAC.
    #[default]
    Data,
    /// After an IAC outside a subnegotiation: the next byte says which command this is.
    Iac,
    /// After `IAC WILL|WONT|DO|DONT` (the verb is held here): the next byte is the option.
    Option(u8),
    /// Inside `IAC SB ...`: bytes are discarded until `IAC SE`.
    Sub,
    /// After an IAC inside a subnegotiation: SE ends it, anything else continues it.
    SubIac,
}

/// A set of option codes, one bit per possible option byte (256 bits).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct OptionSet {
    /// Bit `opt % 64` of word `opt / 64` is set when `opt` is in the set.
    words: [u64; 4],
}

impl OptionSet {
    /// Adds `opt`; returns true if it was not already in the set.
    fn insert(&mut self, opt: u8) -> bool {
        let word = &mut self.words[usize::from(opt / 64)];
        let bit = 1u64 << (opt % 64);
        let fresh = *word & bit == 0;
        *word |= bit;
        fresh
    }
}

/// Per-connection telnet filter state: the parser state plus the options we have already
/// refused, so each refusal is sent once.
#[derive(Debug, Default, Clone)]
pub struct Decoder {
    /// Where we are in the command grammar; survives between `decode` calls.
    state: State,
    /// Options for which we have answered `DO x` with `WONT x` (TIMING-MARK is never recorded:
    /// each of its requests is answered).
    refused_do: OptionSet,
    /// Options for which we have answered `WILL x` with `DONT x`.
    refused_will: OptionSet,
}

impl Decoder {
    /// A decoder at the start of a connection: outside any command, nothing answered yet.
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// A decoder that has just seen an IAC outside any command: the next byte says which
    /// command this is. (`--telnet auto` switches on at a command whose IAC ended the
    /// previous read.)
    fn after_iac() -> Decoder {
        Decoder {
            state: State::Iac,
            ..Decoder::default()
        }
    }

    /// Filters `input`. Calls `on` for each Event in stream order; Data slices borrow `input`
    /// where possible (contiguous runs between commands: do not copy byte by byte), IAC IAC
    /// gives `Data(&[0xFF])`. Negotiation answers are appended to `answers`.
    ///
    /// The literal 0xFF of an `IAC IAC` is the second IAC byte of `input` itself, so we start
    /// the following data run there: `a IAC IAC b` gives one `Data(&[a, 0xFF, b])`. Data
    /// events are never empty, but one run of data may arrive as several events (at `IAC IAC`
    /// and at call boundaries), so callers must not treat a Data event as a unit.
    pub fn decode(&mut self, input: &[u8], answers: &mut Vec<u8>, mut on: impl FnMut(Event<'_>)) {
        let mut at = 0;
        while let Some(event) = self.next_event(input, &mut at) {
            match event {
                Event::Answer(bytes) => answers.extend_from_slice(&bytes),
                other => on(other),
            }
        }
    }

    /// The next event of `input[*at..]`, moving `at` past the bytes it used; `None` once
    /// they are used up (a command cut short by the end of `input` is held in the decoder's
    /// state, so the next call goes on from it). Negotiation answers come as
    /// [`Event::Answer`] in stream order, so a caller that queues them with its replies gets
    /// the same bytes however the input was split.
    ///
    /// We hand out one event at a time, rather than calling back for each, so that the
    /// caller may change its own state between events (answer a line, discard one) while
    /// the decoder is borrowed only for the call.
    pub fn next_event<'a>(&mut self, input: &'a [u8], at: &mut usize) -> Option<Event<'a>> {
        while let Some(&byte) = input.get(*at) {
            let i = *at;
            *at = i + 1;
            let event = match self.state {
                State::Data => self.data_run(input, i, i, at),
                // The escaped 0xFF is input[i]; it leads the next data run.
                State::Iac if byte == IAC => self.data_run(input, i, i + 1, at),
                State::Iac => self.command(byte),
                State::Option(verb) => self.negotiate(verb, byte),
                State::Sub => {
                    *at = self.skip_sub(input, i);
                    None
                }
                State::SubIac => {
                    // Only SE ends the subnegotiation; IAC IAC and any other IAC x are part
                    // of it (see the module docs), and are discarded with it.
                    self.state = if byte == SE { State::Data } else { State::Sub };
                    None
                }
            };
            if event.is_some() {
                return event;
            }
        }
        None
    }

    /// The data run `input[start..end]`, where `end` is the next IAC at or after `from` (or
    /// the end of input); `None` if it is empty. Sets `at` just past that IAC, having
    /// entered `State::Iac`, or to `input.len()` in `State::Data` if the input ran out first.
    fn data_run<'a>(
        &mut self,
        input: &'a [u8],
        start: usize,
        from: usize,
        at: &mut usize,
    ) -> Option<Event<'a>> {
        let end = find_iac(input, from).unwrap_or(input.len());
        if end < input.len() {
            self.state = State::Iac;
            *at = end + 1;
        } else {
            self.state = State::Data;
            *at = end;
        }
        (end > start).then(|| Event::Data(&input[start..end]))
    }

    /// Handles the byte after an IAC outside a subnegotiation (never IAC itself).
    fn command(&mut self, cmd: u8) -> Option<Event<'static>> {
        let (state, event) = match cmd {
            WILL | WONT | DO | DONT => (State::Option(cmd), None),
            SB => (State::Sub, None),
            IP | AO | BRK => (State::Data, Some(Event::EraseLine)),
            // NOP, DM, AYT, EC, EL, GA, a stray SE, and bytes telnet does not define: two-byte
            // commands that mean nothing to an echo server, so we drop them.
            _ => (State::Data, None),
        };
        self.state = state;
        event
    }

    /// Answers `IAC verb opt`: we refuse whatever is asked or offered, once per option, except
    /// that every `DO TIMING-MARK` is answered (each is a request the client is waiting on).
    fn negotiate(&mut self, verb: u8, opt: u8) -> Option<Event<'static>> {
        self.state = State::Data;
        let answer = match verb {
            DO if opt == TIMING_MARK || self.refused_do.insert(opt) => WONT,
            WILL if self.refused_will.insert(opt) => DONT,
            // A repeated DO/WILL was already refused. WONT and DONT are never answered: we
            // never enabled anything, so there is nothing to acknowledge.
            _ => return None,
        };
        // The option byte is sent raw even when it is 0xFF: RFC 855 option codes are not
        // IAC-escaped.
        Some(Event::Answer([IAC, answer, opt]))
    }

    /// Discards subnegotiation bytes from `input[start..]` up to the next IAC. Returns the
    /// index just past that IAC (in `State::SubIac`), or `input.len()` (still in `State::Sub`).
    fn skip_sub(&mut self, input: &[u8], start: usize) -> usize {
        match find_iac(input, start) {
            Some(at) => {
                self.state = State::SubIac;
                at + 1
            }
            None => input.len(),
        }
    }
}

/// Whether `byte`, after an IAC, makes a telnet command that `--telnet auto` switches on
/// at: every command byte of RFC 854, SE (0xF0) to DONT (0xFE). IAC itself (`IAC IAC`)
/// is a literal 0xFF, and a byte below 0xF0 is no telnet command.
pub fn is_command(byte: u8) -> bool {
    (SE..=DONT).contains(&byte)
}

/// The telnet layer of one connection, as `--telnet` chose it: what its input bytes are.
///
/// - [`Filter::Off`] (`--telnet off`): every byte is data.
/// - [`Filter::Watching`] (`--telnet auto`, at first): every byte is data, and we watch
///   for a telnet command: an IAC followed by a byte from 0xF0 to 0xFE ([`is_command`]).
///   An IAC followed by anything else is data, and `IAC IAC` is two data bytes, as sent:
///   a client that is not telnet gets its bytes back exactly. At the first command the
///   filter becomes
/// - [`Filter::Decoding`] (`--telnet on`, and `auto` from its first command on): the
///   [`Decoder`], from that command's IAC on.
/// - [`Filter::Paused`]: the connection could not take more than data for a while (see
///   [`Filter::next_event`]); the filter keeps the bytes it was given until then.
///
/// An IAC that ends a read while watching is held back: only the next byte says whether
/// it is data or the start of a command. So the bytes of a read split anywhere give what
/// they give in one piece.
#[derive(Debug)]
pub enum Filter {
    /// Byte-exact: telnet commands are data.
    Off,
    /// Byte-exact until the first telnet command.
    Watching {
        /// The last read ended in an IAC that may start a command.
        held_iac: bool,
    },
    /// Telnet-aware. Boxed: most connections never get here.
    Decoding(Box<Decoder>),
    /// Holding input back until [`Filter::take_paused`].
    Paused(Box<Paused>),
}

/// What a [`Filter::Paused`] holds.
#[derive(Debug)]
pub struct Paused {
    /// The filter to go on with.
    filter: Filter,
    /// The input it has not looked at yet.
    rest: Vec<u8>,
}

impl Filter {
    /// The filter a new connection starts with.
    pub fn new(mode: Telnet) -> Filter {
        match mode {
            Telnet::Off => Filter::Off,
            Telnet::Auto => Filter::Watching { held_iac: false },
            Telnet::On => Filter::Decoding(Box::default()),
        }
    }

    /// True once the connection speaks telnet: its replies must double every 0xFF.
    pub fn is_decoding(&self) -> bool {
        match self {
            Filter::Decoding(_) => true,
            Filter::Paused(paused) => paused.filter.is_decoding(),
            Filter::Off | Filter::Watching { .. } => false,
        }
    }

    /// The next event of `input[*at..]`, moving `at` past the bytes it used; `None` once
    /// they are used up. See [`Decoder::next_event`].
    ///
    /// With `data_only`, the caller can take data but nothing else now (the connection has
    /// lines waiting for room: an answer queued now would pass their replies, and whether
    /// a reply is escaped must not depend on when room comes). The filter then gives out
    /// data up to its next telnet command, or none at all while decoding, and keeps the
    /// rest of `input` until [`Filter::take_paused`].
    #[inline]
    pub fn next_event<'a>(
        &mut self,
        input: &'a [u8],
        at: &mut usize,
        data_only: bool,
    ) -> Option<Event<'a>> {
        // The usual read, inline: bytes with no IAC, or any bytes with `--telnet off`,
        // are one run of data. (A read of a person typing costs about as much to filter
        // as to answer, so this path stays a few instructions.)
        let rest = input.get(*at..).unwrap_or_default();
        if rest.is_empty() {
            return None;
        }
        let plain = match self {
            Filter::Off => true,
            Filter::Watching { held_iac: false } => !has_iac(rest),
            _ => false,
        };
        if plain {
            *at = input.len();
            return Some(Event::Data(rest));
        }
        self.next_event_slow(input, at, data_only)
    }

    /// [`Filter::next_event`] for the rest: a read with an IAC, or a decoding or paused
    /// filter.
    #[inline(never)]
    fn next_event_slow<'a>(
        &mut self,
        input: &'a [u8],
        at: &mut usize,
        data_only: bool,
    ) -> Option<Event<'a>> {
        match self {
            Filter::Off => {
                let rest = &input[(*at).min(input.len())..];
                *at = input.len();
                (!rest.is_empty()).then_some(Event::Data(rest))
            }
            Filter::Watching { held_iac } => {
                let held = std::mem::take(held_iac);
                self.watch(held, input, at, data_only)
            }
            Filter::Decoding(_) if data_only => self.pause(input, at),
            Filter::Decoding(decoder) => decoder.next_event(input, at),
            Filter::Paused(paused) => {
                paused
                    .rest
                    .extend_from_slice(&input[(*at).min(input.len())..]);
                *at = input.len();
                None
            }
        }
    }

    /// [`Filter::next_event`] while watching, `held` saying whether the last read ended in
    /// an IAC.
    fn watch<'a>(
        &mut self,
        held: bool,
        input: &'a [u8],
        at: &mut usize,
        data_only: bool,
    ) -> Option<Event<'a>> {
        let start = *at;
        let Some(&first) = input.get(start) else {
            *self = Filter::Watching { held_iac: held };
            return None;
        };
        if held {
            if is_command(first) {
                *self = Filter::Watching { held_iac: true };
                return self.switch(Decoder::after_iac(), input, at, data_only);
            }
            // The held IAC was data, and so is an IAC after it (`IAC IAC`, as sent).
            if first == IAC {
                *at = start + 1;
                return Some(Event::Data(&[IAC, IAC]));
            }
            return Some(Event::Data(&[IAC]));
        }
        let mut from = start;
        let end = loop {
            let Some(iac) = find_iac(input, from) else {
                break input.len();
            };
            match input.get(iac + 1) {
                None => {
                    *self = Filter::Watching { held_iac: true };
                    break iac;
                }
                Some(&next) if is_command(next) => {
                    *at = iac;
                    if iac == start {
                        return self.switch(Decoder::new(), input, at, data_only);
                    }
                    // The data before the command first; the next call switches.
                    return Some(Event::Data(&input[start..iac]));
                }
                // An IAC that starts no command is data; `IAC IAC` is two data bytes.
                Some(&next) => from = iac + 1 + usize::from(next == IAC),
            }
        };
        *at = input.len();
        (end > start).then(|| Event::Data(&input[start..end]))
    }

    /// A telnet command starts at `input[*at]` (or, for a decoder made by
    /// [`Decoder::after_iac`], with the IAC that ended the last read): from here on,
    /// `decoder` reads the input. With `data_only`, not yet: we pause first.
    fn switch<'a>(
        &mut self,
        decoder: Decoder,
        input: &'a [u8],
        at: &mut usize,
        data_only: bool,
    ) -> Option<Event<'a>> {
        if data_only {
            return self.pause(input, at);
        }
        *self = Filter::Decoding(Box::new(decoder));
        self.next_event(input, at, false)
    }

    /// Keeps `input[*at..]` for later, with the filter as it is now.
    fn pause<'a>(&mut self, input: &'a [u8], at: &mut usize) -> Option<Event<'a>> {
        let rest = input[(*at).min(input.len())..].to_vec();
        *at = input.len();
        let filter = std::mem::replace(self, Filter::Off);
        *self = Filter::Paused(Box::new(Paused { filter, rest }));
        None
    }

    /// The input a pause kept (empty if none), to be passed to [`Filter::next_event`]
    /// again now that the caller can take every event.
    pub fn take_paused(&mut self) -> Vec<u8> {
        match std::mem::replace(self, Filter::Off) {
            Filter::Paused(paused) => {
                let Paused { filter, rest } = *paused;
                *self = filter;
                rest
            }
            other => {
                *self = other;
                Vec::new()
            }
        }
    }

    /// How many input bytes the filter holds (a pause's).
    pub fn held_len(&self) -> usize {
        match self {
            Filter::Paused(paused) => paused.rest.len(),
            _ => 0,
        }
    }

    /// The input has ended: the IAC held back from the last read, if any, was data.
    pub fn end_of_input(&mut self) -> Option<&'static [u8]> {
        match self {
            Filter::Watching { held_iac: true } => {
                *self = Filter::Watching { held_iac: false };
                Some(&[IAC])
            }
            _ => None,
        }
    }
}

/// The index of the first IAC in `input[from..]`, as an index into `input`.
fn find_iac(input: &[u8], from: usize) -> Option<usize> {
    memchr::memchr(IAC, &input[from..]).map(|at| from + at)
}

/// Whether `bytes` hold an IAC. With `--telnet auto` every read is searched for one, most
/// often in vain: on short reads (a person typing, ping-pong) we compare every byte
/// without stopping early, which compiles to a few vector compares, where `memchr`'s
/// set-up costs more than the search; on long reads `memchr` is faster.
#[inline]
fn has_iac(bytes: &[u8]) -> bool {
    if bytes.len() <= 64 {
        bytes.iter().fold(false, |any, &b| any | (b == IAC))
    } else {
        memchr::memchr(IAC, bytes).is_some()
    }
}

/// Appends `data` to `out` with every 0xFF doubled (IAC IAC), as telnet requires of data we
/// send. Fast path: we extend in runs between 0xFF bytes, not byte by byte.
pub fn escape_iac(data: &[u8], out: &mut Vec<u8>) {
    let mut rest = data;
    while let Some(at) = memchr::memchr(IAC, rest) {
        // Copy the run up to and including the 0xFF, then double it.
        out.extend_from_slice(&rest[..=at]);
        out.push(IAC);
        rest = &rest[at + 1..];
    }
    out.extend_from_slice(rest);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An owned event, so results from differently split inputs can be compared.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Ev {
        /// Data bytes; adjacent Data events are merged into one.
        Data(Vec<u8>),
        /// `Event::EraseLine`.
        Erase,
    }

    /// What decoding produced: the merged events and the answers.
    type Outcome = (Vec<Ev>, Vec<u8>);

    /// Feeds `input` to one fresh decoder in the given chunks. Besides collecting the events
    /// (merging adjacent Data), it checks that Data events are never empty and always borrow
    /// the chunk that was passed in (no copies).
    fn run_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Outcome {
        let mut decoder = Decoder::new();
        let mut events = Vec::new();
        let mut answers = Vec::new();
        for chunk in chunks {
            let range = chunk.as_ptr_range();
            decoder.decode(chunk, &mut answers, |event| match event {
                Event::Data(data) => {
                    assert!(!data.is_empty(), "empty Data event");
                    let borrowed = data.as_ptr_range();
                    assert!(range.start <= borrowed.start && borrowed.end <= range.end);
                    push_data(&mut events, data);
                }
                Event::EraseLine => events.push(Ev::Erase),
                Event::Answer(_) => unreachable!("decode routes answers to `answers`"),
            });
        }
        (events, answers)
    }

    /// Appends `data` to the events, merging it into a preceding Data.
    fn push_data(events: &mut Vec<Ev>, data: &[u8]) {
        match events.last_mut() {
            Some(Ev::Data(last)) => last.extend_from_slice(data),
            _ => events.push(Ev::Data(data.to_vec())),
        }
    }

    /// Decodes `input` in one call, then checks that every split (at each offset, at each
    /// pair of offsets, and byte by byte) gives the same outcome; returns that outcome.
    fn decode_all_splits(input: &[u8]) -> Outcome {
        let whole = run_chunks([input]);
        for at in 0..=input.len() {
            let (a, b) = input.split_at(at);
            assert_eq!(run_chunks([a, b]), whole, "split at {at}: {input:02X?}");
        }
        for at in 0..=input.len() {
            for second in at..=input.len() {
                let chunks = [&input[..at], &input[at..second], &input[second..]];
                assert_eq!(run_chunks(chunks), whole, "split at {at}, {second}");
            }
        }
        assert_eq!(run_chunks(input.chunks(1)), whole, "byte by byte");
        whole
    }

    /// Asserts that `input`, however it is split, decodes to `events` and `answers`.
    fn check(input: &[u8], events: &[Ev], answers: &[u8]) {
        let (got_events, got_answers) = decode_all_splits(input);
        assert_eq!(got_events, events, "events for {input:02X?}");
        assert_eq!(got_answers, answers, "answers for {input:02X?}");
    }

    /// Shorthand for a Data event.
    fn data(bytes: &[u8]) -> Ev {
        Ev::Data(bytes.to_vec())
    }

    /// Concatenates byte strings, to write test inputs readably.
    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    /// What Ctrl-C sends: IAC IP IAC DO TIMING-MARK.
    const CTRL_C: &[u8] = &[IAC, IP, IAC, DO, TIMING_MARK];

    #[test]
    fn constants_have_rfc_854_values() {
        let expected = [
            (IAC, 255),
            (DONT, 254),
            (DO, 253),
            (WONT, 252),
            (WILL, 251),
            (SB, 250),
            (GA, 249),
            (EL, 248),
            (EC, 247),
            (AYT, 246),
            (AO, 245),
            (IP, 244),
            (BRK, 243),
            (DM, 242),
            (NOP, 241),
            (SE, 240),
            (TIMING_MARK, 6),
        ];
        for (constant, value) in expected {
            assert_eq!(constant, value);
        }
    }

    #[test]
    fn empty_input_gives_nothing() {
        check(b"", &[], &[]);
    }

    #[test]
    fn plain_data_is_one_borrowed_event() {
        let input = b"hello, world\r\n";
        let mut calls = 0;
        Decoder::new().decode(input, &mut Vec::new(), |event| {
            calls += 1;
            assert_eq!(event, Event::Data(input));
            if let Event::Data(data) = event {
                assert_eq!(
                    data.as_ptr(),
                    input.as_ptr(),
                    "the run must borrow the input"
                );
            }
        });
        assert_eq!(calls, 1);
        check(input, &[data(input)], &[]);
    }

    #[test]
    fn nul_and_high_bytes_pass_through() {
        let every_byte_but_iac: Vec<u8> = (0x00..=0xFE).collect();
        check(&every_byte_but_iac, &[data(&every_byte_but_iac)], &[]);
        check(&[0, 0, b'a', 0], &[data(&[0, 0, b'a', 0])], &[]);
    }

    #[test]
    fn named_two_byte_commands_are_removed() {
        for cmd in [NOP, DM, AYT, EC, EL, GA, SE] {
            check(&[b'a', IAC, cmd, b'b'], &[data(b"ab")], &[]);
            check(&[IAC, cmd], &[], &[]);
        }
    }

    #[test]
    fn every_undefined_command_byte_is_a_removed_two_byte_command() {
        let special = [IAC, WILL, WONT, DO, DONT, SB, IP, AO, BRK];
        for cmd in (0..=0xFF).filter(|b| !special.contains(b)) {
            // Without the split check: 247 bytes × all splits is slow and adds nothing here.
            let input = [b'a', IAC, cmd, b'b', b'c'];
            assert_eq!(run_chunks([&input[..]]), (vec![data(b"abc")], vec![]));
            assert_eq!(run_chunks(input.chunks(1)), (vec![data(b"abc")], vec![]));
        }
    }

    #[test]
    fn interrupt_abort_and_break_erase_the_line() {
        for cmd in [IP, AO, BRK] {
            check(
                &[b'a', b'b', IAC, cmd, b'c', b'd'],
                &[data(b"ab"), Ev::Erase, data(b"cd")],
                &[],
            );
            check(&[IAC, cmd], &[Ev::Erase], &[]);
            check(&[IAC, cmd, IAC, cmd], &[Ev::Erase, Ev::Erase], &[]);
        }
    }

    #[test]
    fn ctrl_c_erases_the_line_and_answers_the_timing_mark() {
        check(CTRL_C, &[Ev::Erase], &[IAC, WONT, TIMING_MARK]);
        check(&[IAC, IP, IAC, DO, 6], &[Ev::Erase], &[0xFF, 0xFC, 0x06]);
    }

    #[test]
    fn every_ctrl_c_is_answered() {
        let input = cat(&[b"abc", CTRL_C, b"def", CTRL_C, b"ghi\n"]);
        let events = [
            data(b"abc"),
            Ev::Erase,
            data(b"def"),
            Ev::Erase,
            data(b"ghi\n"),
        ];
        let answers = [IAC, WONT, TIMING_MARK, IAC, WONT, TIMING_MARK];
        check(&input, &events, &answers);
    }

    #[test]
    fn timing_mark_is_answered_again_in_a_later_call() {
        let mut decoder = Decoder::new();
        for _ in 0..3 {
            let mut answers = Vec::new();
            let mut events = Vec::new();
            decoder.decode(CTRL_C, &mut answers, |event| {
                events.push(format!("{event:?}"))
            });
            assert_eq!(events, ["EraseLine"]);
            assert_eq!(answers, [IAC, WONT, TIMING_MARK]);
        }
    }

    #[test]
    fn do_is_refused_with_wont_once_per_option() {
        check(&[IAC, DO, 1], &[], &[IAC, WONT, 1]);
        check(&[IAC, DO, 1, IAC, DO, 1], &[], &[IAC, WONT, 1]);
        check(
            &[IAC, DO, 1, IAC, DO, 3, IAC, DO, 1, IAC, DO, 3],
            &[],
            &[IAC, WONT, 1, IAC, WONT, 3],
        );
    }

    #[test]
    fn will_is_refused_with_dont_once_per_option() {
        check(&[IAC, WILL, 3], &[], &[IAC, DONT, 3]);
        check(&[IAC, WILL, 3, IAC, WILL, 3], &[], &[IAC, DONT, 3]);
        // WILL TIMING-MARK gets no special treatment: only DO is a request we must answer.
        check(
            &[IAC, WILL, TIMING_MARK, IAC, WILL, TIMING_MARK],
            &[],
            &[IAC, DONT, TIMING_MARK],
        );
    }

    #[test]
    fn do_and_will_are_remembered_separately() {
        check(
            &[IAC, DO, 1, IAC, WILL, 1, IAC, DO, 1, IAC, WILL, 1],
            &[],
            &[IAC, WONT, 1, IAC, DONT, 1],
        );
    }

    #[test]
    fn refusals_are_remembered_across_calls() {
        let mut decoder = Decoder::new();
        let mut answers = Vec::new();
        decoder.decode(&[IAC, DO, 24, IAC, WILL, 31], &mut answers, |_| {});
        assert_eq!(answers, [IAC, WONT, 24, IAC, DONT, 31]);
        answers.clear();
        decoder.decode(&[IAC, DO, 24, IAC, WILL, 31], &mut answers, |_| {});
        assert_eq!(answers, []);
    }

    #[test]
    fn every_option_code_is_refused_once() {
        let mut decoder = Decoder::new();
        for opt in 0..=0xFF {
            let ask = [IAC, DO, opt, IAC, WILL, opt];
            let mut answers = Vec::new();
            decoder.decode(&ask, &mut answers, |_| {});
            assert_eq!(
                answers,
                [IAC, WONT, opt, IAC, DONT, opt],
                "first time, option {opt}"
            );
            answers.clear();
            decoder.decode(&ask, &mut answers, |_| {});
            let again: &[u8] = if opt == TIMING_MARK {
                &[IAC, WONT, opt]
            } else {
                &[]
            };
            assert_eq!(answers, again, "second time, option {opt}");
        }
    }

    #[test]
    fn wont_and_dont_are_never_answered() {
        for opt in [0, 1, 3, TIMING_MARK, 24, 0xFF] {
            check(&[IAC, WONT, opt, IAC, DONT, opt], &[], &[]);
        }
        let all: Vec<u8> = (0..=0xFF)
            .flat_map(|opt| [IAC, WONT, opt, IAC, DONT, opt])
            .collect();
        assert_eq!(run_chunks([&all[..]]), (vec![], vec![]));
    }

    #[test]
    fn option_byte_may_be_any_value_even_iac() {
        // IAC DO 0xFF is EXOPL; the option byte is not escaped, in or out.
        check(&[IAC, DO, IAC, b'a'], &[data(b"a")], &[IAC, WONT, IAC]);
        check(&[IAC, WILL, IAC, b'a'], &[data(b"a")], &[IAC, DONT, IAC]);
        check(&[IAC, DONT, IAC, b'a'], &[data(b"a")], &[]);
        check(
            &[IAC, DO, SE, IAC, DO, SB, b'x'],
            &[data(b"x")],
            &[IAC, WONT, SE, IAC, WONT, SB],
        );
        check(&[IAC, WONT, IP, b'x'], &[data(b"x")], &[]);
    }

    #[test]
    fn iac_iac_is_a_literal_ff() {
        check(&[IAC, IAC], &[data(&[0xFF])], &[]);
        check(&[b'a', IAC, IAC, b'b'], &[data(&[b'a', 0xFF, b'b'])], &[]);
        check(&[IAC, IAC, IAC, IAC], &[data(&[0xFF, 0xFF])], &[]);
        check(&[IAC, IAC, IAC, IP], &[data(&[0xFF]), Ev::Erase], &[]);
        check(&[IAC, IAC, IAC, DO, 1], &[data(&[0xFF])], &[IAC, WONT, 1]);
        // The escaped byte does not start a command: IAC IAC DO 1 is data FF 'DO' 1.
        check(&[IAC, IAC, DO, 1], &[data(&[0xFF, DO, 1])], &[]);
    }

    #[test]
    fn iac_iac_alone_gives_a_one_byte_ff_event() {
        let mut calls = 0;
        Decoder::new().decode(&[IAC, IAC], &mut Vec::new(), |event| {
            calls += 1;
            assert_eq!(event, Event::Data(&[0xFF]));
        });
        assert_eq!(calls, 1);
    }

    #[test]
    fn subnegotiation_is_discarded() {
        // Terminal type IS "xterm", a typical client subnegotiation.
        let sub = cat(&[&[IAC, SB, 24, 0], b"xterm", &[IAC, SE]]);
        check(&cat(&[b"a", &sub, b"b"]), &[data(b"ab")], &[]);
        check(&sub, &[], &[]);
        check(&[IAC, SB, IAC, SE], &[], &[]);
        check(
            &[IAC, SB, 1, IAC, SE, IAC, SB, 2, IAC, SE, b'z'],
            &[data(b"z")],
            &[],
        );
    }

    #[test]
    fn subnegotiation_with_escaped_iac_inside() {
        let input = [b'a', IAC, SB, 24, b'x', IAC, IAC, b'y', IAC, SE, b'b'];
        check(&input, &[data(b"ab")], &[]);
        // An escaped FF followed by the byte SE is data, not the end: IAC IAC SE is FF, SE.
        let input = [IAC, SB, 1, IAC, IAC, SE, b'x', IAC, SE, b'y'];
        check(&input, &[data(b"y")], &[]);
        check(&[IAC, SB, IAC, IAC, IAC, SE, b'y'], &[data(b"y")], &[]);
    }

    #[test]
    fn bare_se_inside_subnegotiation_is_data() {
        check(&[IAC, SB, 1, SE, b'x', IAC, SE, b'y'], &[data(b"y")], &[]);
    }

    #[test]
    fn other_commands_inside_subnegotiation_are_ignored() {
        // IAC IP, IAC DO x inside SB neither erase nor get answered, and do not end the SB.
        let input = [
            IAC, SB, 1, IAC, IP, b'z', IAC, DO, 1, IAC, WILL, 3, IAC, SB, 2, IAC, SE, b'q',
        ];
        check(&input, &[data(b"q")], &[]);
        // After the SB, negotiation works normally again, and 1 was not marked as answered.
        let after = cat(&[&input, &[IAC, DO, 1]]);
        check(&after, &[data(b"q")], &[IAC, WONT, 1]);
    }

    #[test]
    fn unterminated_subnegotiation_swallows_the_rest() {
        check(&[b'a', IAC, SB, 24, b'x', b'y', b'\n'], &[data(b"a")], &[]);
        check(&[IAC, SB, 24, IAC], &[], &[]);
    }

    #[test]
    fn stray_se_outside_subnegotiation_is_ignored() {
        check(&[b'a', IAC, SE, b'b'], &[data(b"ab")], &[]);
    }

    #[test]
    fn data_around_commands_is_preserved_exactly() {
        let input = cat(&[
            b"one ",
            &[IAC, NOP],
            b"two\r\n",
            &[IAC, DO, 1, IAC, WILL, 3],
            &[0x00, 0x80, 0xFE],
            &[IAC, IAC],
            b"three",
            &[IAC, SB, 31, 0, 80, 0, 24, IAC, SE],
            b"\n",
            &[IAC, AO],
            b"four",
            CTRL_C,
            &[IAC, GA],
            b"five\n",
        ]);
        let mut first = b"one two\r\n".to_vec();
        first.extend_from_slice(&[0x00, 0x80, 0xFE, 0xFF]);
        first.extend_from_slice(b"three\n");
        let events = [
            first,
            Vec::new(),
            b"four".to_vec(),
            Vec::new(),
            b"five\n".to_vec(),
        ];
        let events: Vec<Ev> = events
            .into_iter()
            .map(|d| if d.is_empty() { Ev::Erase } else { Ev::Data(d) })
            .collect();
        let answers = [IAC, WONT, 1, IAC, DONT, 3, IAC, WONT, TIMING_MARK];
        check(&input, &events, &answers);
    }

    #[test]
    fn partial_command_is_held_between_calls() {
        let mut decoder = Decoder::new();
        let mut answers = Vec::new();
        let mut events = Vec::new();
        for byte in [b'x', IAC, IP, IAC, DO] {
            decoder.decode(&[byte], &mut answers, |event| {
                events.push(format!("{event:?}"))
            });
        }
        assert_eq!(events, ["Data([120])", "EraseLine"]);
        assert_eq!(answers, []);
        decoder.decode(&[TIMING_MARK], &mut answers, |_| {
            panic!("no event expected")
        });
        assert_eq!(answers, [IAC, WONT, TIMING_MARK]);
    }

    #[test]
    fn new_equals_default_and_is_small() {
        let decoder = Decoder::new();
        assert_eq!(decoder.state, State::Data);
        assert_eq!(decoder.refused_do, OptionSet::default());
        assert_eq!(decoder.refused_will, OptionSet::default());
        assert!(std::mem::size_of::<Decoder>() <= 72);
    }

    #[test]
    fn option_set_insert_reports_freshness() {
        let mut set = OptionSet::default();
        for opt in [0, 1, 63, 64, 127, 128, 200, 255] {
            assert!(set.insert(opt), "{opt} is new");
            assert!(!set.insert(opt), "{opt} is old");
        }
        assert!(set.insert(2));
    }

    #[test]
    fn escape_iac_doubles_every_ff() {
        let escape = |data: &[u8]| {
            let mut out = b"prefix".to_vec();
            escape_iac(data, &mut out);
            out
        };
        assert_eq!(escape(b""), b"prefix");
        assert_eq!(escape(b"abc"), b"prefixabc");
        assert_eq!(escape(&[0xFF]), b"prefix\xFF\xFF");
        assert_eq!(escape(&[0xFF, 0xFF]), b"prefix\xFF\xFF\xFF\xFF");
        assert_eq!(escape(b"a\xFFb\xFE\xFF"), b"prefixa\xFF\xFFb\xFE\xFF\xFF");
    }

    #[test]
    fn escape_then_decode_round_trips() {
        let every_byte: Vec<u8> = (0..=0xFF).chain((0..=0xFF).rev()).collect();
        for original in [&b""[..], b"abc", &[0xFF], &[0xFF; 5], &every_byte] {
            let mut escaped = Vec::new();
            escape_iac(original, &mut escaped);
            let expected = if original.is_empty() {
                vec![]
            } else {
                vec![data(original)]
            };
            check(&escaped, &expected, &[]);
        }
    }

    /// An independent decoder for the whole input at once, written as plain recursive
    /// descent over the grammar (no carried state), to check the state machine against.
    fn reference(input: &[u8]) -> Outcome {
        let (mut events, mut answers) = (Vec::new(), Vec::new());
        let (mut refused_do, mut refused_will) = ([false; 256], [false; 256]);
        let mut i = 0;
        while i < input.len() {
            if input[i] != IAC {
                push_data(&mut events, &input[i..=i]);
                i += 1;
                continue;
            }
            let Some(&cmd) = input.get(i + 1) else { break };
            i += 2;
            match cmd {
                IAC => push_data(&mut events, &[0xFF]),
                IP | AO | BRK => events.push(Ev::Erase),
                WILL | WONT | DO | DONT => {
                    let Some(&opt) = input.get(i) else { break };
                    i += 1;
                    let seen = &mut refused_do[usize::from(opt)];
                    if cmd == DO && (opt == TIMING_MARK || !*seen) {
                        *seen = true;
                        answers.extend_from_slice(&[IAC, WONT, opt]);
                    }
                    let seen = &mut refused_will[usize::from(opt)];
                    if cmd == WILL && !*seen {
                        *seen = true;
                        answers.extend_from_slice(&[IAC, DONT, opt]);
                    }
                }
                SB => loop {
                    // Inside SB, every IAC takes the next byte with it; only IAC SE ends it.
                    match input.get(i) {
                        None => break,
                        Some(&IAC) => {
                            i += 2;
                            if input.get(i - 1) == Some(&SE) {
                                break;
                            }
                        }
                        Some(_) => i += 1,
                    }
                },
                _ => {}
            }
        }
        (events, answers)
    }

    #[test]
    fn reference_agrees_on_the_fixed_cases() {
        let input = cat(&[b"ab", CTRL_C, &[IAC, SB, 1, IAC, IAC, SE, IAC, SE], b"c"]);
        assert_eq!(reference(&input), run_chunks([&input[..]]));
    }

    /// Feeds `chunks` to a fresh [`Filter`] in `mode`; returns the merged events (answers
    /// as their bytes, in a separate list) and what an end of input adds.
    fn run_filter<'a>(mode: Telnet, chunks: impl IntoIterator<Item = &'a [u8]>) -> Outcome {
        let mut filter = Filter::new(mode);
        let (mut events, mut answers) = (Vec::new(), Vec::new());
        for chunk in chunks {
            let mut at = 0;
            while let Some(event) = filter.next_event(chunk, &mut at, false) {
                match event {
                    Event::Data(data) => push_data(&mut events, data),
                    Event::EraseLine => events.push(Ev::Erase),
                    Event::Answer(bytes) => answers.extend_from_slice(&bytes),
                }
            }
        }
        if let Some(data) = filter.end_of_input() {
            push_data(&mut events, data);
        }
        (events, answers)
    }

    /// Checks that `input` gives `events` and `answers` through a filter in `mode`,
    /// however it is split (every offset, and byte by byte).
    fn check_filter(mode: Telnet, input: &[u8], events: &[Ev], answers: &[u8]) {
        let want = (events.to_vec(), answers.to_vec());
        assert_eq!(run_filter(mode, [input]), want, "{input:02X?}");
        for at in 0..=input.len() {
            let (a, b) = input.split_at(at);
            assert_eq!(run_filter(mode, [a, b]), want, "{input:02X?} split at {at}");
        }
        assert_eq!(
            run_filter(mode, input.chunks(1)),
            want,
            "{input:02X?} byte by byte"
        );
    }

    #[test]
    fn off_passes_every_byte() {
        let input = cat(&[b"a", CTRL_C, &[IAC, IAC, IAC], b"\n"]);
        check_filter(Telnet::Off, &input, &[data(&input)], &[]);
    }

    #[test]
    fn on_decodes_from_the_first_byte() {
        check_filter(
            Telnet::On,
            &cat(&[b"a", CTRL_C]),
            &[data(b"a"), Ev::Erase],
            &[IAC, WONT, 6],
        );
    }

    #[test]
    fn auto_is_byte_exact_until_a_command() {
        // IAC then a byte that is no command, IAC IAC (two data bytes, even before a
        // command byte), and an IAC at the very end: all data.
        let input = [b'a', IAC, b'b', IAC, IAC, DO, IAC, 0xEF, IAC];
        check_filter(Telnet::Auto, &input, &[data(&input)], &[]);
        check_filter(
            Telnet::Auto,
            &[IAC, IAC, IAC],
            &[data(&[IAC, IAC, IAC])],
            &[],
        );
    }

    #[test]
    fn auto_decodes_from_the_first_command_on() {
        // Before the command, IAC IAC is two bytes; after it, one.
        let input = cat(&[&[b'a', IAC, IAC], CTRL_C, &[b'b', IAC, IAC, IAC, b'c']]);
        let events = [data(&[b'a', IAC, IAC]), Ev::Erase, data(&[b'b', IAC])];
        check_filter(Telnet::Auto, &input, &events, &[IAC, WONT, 6]);
        for cmd in SE..=DONT {
            let mut filter = Filter::new(Telnet::Auto);
            let mut at = 0;
            while filter
                .next_event(&[b'x', IAC, cmd, 1], &mut at, false)
                .is_some()
            {}
            assert!(filter.is_decoding(), "{cmd:02X}");
        }
    }

    #[test]
    fn a_pause_keeps_the_rest_until_taken() {
        let input = cat(&[b"ab", CTRL_C, b"cd"]);
        let mut filter = Filter::new(Telnet::Auto);
        let mut at = 0;
        // Data only: the data before the command, then nothing.
        assert_eq!(
            filter.next_event(&input, &mut at, true),
            Some(Event::Data(b"ab"))
        );
        assert_eq!(filter.next_event(&input, &mut at, true), None);
        assert_eq!(
            (at, filter.held_len(), filter.is_decoding()),
            (input.len(), 7, false)
        );
        // Taken back, the rest decodes as it would have.
        let rest = filter.take_paused();
        assert_eq!(filter.held_len(), 0);
        let mut at = 0;
        let mut events = Vec::new();
        while let Some(event) = filter.next_event(&rest, &mut at, false) {
            events.push(event);
        }
        let want = [
            Event::EraseLine,
            Event::Answer([IAC, WONT, 6]),
            Event::Data(b"cd"),
        ];
        assert_eq!(events, want);
        // While decoding, a pause keeps everything, data included.
        assert_eq!(filter.next_event(b"ef", &mut 0, true), None);
        assert_eq!(filter.take_paused(), b"ef");
        assert!(filter.take_paused().is_empty());
    }

    proptest! {
        /// `auto`: any bytes, cut anywhere, give what they give in one piece, and from the
        /// first command on exactly what the decoder gives.
        #[test]
        fn auto_splits_like_one_call_and_decodes_from_the_first_command(
            input in proptest::collection::vec(
                prop_oneof![
                    3 => any::<u8>(),
                    2 => Just(IAC),
                    1 => prop_oneof![Just(DO), Just(WILL), Just(SB), Just(SE), Just(IP)],
                ],
                0..64,
            ),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
            at.push(0);
            at.push(input.len());
            at.sort_unstable();
            let chunks: Vec<&[u8]> = at.windows(2).map(|w| &input[w[0]..w[1]]).collect();
            let whole = run_filter(Telnet::Auto, [&input[..]]);
            prop_assert_eq!(run_filter(Telnet::Auto, chunks), whole.clone());
            prop_assert_eq!(run_filter(Telnet::Auto, input.chunks(1)), whole.clone());
            // Where the first command starts (IAC IAC is two data bytes before it).
            let mut i = 0;
            let command = loop {
                match (input.get(i), input.get(i + 1)) {
                    (Some(&IAC), Some(&next)) if is_command(next) => break Some(i),
                    (Some(&IAC), Some(&IAC)) => i += 2,
                    (Some(_), _) => i += 1,
                    (None, _) => break None,
                }
            };
            let (mut events, mut answers) = (Vec::new(), Vec::new());
            let (exact, rest) = input.split_at(command.unwrap_or(input.len()));
            if !exact.is_empty() {
                events.push(Ev::Data(exact.to_vec()));
            }
            let (decoded, decoded_answers) = run_chunks([rest]);
            for event in decoded {
                match event {
                    Ev::Data(data) => push_data(&mut events, &data),
                    erase => events.push(erase),
                }
            }
            answers.extend(decoded_answers);
            prop_assert_eq!(whole, (events, answers));
        }
    }

    proptest! {
        #[test]
        fn any_split_decodes_like_one_call(
            input in proptest::collection::vec(
                prop_oneof![
                    3 => any::<u8>(),
                    1 => Just(IAC),
                    1 => prop_oneof![Just(DO), Just(WILL), Just(SB), Just(SE), Just(IP)],
                ],
                0..64,
            ),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
            at.push(0);
            at.push(input.len());
            at.sort_unstable();
            let chunks: Vec<&[u8]> = at.windows(2).map(|w| &input[w[0]..w[1]]).collect();
            let whole = run_chunks([&input[..]]);
            prop_assert_eq!(&whole, &reference(&input));
            prop_assert_eq!(run_chunks(chunks), whole.clone());
            prop_assert_eq!(run_chunks(input.chunks(1)), whole.clone());
            // An answer costs the peer at least as many bytes as it costs us.
            prop_assert!(whole.1.len() <= input.len());
        }

        #[test]
        fn escape_round_trips(original in proptest::collection::vec(any::<u8>(), 0..128)) {
            let mut escaped = Vec::new();
            escape_iac(&original, &mut escaped);
            let ffs = original.iter().filter(|&&b| b == IAC).count();
            prop_assert_eq!(escaped.len(), original.len() + ffs);
            let (events, answers) = run_chunks(escaped.chunks(3));
            prop_assert!(answers.is_empty());
            let decoded: Vec<u8> = events
                .into_iter()
                .flat_map(|event| match event {
                    Ev::Data(data) => data,
                    Ev::Erase => panic!("escaped data must not erase"),
                })
                .collect();
            prop_assert_eq!(decoded, original);
        }
    }
}

// Saving and loading the decoder for an upgrade in place.
mod state;

//! Fuzzes the telnet command filter (`echod::protocol::telnet`) against a reference model.
//!
//! The model below is the contract: a byte-at-a-time state machine written straight from
//! RFC 854/855 and the module's documented policy, with none of the decoder's speed-ups (no
//! data runs, no borrowing, no bit sets). For the fuzz input cut into chunks at
//! fuzzer-chosen offsets we check that the [`Decoder`]:
//! - gives the model's events in the model's order: the data bytes, each `EraseLine` at its
//!   place in the data, and each negotiation answer at its place in the reply stream
//!   (`next_event`), and the same data, erases and answer bytes through `decode`;
//! - gives the same result for the input in one piece and byte by byte (split independence);
//! - never reports an empty `Data` event, and every `Data` slice borrows the chunk it came
//!   from (the module promises not to copy);
//! - decodes `escape_iac(data)`, however split, back to exactly `data`, with no erase and no
//!   answer, and `escape_iac` appends without touching what its output already held.
//!
//! Input layout: byte 0 holds the number of cuts (low 4 bits) and, in bit 4, the "alphabet"
//! switch; then two bytes per cut (a big-endian offset, taken modulo the stream length + 1);
//! the rest is the telnet stream. With the alphabet switch on, every stream byte is mapped
//! through [`ALPHABET`], a 16-symbol set dense in IAC and command bytes, so that the fuzzer
//! reaches nested commands (`IAC SB … IAC IAC SE … IAC SE`) far more often than with raw
//! bytes, where only one byte in 256 is an IAC.
//!
//! To adapt the target to another front end for the decoder (a mode that switches telnet
//! handling on at the first command, say), keep [`model`] as the contract and change only
//! [`run_decoder`], the one place that drives the code under test.
#![no_main]

use echod::protocol::telnet::{
    escape_iac, Decoder, Event, AO, BRK, DO, DONT, IAC, IP, NOP, SB, SE, TIMING_MARK, WILL, WONT,
};
use libfuzzer_sys::fuzz_target;

/// The symbols of "alphabet" mode: IAC three times over (it starts every command, and
/// `IAC IAC` needs two), each verb, SB/SE, the three erasing commands, one ignored command,
/// the TIMING-MARK option, another option byte, and one plain data byte.
const ALPHABET: [u8; 16] = [
    IAC,
    IAC,
    IAC,
    DO,
    WILL,
    WONT,
    DONT,
    SB,
    SE,
    IP,
    AO,
    BRK,
    NOP,
    TIMING_MARK,
    1,
    b'a',
];

/// One piece of decoded input, owned, with adjacent data merged: the decoder may split one
/// run of data into several events (the docs say callers must not treat an event as a unit),
/// so we compare data as a byte stream, not as events.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    /// Data bytes, merged with any data right before them.
    Data(Vec<u8>),
    /// `IAC IP`, `IAC AO` or `IAC BRK`.
    Erase,
    /// A negotiation answer, `IAC WONT x` or `IAC DONT x`.
    Answer([u8; 3]),
}

/// Appends `ev` to `out`, merging data into a data event right before it.
fn push(out: &mut Vec<Ev>, ev: Ev) {
    match (out.last_mut(), ev) {
        (Some(Ev::Data(last)), Ev::Data(more)) => last.extend_from_slice(&more),
        (_, ev) => out.push(ev),
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&control, rest)) = input.split_first() else {
        return;
    };
    let cuts = usize::from(control & 0x0F);
    let (offsets, stream) = rest.split_at((2 * cuts).min(rest.len()));
    let stream: Vec<u8> = if control & 0x10 != 0 {
        stream
            .iter()
            .map(|&b| ALPHABET[usize::from(b % 16)])
            .collect()
    } else {
        stream.to_vec()
    };

    let want = model(&stream);
    check_decoder(&stream, offsets, &want);
    check_escape(&stream, offsets);
});

// ---------------------------------------------------------------------------------------
// The model.
// ---------------------------------------------------------------------------------------

/// Where the model is in the telnet grammar (RFC 854), one byte at a time.
#[derive(Debug, Clone, Copy)]
enum Where {
    /// Plain data: every byte but IAC is data.
    Data,
    /// Just after an IAC outside a subnegotiation.
    Iac,
    /// After `IAC <verb>`, waiting for the option byte.
    Verb(u8),
    /// Inside `IAC SB …`: everything is discarded until `IAC SE`.
    Sub,
    /// Just after an IAC inside a subnegotiation.
    SubIac,
}

/// The whole input decoded as the module documents it, one byte at a time.
fn model(input: &[u8]) -> Vec<Ev> {
    let mut out = Vec::new();
    let mut at = Where::Data;
    // Which options we have refused, per verb we answer: each is refused once, except that
    // every DO TIMING-MARK is answered (the client waits for each one).
    let mut refused_do = [false; 256];
    let mut refused_will = [false; 256];
    for &byte in input {
        at = match (at, byte) {
            (Where::Data, IAC) => Where::Iac,
            (Where::Data, _) => {
                push(&mut out, Ev::Data(vec![byte]));
                Where::Data
            }
            // IAC IAC is how a literal 0xFF travels.
            (Where::Iac, IAC) => {
                push(&mut out, Ev::Data(vec![0xFF]));
                Where::Data
            }
            (Where::Iac, WILL | WONT | DO | DONT) => Where::Verb(byte),
            (Where::Iac, SB) => Where::Sub,
            (Where::Iac, IP | AO | BRK) => {
                push(&mut out, Ev::Erase);
                Where::Data
            }
            // Every other two-byte command (NOP, GA, a stray SE, undefined codes) is removed.
            (Where::Iac, _) => Where::Data,
            (Where::Verb(DO), opt) => {
                let first = !std::mem::replace(&mut refused_do[usize::from(opt)], true);
                if first || opt == TIMING_MARK {
                    push(&mut out, Ev::Answer([IAC, WONT, opt]));
                }
                Where::Data
            }
            (Where::Verb(WILL), opt) => {
                if !std::mem::replace(&mut refused_will[usize::from(opt)], true) {
                    push(&mut out, Ev::Answer([IAC, DONT, opt]));
                }
                Where::Data
            }
            // WONT and DONT only confirm what we want anyway: never answered.
            (Where::Verb(_), _) => Where::Data,
            (Where::Sub, IAC) => Where::SubIac,
            (Where::Sub, _) => Where::Sub,
            // Only IAC SE ends a subnegotiation; IAC IAC (an escaped FF) and any other
            // IAC x are part of it.
            (Where::SubIac, SE) => Where::Data,
            (Where::SubIac, _) => Where::Sub,
        };
    }
    out
}

// ---------------------------------------------------------------------------------------
// The decoder under test.
// ---------------------------------------------------------------------------------------

/// Cuts `stream` at the offsets encoded in `offsets` (two bytes each, big-endian, modulo
/// `stream.len() + 1`), giving the chunks in order. Empty chunks are kept: the decoder must
/// accept them too.
fn chunks<'a>(stream: &'a [u8], offsets: &[u8]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = offsets
        .chunks(2)
        .map(|pair| {
            let raw = usize::from(pair[0]) << 8 | usize::from(*pair.get(1).unwrap_or(&0));
            raw % (stream.len() + 1)
        })
        .collect();
    at.push(0);
    at.push(stream.len());
    at.sort_unstable();
    at.windows(2).map(|w| &stream[w[0]..w[1]]).collect()
}

/// Runs one [`Decoder`] over `pieces` in order with `next_event`, checking the per-event
/// promises on the way, and returns the events in the model's form.
fn run_decoder(pieces: &[&[u8]]) -> Vec<Ev> {
    let mut decoder = Decoder::new();
    let mut out = Vec::new();
    for piece in pieces {
        let mut at = 0;
        while let Some(event) = decoder.next_event(piece, &mut at) {
            push(&mut out, owned(piece, event));
        }
    }
    out
}

/// Runs one [`Decoder`] over `pieces` with `decode`, which puts answers in a buffer of their
/// own: returns the data and erase events, and the answer bytes.
fn run_decode(pieces: &[&[u8]]) -> (Vec<Ev>, Vec<u8>) {
    let mut decoder = Decoder::new();
    let (mut out, mut answers) = (Vec::new(), Vec::new());
    for piece in pieces {
        decoder.decode(piece, &mut answers, |event| {
            assert!(
                !matches!(event, Event::Answer(_)),
                "decode reports answers in its buffer, not as events"
            );
            push(&mut out, owned(piece, event));
        });
    }
    (out, answers)
}

/// Converts one decoder event to the model's form, checking that Data is never empty and
/// lies inside `piece`, the input it was decoded from.
fn owned(piece: &[u8], event: Event<'_>) -> Ev {
    match event {
        Event::Data(data) => {
            assert!(!data.is_empty(), "Data events are never empty");
            let inside = piece.as_ptr_range();
            let range = data.as_ptr_range();
            assert!(
                inside.start <= range.start && range.end <= inside.end,
                "Data must borrow the input it came from"
            );
            Ev::Data(data.to_vec())
        }
        Event::EraseLine => Ev::Erase,
        Event::Answer(bytes) => Ev::Answer(bytes),
    }
}

/// Checks the decoder against the model for the fuzzer's split, in one piece, and byte by
/// byte, through both entry points.
fn check_decoder(stream: &[u8], offsets: &[u8], want: &[Ev]) {
    // `decode` must give the same stream with the answers taken out into their own buffer.
    let mut want_events = Vec::new();
    let mut want_answers = Vec::new();
    for ev in want {
        match ev {
            Ev::Answer(bytes) => want_answers.extend_from_slice(bytes),
            other => push(&mut want_events, other.clone()),
        }
    }
    let cut = chunks(stream, offsets);
    let bytes: Vec<&[u8]> = stream.chunks(1).collect();
    for (name, pieces) in [
        ("cut", &cut[..]),
        ("whole", &[stream][..]),
        ("bytes", &bytes),
    ] {
        assert_eq!(run_decoder(pieces), want, "next_event, {name}");
        let (events, answers) = run_decode(pieces);
        assert_eq!(events, want_events, "decode events, {name}");
        assert_eq!(answers, want_answers, "decode answers, {name}");
    }
}

/// Checks that `escape_iac` appends, doubles exactly the FF bytes, and that decoding its
/// output (split by the fuzzer, and in one piece) gives back exactly `data`, nothing else.
fn check_escape(data: &[u8], offsets: &[u8]) {
    let held = b"held";
    let mut out = held.to_vec();
    escape_iac(data, &mut out);
    assert!(out.starts_with(held), "escape_iac appends");
    let escaped = &out[held.len()..];
    let ffs = data.iter().filter(|&&b| b == 0xFF).count();
    assert_eq!(escaped.len(), data.len() + ffs, "one extra byte per FF");

    let want: Vec<Ev> = if data.is_empty() {
        Vec::new()
    } else {
        vec![Ev::Data(data.to_vec())]
    };
    assert_eq!(model(escaped), want, "the model agrees on escaped data");
    assert_eq!(run_decoder(&chunks(escaped, offsets)), want, "escape, cut");
    assert_eq!(run_decoder(&[escaped]), want, "escape, whole");
}

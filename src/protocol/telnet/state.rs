//! A connection's telnet [`Filter`] as bytes, for an upgrade in place: whether it is
//! byte-exact, watching for a first command (`--telnet auto`) or decoding; a command split
//! by the upgrade resumes exactly where it stopped, and options refused before it are not
//! refused twice after it.

use super::{Decoder, Filter, OptionSet, Paused, State, DO, DONT, WILL, WONT};
use crate::config::MAX_BUFFER;
use crate::protocol::state::{Malformed, Read, Reader, Writer};

impl Filter {
    /// Writes the filter: which of its forms it is in, and what that form holds.
    pub fn save(&self, w: &mut Writer) {
        match self {
            Filter::Off => w.u8(0),
            Filter::Watching { held_iac } => {
                w.u8(1);
                w.bool(*held_iac);
            }
            Filter::Decoding(decoder) => {
                w.u8(2);
                decoder.save(w);
            }
            Filter::Paused(paused) => {
                w.u8(3);
                paused.filter.save(w);
                w.bytes(&paused.rest);
            }
        }
    }

    /// Reads a filter written by [`Filter::save`].
    pub fn load(r: &mut Reader<'_>) -> Read<Filter> {
        let filter = Filter::load_unpaused(r)?;
        if !matches!(filter, Filter::Paused(_)) {
            return Ok(filter);
        }
        // A pause holds the filter to go on with, which is never itself paused: read
        // it without recursing, so that garbage cannot nest pauses until the stack ends.
        let inner = Filter::load_unpaused(r)?;
        if matches!(inner, Filter::Paused(_)) {
            return Err(Malformed("a telnet pause inside a pause"));
        }
        // A pause keeps at most one read, which a buffer limit bounds.
        let rest = r.bytes(2 * MAX_BUFFER)?.to_vec();
        Ok(Filter::Paused(Box::new(Paused {
            filter: inner,
            rest,
        })))
    }

    /// One form's tag and contents; a pause comes back as an empty marker for
    /// [`Filter::load`] to fill.
    fn load_unpaused(r: &mut Reader<'_>) -> Read<Filter> {
        Ok(match r.u8()? {
            0 => Filter::Off,
            1 => Filter::Watching {
                held_iac: r.bool()?,
            },
            2 => Filter::Decoding(Box::new(Decoder::load(r)?)),
            3 => Filter::Paused(Box::new(Paused {
                filter: Filter::Off,
                rest: Vec::new(),
            })),
            _ => return Err(Malformed("an unknown telnet filter")),
        })
    }
}

impl Decoder {
    /// Writes the decoder: where it is in the command grammar, and what it refused.
    pub fn save(&self, w: &mut Writer) {
        let Decoder {
            state,
            refused_do,
            refused_will,
        } = self;
        match *state {
            State::Data => w.u8(0),
            State::Iac => w.u8(1),
            State::Option(verb) => {
                w.u8(2);
                w.u8(verb);
            }
            State::Sub => w.u8(3),
            State::SubIac => w.u8(4),
        }
        for set in [refused_do, refused_will] {
            for word in set.words {
                w.u64(word);
            }
        }
    }

    /// Reads a decoder written by [`Decoder::save`].
    pub fn load(r: &mut Reader<'_>) -> Read<Decoder> {
        let state = match r.u8()? {
            0 => State::Data,
            1 => State::Iac,
            2 => match r.u8()? {
                verb @ (WILL | WONT | DO | DONT) => State::Option(verb),
                _ => return Err(Malformed("a telnet verb that is not one")),
            },
            3 => State::Sub,
            4 => State::SubIac,
            _ => return Err(Malformed("an unknown telnet decoder state")),
        };
        let mut sets = [OptionSet::default(), OptionSet::default()];
        for set in &mut sets {
            for word in &mut set.words {
                *word = r.u64()?;
            }
        }
        let [refused_do, refused_will] = sets;
        Ok(Decoder {
            state,
            refused_do,
            refused_will,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::Telnet;

    /// `filter` saved and loaded.
    fn round_trip(filter: &Filter) -> Filter {
        let mut w = Writer::new();
        filter.save(&mut w);
        let bytes = w.into_bytes();
        let mut r = Reader::new(&bytes);
        let copy = Filter::load(&mut r).unwrap();
        r.finish().unwrap();
        copy
    }

    /// Every event of `input` through `filter`, as text (answers included); with
    /// `data_only`, as a connection with lines waiting would ask, then the paused rest.
    fn events(filter: &mut Filter, input: &[u8], data_only: bool) -> Vec<String> {
        let mut out = Vec::new();
        let mut at = 0;
        while let Some(e) = filter.next_event(input, &mut at, data_only) {
            out.push(format!("{e:?}"));
        }
        out
    }

    /// Saves and loads a filter after each byte of `input`, in every mode and with or
    /// without a pause; the copy must then filter the rest exactly as the original does.
    fn survives_a_save_at_every_byte(input: &[u8]) {
        for mode in [Telnet::Off, Telnet::Auto, Telnet::On] {
            for pause in [false, true] {
                for at in 0..=input.len() {
                    let mut original = Filter::new(mode);
                    events(&mut original, &input[..at], pause);
                    let mut copy = round_trip(&original);
                    let rest = |f: &mut Filter| {
                        let mut out = events(f, &input[at..], false);
                        let paused = f.take_paused();
                        out.extend(events(f, &paused, false));
                        out.push(format!("{:?} {}", f.end_of_input(), f.is_decoding()));
                        out
                    };
                    assert_eq!(
                        rest(&mut original),
                        rest(&mut copy),
                        "{mode:?}, pause {pause}, saved at {at}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_filter_saved_mid_command_resumes_mid_command() {
        survives_a_save_at_every_byte(
            b"ab\xff\xfd\x01c\xff\xfb\x03\xff\xfa\x18\x01\xff\xff\xff\xf0d\xff\xffe\xff\xf4\
              \xff\xfd\x01\xff\xfb\x03\xff\xfd\x06\xff\xfd\x06\xff",
        );
        survives_a_save_at_every_byte(b"x\xff\xffy\xff\x01z\xff");
    }

    #[test]
    fn a_bad_verb_state_or_nesting_is_refused() {
        assert!(Decoder::load(&mut Reader::new(&[2, b'x'])).is_err());
        assert!(Decoder::load(&mut Reader::new(&[9])).is_err());
        assert!(Decoder::load(&mut Reader::new(&[0, 1, 2])).is_err());
        assert!(Filter::load(&mut Reader::new(&[7])).is_err());
        assert!(Filter::load(&mut Reader::new(&[1, 2])).is_err());
        // A pause in a pause, and a deep chain of them, are refused without recursion.
        assert!(Filter::load(&mut Reader::new(&[3, 3, 0, 0, 0, 0])).is_err());
        assert!(Filter::load(&mut Reader::new(&[3; 100_000])).is_err());
    }
}

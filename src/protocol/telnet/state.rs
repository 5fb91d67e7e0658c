//! A telnet [`Decoder`] as bytes, for an upgrade in place: a command split by the
//! upgrade resumes exactly where it stopped, and options refused before it are not
//! refused twice after it.

use super::{Decoder, OptionSet, State, DO, DONT, WILL, WONT};
use crate::protocol::state::{Malformed, Read, Reader, Writer};

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

    /// Saves and loads a decoder after each byte of `input`; the copy must then decode
    /// the rest exactly as the original does.
    fn survives_a_save_at_every_byte(input: &[u8]) {
        for at in 0..=input.len() {
            let mut original = Decoder::new();
            let mut answers = Vec::new();
            original.decode(&input[..at], &mut answers, |_| {});
            let mut w = Writer::new();
            original.save(&mut w);
            let bytes = w.into_bytes();
            let mut r = Reader::new(&bytes);
            let mut copy = Decoder::load(&mut r).unwrap();
            r.finish().unwrap();
            let rest = |d: &mut Decoder| {
                let mut out = (Vec::new(), Vec::new());
                d.decode(&input[at..], &mut out.1, |e| out.0.push(format!("{e:?}")));
                out
            };
            assert_eq!(rest(&mut original), rest(&mut copy), "saved at {at}");
        }
    }

    #[test]
    fn a_decoder_saved_mid_command_resumes_mid_command() {
        survives_a_save_at_every_byte(
            b"ab\xff\xfd\x01c\xff\xfb\x03\xff\xfa\x18\x01\xff\xff\xff\xf0d\xff\xffe\xff\xf4\
              \xff\xfd\x01\xff\xfb\x03\xff\xfd\x06\xff\xfd\x06",
        );
    }

    #[test]
    fn a_bad_verb_or_state_is_refused() {
        assert!(Decoder::load(&mut Reader::new(&[2, b'x'])).is_err());
        assert!(Decoder::load(&mut Reader::new(&[9])).is_err());
        assert!(Decoder::load(&mut Reader::new(&[0, 1, 2])).is_err());
    }
}

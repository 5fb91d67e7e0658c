//! The reply checker: does what the server sent match what it should have?
//!
//! This part is *sans-IO*: it never touches a socket or a clock. The
//! connection tells it which replies to expect ([`ReplyChecker::expect`]) and
//! hands it whatever bytes arrive ([`ReplyChecker::feed`]), split wherever
//! TCP happened to split them; it answers how many replies completed and
//! whether anything went wrong. That makes it easy to test exhaustively,
//! which matters: a load generator that miscounts is worse than none.
//!
//! What it checks, in order:
//!
//! 1. the banner: `banner_lines` lines of any content (or exactly the given
//!    text), except that a line starting with `ERR ` is the server refusing
//!    us (`ERR server busy`), not a banner;
//! 2. then every reply, byte for byte, in the order the lines were sent;
//! 3. and nothing else: bytes when no reply is due are an error too.
//!
//! On the first wrong byte we keep collecting the rest of that line (up to a
//! limit) so the report can show what the server actually said, then the
//! checker stops: after one wrong byte nothing later can be trusted.

use std::collections::VecDeque;
use std::rc::Rc;

/// At most this much of a wrong line is kept for the report.
const MAX_SHOWN: usize = 120;
/// How much of a long line we show before the first wrong byte.
const CONTEXT: usize = 40;
/// A banner longer than this without its newline is not a banner.
const MAX_BANNER: usize = 64 * 1024;

/// Where in the conversation the wrong bytes came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Where {
    /// In place of the banner.
    Banner,
    /// In place of a reply.
    Reply,
    /// When no reply was due at all.
    Unexpected,
}

/// A wrong line from the server, for counting and for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// Where it came.
    pub at: Where,
    /// Which reply (0-based) or banner line it was.
    pub index: u64,
    /// Bytes of the line left out before `expected` and `got`: for a long
    /// line we show only the part around the first wrong byte.
    pub skipped: usize,
    /// What we expected there (empty when nothing was due or any banner
    /// would have done), at most `MAX_SHOWN` (120) bytes.
    pub expected: Vec<u8>,
    /// What came instead, up to and including its newline when one came
    /// within `MAX_SHOWN` (120) bytes.
    pub got: Vec<u8>,
}

impl Mismatch {
    /// True when the server sent one of its `ERR ...` lines in its place.
    pub fn is_server_error(&self) -> bool {
        self.got.starts_with(b"ERR ")
    }
}

/// What one call to [`ReplyChecker::feed`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Fed {
    /// The last banner line arrived (now replies may be sent).
    pub banner_done: bool,
    /// How many expected replies were completed, in order.
    pub replies: usize,
    /// A wrong line, complete: the connection is done for.
    pub mismatch: Option<Mismatch>,
}

/// Checks one connection's incoming bytes against what it must receive.
#[derive(Debug)]
pub struct ReplyChecker {
    /// Banner lines still to come.
    banner_left: usize,
    /// The banner as received so far (all its lines).
    banner: Vec<u8>,
    /// The exact banner required, if any.
    banner_wanted: Option<Rc<[u8]>>,
    /// The outstanding replies, concatenated; `expected[..pos]` is matched.
    expected: Vec<u8>,
    pos: usize,
    /// Length of each outstanding reply, oldest first.
    lens: VecDeque<usize>,
    /// Bytes of the oldest outstanding reply already matched.
    front_done: usize,
    /// Replies completed so far (the index of the next one).
    completed: u64,
    /// A wrong line whose rest we are still collecting.
    failing: Option<Mismatch>,
    /// A mismatch was reported; everything after it is ignored.
    dead: bool,
}

impl ReplyChecker {
    /// A checker expecting `banner_lines` lines of banner first, equal to
    /// `banner_wanted` when given.
    pub fn new(banner_lines: usize, banner_wanted: Option<Rc<[u8]>>) -> ReplyChecker {
        ReplyChecker {
            banner_left: banner_lines,
            banner: Vec::new(),
            banner_wanted,
            expected: Vec::new(),
            pos: 0,
            lens: VecDeque::new(),
            front_done: 0,
            completed: 0,
            failing: None,
            dead: false,
        }
    }

    /// Whether the banner has been received in full.
    pub fn banner_done(&self) -> bool {
        self.banner_left == 0
    }

    /// Replies expected but not (completely) received yet.
    pub fn outstanding(&self) -> usize {
        self.lens.len()
    }

    /// True when nothing is owed and nothing half-received: a server close
    /// now is a clean end.
    pub fn is_settled(&self) -> bool {
        self.banner_done() && self.lens.is_empty() && self.failing.is_none() && !self.dead
    }

    /// Records that the reply `prefix` + `line` is due next.
    pub fn expect(&mut self, prefix: &[u8], line: &[u8]) {
        self.expected.extend_from_slice(prefix);
        self.expected.extend_from_slice(line);
        self.lens.push_back(prefix.len() + line.len());
    }

    /// The server closed: a wrong line still being collected is reported as
    /// it is, since no more of it will come.
    pub fn take_unfinished_mismatch(&mut self) -> Option<Mismatch> {
        self.failing.take()
    }

    /// Checks the next bytes from the server, however they were split.
    pub fn feed(&mut self, mut data: &[u8]) -> Fed {
        let mut fed = Fed::default();
        while !data.is_empty() && !self.dead {
            data = if self.failing.is_some() {
                self.collect_wrong_line(data, &mut fed)
            } else if self.banner_left > 0 {
                self.feed_banner(data, &mut fed)
            } else {
                self.feed_replies(data, &mut fed)
            };
        }
        fed
    }

    /// Appends to the wrong line until its newline (or the size limit), then
    /// reports it. Returns the bytes not consumed.
    fn collect_wrong_line<'d>(&mut self, data: &'d [u8], fed: &mut Fed) -> &'d [u8] {
        let failing = self.failing.as_mut().expect("collecting without a failure");
        let room = MAX_SHOWN.saturating_sub(failing.got.len());
        let (line, complete) = up_to_newline(data, room);
        failing.got.extend_from_slice(line);
        if complete || failing.got.len() >= MAX_SHOWN {
            fed.mismatch = self.failing.take();
            self.dead = true;
        }
        &data[line.len()..]
    }

    /// Takes banner bytes up to the end of the current banner line.
    fn feed_banner<'d>(&mut self, data: &'d [u8], fed: &mut Fed) -> &'d [u8] {
        let line_start = self
            .banner
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let (taken, complete) = up_to_newline(data, usize::MAX);
        self.banner.extend_from_slice(taken);
        let rest = &data[taken.len()..];
        let this_line = &self.banner[line_start..];
        let refused = this_line.len() >= 4 && this_line.starts_with(b"ERR ");
        if refused || self.banner.len() > MAX_BANNER {
            self.fail_banner(line_start);
            if complete {
                // The whole wrong line is here already: report it now.
                fed.mismatch = self.failing.take();
                self.dead = true;
            }
            return rest;
        }
        if complete {
            self.banner_left -= 1;
            if self.banner_left == 0 {
                self.check_whole_banner(fed);
            }
        }
        rest
    }

    /// The banner is complete: compare it with the one required, if any.
    fn check_whole_banner(&mut self, fed: &mut Fed) {
        let wanted = self.banner_wanted.clone();
        match wanted {
            Some(wanted) if *wanted != *self.banner => {
                let shown = |b: &[u8]| b[..b.len().min(MAX_SHOWN)].to_vec();
                fed.mismatch = Some(Mismatch {
                    at: Where::Banner,
                    index: 0,
                    skipped: 0,
                    expected: shown(&wanted),
                    got: shown(&self.banner),
                });
                self.dead = true;
            }
            _ => fed.banner_done = true,
        }
        // Nothing needs the banner any more: give its memory back (it adds
        // up over a hundred thousand idle connections).
        self.banner = Vec::new();
    }

    /// Starts collecting a wrong banner line (one that begins at `line_start`).
    fn fail_banner(&mut self, line_start: usize) {
        let got = self.banner[line_start..].to_vec();
        let index = self.banner[..line_start]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        self.start_failure(Where::Banner, index as u64, 0, Vec::new(), got);
    }

    /// Matches bytes against the oldest outstanding reply.
    fn feed_replies<'d>(&mut self, data: &'d [u8], fed: &mut Fed) -> &'d [u8] {
        let Some(&len) = self.lens.front() else {
            self.start_failure(Where::Unexpected, self.completed, 0, Vec::new(), Vec::new());
            return data;
        };
        let want = &self.expected[self.pos..self.pos + (len - self.front_done)];
        let n = want.len().min(data.len());
        if let Some(i) = first_difference(&want[..n], &data[..n]) {
            // Show the line from a little before the wrong byte: what we
            // expected, and what came (the matched part, then the rest).
            let line_start = self.pos - self.front_done;
            let wrong_at = self.front_done + i;
            let skipped = wrong_at.saturating_sub(CONTEXT);
            let shown_end = len.min(skipped + MAX_SHOWN);
            let expected = self.expected[line_start + skipped..line_start + shown_end].to_vec();
            let got = expected[..wrong_at - skipped].to_vec();
            self.start_failure(Where::Reply, self.completed, skipped, expected, got);
            return &data[i..];
        }
        self.pos += n;
        self.front_done += n;
        if self.front_done == len {
            self.lens.pop_front();
            self.front_done = 0;
            self.completed += 1;
            fed.replies += 1;
            self.compact();
        }
        &data[n..]
    }

    fn start_failure(
        &mut self,
        at: Where,
        index: u64,
        skipped: usize,
        expected: Vec<u8>,
        mut got: Vec<u8>,
    ) {
        got.truncate(MAX_SHOWN);
        self.failing = Some(Mismatch {
            at,
            index,
            skipped,
            expected,
            got,
        });
    }

    /// Drops matched bytes from the front of `expected` once they are the
    /// larger part, so a long pipelined run does not grow it without bound
    /// (and we copy each byte at most about once).
    fn compact(&mut self) {
        if self.pos == self.expected.len() {
            self.expected.clear();
            self.pos = 0;
        } else if self.pos >= 4096 && self.pos * 2 >= self.expected.len() {
            self.expected.drain(..self.pos);
            self.pos = 0;
        }
    }
}

/// The leading part of `data` up to and including the first newline, but at
/// most `limit` bytes; and whether that newline was reached.
fn up_to_newline(data: &[u8], limit: usize) -> (&[u8], bool) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) if i < limit => (&data[..=i], true),
        _ => (&data[..data.len().min(limit)], false),
    }
}

/// Index of the first byte where `a` and `b` (of equal length) differ.
fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    if a == b {
        return None;
    }
    a.iter().zip(b).position(|(x, y)| x != y)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BANNER: &[u8] = b"Welcome\n";
    const PREFIX: &[u8] = b"OK...";

    /// A checker with one banner line and three lines sent, plus the exact
    /// bytes a correct server sends back.
    fn three_lines(banner_wanted: Option<&[u8]>) -> (ReplyChecker, Vec<u8>) {
        let mut checker = ReplyChecker::new(1, banner_wanted.map(Rc::from));
        let mut stream = BANNER.to_vec();
        for line in [&b"a\n"[..], b"bb\n", b"\n"] {
            checker.expect(PREFIX, line);
            stream.extend_from_slice(PREFIX);
            stream.extend_from_slice(line);
        }
        (checker, stream)
    }

    /// Feeds `stream` cut at `cuts` and adds up what the checker said.
    fn feed_split(checker: &mut ReplyChecker, stream: &[u8], cuts: &[usize]) -> Fed {
        let mut total = Fed::default();
        let mut start = 0;
        for &end in cuts.iter().chain([stream.len()].iter()) {
            let fed = checker.feed(&stream[start..end]);
            total.banner_done |= fed.banner_done;
            total.replies += fed.replies;
            total.mismatch = total.mismatch.or(fed.mismatch);
            start = end;
        }
        total
    }

    #[test]
    fn correct_replies_split_at_every_pair_of_offsets() {
        let (_, stream) = three_lines(None);
        for i in 0..=stream.len() {
            for j in i..=stream.len() {
                let (mut checker, _) = three_lines(Some(BANNER));
                let fed = feed_split(&mut checker, &stream, &[i, j]);
                assert_eq!(fed.mismatch, None, "cuts {i},{j}");
                assert!(fed.banner_done);
                assert_eq!(fed.replies, 3, "cuts {i},{j}");
                assert!(checker.is_settled());
            }
        }
    }

    #[test]
    fn one_byte_at_a_time() {
        let (mut checker, stream) = three_lines(None);
        let cuts: Vec<usize> = (1..stream.len()).collect();
        let fed = feed_split(&mut checker, &stream, &cuts);
        assert_eq!((fed.replies, fed.mismatch), (3, None));
    }

    #[test]
    fn replies_complete_only_at_their_last_byte() {
        let (mut checker, stream) = three_lines(None);
        let first_reply_end = BANNER.len() + PREFIX.len() + 2;
        let fed = checker.feed(&stream[..first_reply_end - 1]);
        assert!(fed.banner_done);
        assert_eq!(fed.replies, 0);
        assert_eq!(checker.outstanding(), 3);
        assert_eq!(
            checker
                .feed(&stream[first_reply_end - 1..first_reply_end])
                .replies,
            1
        );
        assert_eq!(checker.outstanding(), 2);
        assert!(!checker.is_settled());
    }

    #[test]
    fn any_wrong_byte_is_found_wherever_the_data_is_split() {
        let (_, good) = three_lines(None);
        for wrong_at in BANNER.len()..good.len() {
            let mut bad = good.clone();
            bad[wrong_at] = b'#';
            for cut in 0..=bad.len() {
                let (mut checker, _) = three_lines(None);
                let fed = feed_split(&mut checker, &bad, &[cut]);
                let mismatch = fed.mismatch.unwrap_or_else(|| {
                    checker
                        .take_unfinished_mismatch()
                        .expect("mismatch not noticed")
                });
                assert_eq!(mismatch.at, Where::Reply, "byte {wrong_at}, cut {cut}");
                // The wrong reply is the one containing the wrong byte...
                let reply_starts = [8, 15, 23];
                let index = reply_starts.iter().rposition(|&s| s <= wrong_at).unwrap();
                assert_eq!(mismatch.index, index as u64);
                assert_eq!(fed.replies, index, "only earlier replies count");
                // ...and the report shows it as received.
                let start = reply_starts[index];
                assert_eq!(mismatch.skipped, 0, "short lines are shown whole");
                assert!(bad[start..].starts_with(&mismatch.got), "{mismatch:?}");
                assert!(mismatch.got.len() > wrong_at - start);
            }
        }
    }

    #[test]
    fn the_rest_of_a_wrong_line_is_collected_for_the_report() {
        let mut checker = ReplyChecker::new(0, None);
        checker.expect(PREFIX, b"hello\n");
        let fed = checker.feed(b"OK...jel");
        assert_eq!(fed.mismatch, None, "line not finished yet");
        let fed = checker.feed(b"lo\nmore");
        let mismatch = fed.mismatch.unwrap();
        assert_eq!(mismatch.expected, b"OK...hello\n");
        assert_eq!(mismatch.got, b"OK...jello\n");
        // Once wrong, always wrong: later bytes are ignored.
        assert_eq!(checker.feed(b"OK...hello\n"), Fed::default());
    }

    #[test]
    fn a_long_line_is_shown_around_its_first_wrong_byte() {
        let mut checker = ReplyChecker::new(0, None);
        let line = [vec![b'a'; 10_000], vec![b'\n']].concat();
        checker.expect(PREFIX, &line);
        let mut reply = [PREFIX, &line[..]].concat();
        reply[9_000] = b'#';
        let mismatch = checker.feed(&reply).mismatch.unwrap();
        assert_eq!(mismatch.skipped, 9_000 - CONTEXT);
        assert_eq!(mismatch.expected.len(), MAX_SHOWN);
        assert_eq!(mismatch.got.len(), MAX_SHOWN);
        assert_eq!(mismatch.got[CONTEXT], b'#');
        assert_eq!(mismatch.expected[CONTEXT], b'a');
    }

    #[test]
    fn bytes_when_nothing_is_due_are_unexpected() {
        let mut checker = ReplyChecker::new(0, None);
        let fed = checker.feed(b"surprise\n");
        assert_eq!(fed.mismatch.unwrap().at, Where::Unexpected);
    }

    #[test]
    fn a_server_err_line_is_recognised() {
        let mut checker = ReplyChecker::new(0, None);
        checker.expect(PREFIX, b"x\n");
        let mismatch = checker.feed(b"ERR line too long\n").mismatch.unwrap();
        assert!(mismatch.is_server_error());
        assert_eq!(mismatch.got, b"ERR line too long\n");
    }

    #[test]
    fn err_instead_of_a_banner_is_a_refusal() {
        let mut checker = ReplyChecker::new(1, None);
        let fed = checker.feed(b"ERR server busy\n");
        let mismatch = fed.mismatch.unwrap();
        assert_eq!(mismatch.at, Where::Banner);
        assert!(mismatch.is_server_error());
        assert!(!fed.banner_done);
    }

    #[test]
    fn a_wrong_banner_is_reported_when_one_was_required() {
        let (mut checker, _) = three_lines(Some(b"Hello\n"));
        let fed = checker.feed(b"Welcome\n");
        assert_eq!(fed.mismatch.unwrap().at, Where::Banner);
        assert!(!fed.banner_done);
    }

    #[test]
    fn multi_line_and_absent_banners() {
        let mut two = ReplyChecker::new(2, None);
        assert!(!two.feed(b"one\ntw").banner_done);
        assert!(two.feed(b"o\n").banner_done);
        let none = ReplyChecker::new(0, None);
        assert!(none.banner_done() && none.is_settled());
    }

    #[test]
    fn an_endless_banner_is_an_error() {
        let mut checker = ReplyChecker::new(1, None);
        let fed = checker.feed(&vec![b'x'; MAX_BANNER + 1]);
        let mismatch = fed.mismatch.or_else(|| checker.take_unfinished_mismatch());
        assert_eq!(mismatch.unwrap().at, Where::Banner);
    }

    proptest::proptest! {
        /// Any lines, any prefix, any way of cutting the server's bytes:
        /// a correct stream is all matches, and one wrong byte is found.
        #[test]
        fn random_streams_and_cuts(
            lines in proptest::collection::vec("[ -~]{0,40}", 1..20),
            prefix in "[A-Z.]{0,6}",
            cuts in proptest::collection::vec(1usize..64, 0..40),
            corrupt in proptest::option::of(0usize..10_000),
        ) {
            let mut checker = ReplyChecker::new(1, None);
            let mut stream = b"hello\n".to_vec();
            for line in &lines {
                let line = format!("{line}\n");
                checker.expect(prefix.as_bytes(), line.as_bytes());
                stream.extend_from_slice(prefix.as_bytes());
                stream.extend_from_slice(line.as_bytes());
            }
            let wrong_at = corrupt.map(|c| 6 + c % (stream.len() - 6));
            if let Some(at) = wrong_at {
                stream[at] = 0xff; // never in a printable line
            }
            let mut at = 0;
            let mut offsets = Vec::new();
            for cut in cuts {
                at += cut;
                if at >= stream.len() { break; }
                offsets.push(at);
            }
            let fed = feed_split(&mut checker, &stream, &offsets);
            let mismatch = fed.mismatch.or_else(|| checker.take_unfinished_mismatch());
            proptest::prop_assert!(fed.banner_done);
            match wrong_at {
                None => {
                    proptest::prop_assert_eq!(fed.replies, lines.len());
                    proptest::prop_assert!(mismatch.is_none());
                }
                Some(_) => {
                    proptest::prop_assert!(fed.replies < lines.len());
                    proptest::prop_assert!(mismatch.is_some());
                }
            }
        }
    }

    #[test]
    fn long_pipelined_runs_keep_the_buffer_small() {
        let mut checker = ReplyChecker::new(0, None);
        let line = [b'z'; 99];
        for _ in 0..8 {
            checker.expect(PREFIX, &line);
        }
        let reply = [PREFIX, &line[..]].concat();
        for _ in 0..10_000 {
            assert_eq!(checker.feed(&reply).replies, 1);
            checker.expect(PREFIX, &line);
        }
        assert!(checker.expected.len() < 16 * 1024);
    }
}

//! The little HTTP a scrape needs: one request head in, one response out, then close.
//!
//! We parse the request head with the `httparse` crate: it parses a byte slice in place
//! (no allocation), says "incomplete" until the blank line has arrived, and is the parser
//! under hyper. An HTTP server crate would bring its own event loop and threads; we only
//! need to recognise `GET /metrics`, and to answer everything else with a correct status.
//!
//! Every response says `Connection: close` and carries a `Content-Length`, and the loop
//! closes the connection after sending it. HTTP/1.1 keep-alive would save Prometheus one
//! TCP handshake per scrape (one every 15 s or so); closing keeps a scrape connection a
//! simple three-step life (request, response, close) with nothing to remember in between.
//!
//! Like the rest of the socket-free code, nothing here touches a socket: [`parse`] takes
//! the bytes received so far and [`respond`] appends the bytes to send.

use std::io::Write;

use crate::reactor::metrics::exposition::CONTENT_TYPE;

/// The longest request head we read (request line and headers). A scraper's is a few
/// hundred bytes; this bounds what a connection can make us hold.
pub const MAX_HEAD: usize = 8 * 1024;

/// Header slots for `httparse`, which needs them up front. Prometheus sends 5 or 6.
const MAX_HEADERS: usize = 32;

/// What we answer, decided from the request head (or from the loop, for [`Answer::Busy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// `GET /metrics` (query string ignored), or `HEAD` for the headers only: 200.
    Metrics {
        /// `HEAD`: the same headers, no body.
        head_only: bool,
    },
    /// Any other path: 404.
    NotFound {
        /// `HEAD`: the same headers, no body.
        head_only: bool,
    },
    /// `/metrics` with another method: 405, with `Allow: GET, HEAD`.
    MethodNotAllowed,
    /// Not an HTTP/1.x request head: 400.
    BadRequest,
    /// The head grew past [`MAX_HEAD`] (or has more than 32 headers): 431.
    HeadTooLarge,
    /// Too many scrape connections at once: 503 (sent by the loop at accept time).
    Busy,
}

/// Decides the answer once the head received so far is complete (or hopeless).
/// `None`: incomplete and within [`MAX_HEAD`], read more.
pub fn parse(received: &[u8]) -> Option<Answer> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(received) {
        Ok(httparse::Status::Complete(_)) => {
            // A complete parse always sets the method and the path.
            let (Some(method), Some(target)) = (request.method, request.path) else {
                return Some(Answer::BadRequest);
            };
            Some(route(method, target))
        }
        Ok(httparse::Status::Partial) if received.len() >= MAX_HEAD => Some(Answer::HeadTooLarge),
        Ok(httparse::Status::Partial) => None,
        Err(httparse::Error::TooManyHeaders) => Some(Answer::HeadTooLarge),
        Err(_) => Some(Answer::BadRequest),
    }
}

/// The answer to `method` on `target`: the path first (an unknown path is 404 whatever
/// the method), then the method.
fn route(method: &str, target: &str) -> Answer {
    let path = target.split('?').next().unwrap_or(target);
    let head_only = method == "HEAD";
    match (path, method) {
        ("/metrics", "GET" | "HEAD") => Answer::Metrics { head_only },
        ("/metrics", _) => Answer::MethodNotAllowed,
        _ => Answer::NotFound { head_only },
    }
}

/// Appends the whole response for `answer` to `out`. `exposition` writes the metrics
/// body; it is called only for [`Answer::Metrics`], so other answers cost no snapshot.
pub fn respond(answer: Answer, out: &mut Vec<u8>, exposition: impl FnOnce(&mut Vec<u8>)) {
    let mut body = Vec::new();
    let (status, content_type, head_only) = match answer {
        Answer::Metrics { head_only } => {
            exposition(&mut body);
            ("200 OK", CONTENT_TYPE, head_only)
        }
        Answer::NotFound { head_only } => {
            body.extend_from_slice(b"not found: echod serves /metrics only\n");
            ("404 Not Found", "text/plain; charset=utf-8", head_only)
        }
        Answer::MethodNotAllowed => {
            body.extend_from_slice(b"method not allowed: use GET or HEAD\n");
            ("405 Method Not Allowed", "text/plain; charset=utf-8", false)
        }
        Answer::BadRequest => {
            body.extend_from_slice(b"bad request\n");
            ("400 Bad Request", "text/plain; charset=utf-8", false)
        }
        Answer::HeadTooLarge => {
            body.extend_from_slice(b"request head too large\n");
            let status = "431 Request Header Fields Too Large";
            (status, "text/plain; charset=utf-8", false)
        }
        Answer::Busy => {
            body.extend_from_slice(b"too many scrapes at once\n");
            (
                "503 Service Unavailable",
                "text/plain; charset=utf-8",
                false,
            )
        }
    };
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
        body.len()
    );
    if answer == Answer::MethodNotAllowed {
        out.extend_from_slice(b"Allow: GET, HEAD\r\n");
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    if !head_only {
        out.extend_from_slice(&body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAPE: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9100\r\n\
        User-Agent: Prometheus/2.42.0\r\nAccept: text/plain;version=0.0.4;q=0.5,*/*;q=0.1\r\n\
        X-Prometheus-Scrape-Timeout-Seconds: 10\r\n\r\n";

    /// A scrape is recognised only once its blank line has arrived, wherever it is cut.
    #[test]
    fn a_scrape_is_answered_only_when_complete_at_every_split() {
        for cut in 0..SCRAPE.len() {
            assert_eq!(parse(&SCRAPE[..cut]), None, "cut at {cut}");
        }
        assert_eq!(parse(SCRAPE), Some(Answer::Metrics { head_only: false }));
    }

    #[test]
    fn methods_paths_and_queries_route_as_documented() {
        let answer = |head: &str| parse(head.as_bytes());
        let ok = Some(Answer::Metrics { head_only: false });
        assert_eq!(answer("GET /metrics HTTP/1.0\r\n\r\n"), ok);
        assert_eq!(answer("GET /metrics?x=1 HTTP/1.1\r\n\r\n"), ok);
        assert_eq!(
            answer("HEAD /metrics HTTP/1.1\r\n\r\n"),
            Some(Answer::Metrics { head_only: true })
        );
        assert_eq!(
            answer("GET / HTTP/1.1\r\n\r\n"),
            Some(Answer::NotFound { head_only: false })
        );
        assert_eq!(
            answer("POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
            Some(Answer::MethodNotAllowed)
        );
        assert_eq!(
            answer("GET /metrics HTTQ/1.1\r\n\r\n"),
            Some(Answer::BadRequest)
        );
        assert_eq!(answer("\u{1}\u{2}\r\n\r\n"), Some(Answer::BadRequest));
    }

    #[test]
    fn a_head_over_the_limit_is_too_large() {
        let mut head = b"GET /metrics HTTP/1.1\r\nX-Pad: ".to_vec();
        head.resize(MAX_HEAD - 1, b'a');
        assert_eq!(parse(&head), None);
        head.push(b'a');
        assert_eq!(parse(&head), Some(Answer::HeadTooLarge));
        let many: String = (0..40).map(|i| format!("X-{i}: y\r\n")).collect();
        let head = format!("GET /metrics HTTP/1.1\r\n{many}\r\n");
        assert_eq!(parse(head.as_bytes()), Some(Answer::HeadTooLarge));
    }

    fn response(answer: Answer) -> String {
        let mut out = Vec::new();
        respond(answer, &mut out, |body| body.extend_from_slice(b"m 1\n"));
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn responses_are_byte_exact() {
        assert_eq!(
            response(Answer::Metrics { head_only: false }),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
             Content-Length: 4\r\nConnection: close\r\n\r\nm 1\n"
        );
        assert_eq!(
            response(Answer::Metrics { head_only: true }),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
             Content-Length: 4\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(
            response(Answer::MethodNotAllowed),
            "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 36\r\nAllow: GET, HEAD\r\nConnection: close\r\n\r\n\
             method not allowed: use GET or HEAD\n"
        );
    }

    /// Only a 200 renders the exposition; every response has a length that fits its body.
    #[test]
    fn only_metrics_renders_and_every_length_is_right() {
        for answer in [
            Answer::NotFound { head_only: false },
            Answer::MethodNotAllowed,
            Answer::BadRequest,
            Answer::HeadTooLarge,
            Answer::Busy,
        ] {
            let mut out = Vec::new();
            respond(answer, &mut out, |_| panic!("rendered for {answer:?}"));
            let text = String::from_utf8(out).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .unwrap();
            assert_eq!(length.parse::<usize>().unwrap(), body.len(), "{answer:?}");
        }
    }
}

//! `--metrics`: the real binary serves `GET /metrics` from its one loop, byte-exact HTTP,
//! an exposition that `promtool` accepts and a real Prometheus scrapes, counters that
//! agree with SIGUSR1's line, and no wakeup while nobody scrapes.

mod util;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use util::*;

/// Starts echod with `--metrics 127.0.0.1:0` (and `args`); returns it and the metrics
/// address, learned from its `metrics: serving http://ADDR/metrics` log line.
fn start(args: &[&str]) -> (Echod, SocketAddr) {
    start_timed(args, "")
}

/// [`start`], with the loop's fixed delays shortened (see `Echod::start_timed`).
fn start_timed(args: &[&str], timings: &str) -> (Echod, SocketAddr) {
    let mut all = vec!["--metrics", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let echod = Echod::start_timed(&all, timings);
    let line = echod.expect_log("metrics: serving http://");
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    (echod, addr)
}

/// An HTTP response, split up.
#[derive(Debug)]
struct Response {
    /// `HTTP/1.1 200 OK`.
    status: String,
    /// The header lines, in order, as sent.
    headers: Vec<String>,
    /// Everything after the blank line.
    body: String,
}

impl Response {
    /// The value of header `name` (exact case, as we send it).
    fn header(&self, name: &str) -> Option<&str> {
        let prefix = format!("{name}: ");
        self.headers.iter().find_map(|h| h.strip_prefix(&prefix))
    }
}

/// Sends `request` as is, reads until the server's FIN (a reset fails the test), and
/// splits the response.
fn exchange(addr: SocketAddr, request: &[u8]) -> Response {
    let mut s = connect(addr);
    s.write_all(request).unwrap();
    let raw = String::from_utf8(read_to_fin(&mut s)).expect("an HTTP response in UTF-8");
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in {raw:?}"));
    let mut lines = head.split("\r\n").map(String::from);
    Response {
        status: lines.next().unwrap_or_default(),
        headers: lines.collect(),
        body: body.to_string(),
    }
}

/// `GET /metrics`, checked to be a complete 200; returns the body.
fn scrape(addr: SocketAddr) -> String {
    let r = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: echod\r\n\r\n");
    assert_eq!(r.status, "HTTP/1.1 200 OK", "{r:?}");
    r.body
}

/// The samples of an exposition by series (`name{labels}`), after checking that each
/// belongs to a family with `# HELP` and `# TYPE` and that every value is a number.
fn samples(exposition: &str) -> BTreeMap<String, f64> {
    let mut help = Vec::new();
    let mut typed = Vec::new();
    let mut samples = BTreeMap::new();
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help.push(rest.split(' ').next().unwrap().to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            typed.push(rest.split(' ').next().unwrap().to_string());
        } else {
            let (series, value) = line.rsplit_once(' ').expect("`series value`");
            let name = series.split('{').next().unwrap();
            assert!(help.iter().any(|h| h == name), "no HELP for {line:?}");
            assert!(typed.iter().any(|t| t == name), "no TYPE for {line:?}");
            let value = value
                .parse()
                .unwrap_or_else(|_| panic!("not a number: {line:?}"));
            assert!(
                samples.insert(series.to_string(), value).is_none(),
                "{line}"
            );
        }
    }
    samples
}

/// One sample's value; fails showing the exposition when it is missing.
fn value(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("no {series} in {samples:#?}"))
}

/// The echo connections open now, summed over the `state` label.
fn open_connections(samples: &BTreeMap<String, f64>) -> f64 {
    samples
        .iter()
        .filter(|(series, _)| series.starts_with("echod_connections{"))
        .map(|(_, v)| v)
        .sum()
}

/// Scrapes until `done` holds (at most [`TIMEOUT`]); returns the last samples.
fn scrape_until(
    addr: SocketAddr,
    what: &str,
    done: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let now = samples(&scrape(addr));
        if done(&now) {
            return now;
        }
        assert!(Instant::now() < deadline, "never saw {what}: {now:#?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `GET /metrics` is a 200 with the exposition's content type, an exact length, and
/// `Connection: close`, followed by a clean FIN; every sample has HELP and TYPE.
#[test]
fn get_metrics_serves_the_exposition_and_closes() {
    let (_echod, addr) = start(&[]);
    let r = exchange(
        addr,
        b"GET /metrics?ignored=1 HTTP/1.1\r\nHost: echod\r\n\r\n",
    );
    assert_eq!(r.status, "HTTP/1.1 200 OK");
    assert_eq!(
        r.headers[0],
        "Content-Type: text/plain; version=0.0.4; charset=utf-8"
    );
    assert_eq!(r.header("Content-Length"), Some(&*r.body.len().to_string()));
    assert_eq!(r.header("Connection"), Some("close"));
    let samples = samples(&r.body);
    assert_eq!(value(&samples, "echod_connections{state=\"open\"}"), 0.0);
    assert_eq!(value(&samples, "echod_connections_accepted_total"), 0.0);
    let version = format!(
        "echod_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(value(&samples, &version), 1.0);
    let started = value(&samples, "echod_process_start_time_seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(started <= now && started > now - 60.0, "{started} vs {now}");
}

/// HEAD, another path, another method, a malformed request and an oversized head each
/// get their exact status, always with a `Content-Length` and then a clean FIN.
#[test]
fn other_requests_get_exact_statuses() {
    let (_echod, addr) = start(&[]);

    let head = exchange(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(head.status, "HTTP/1.1 200 OK");
    let length: usize = head.header("Content-Length").unwrap().parse().unwrap();
    assert!(
        length > 1000,
        "HEAD announces the GET body's length: {length}"
    );
    assert_eq!(head.body, "", "HEAD has no body");

    let cases: [(&[u8], &str, &str); 4] = [
        (
            b"GET / HTTP/1.1\r\n\r\n",
            "HTTP/1.1 404 Not Found",
            "not found: echod serves /metrics only\n",
        ),
        (
            b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            "HTTP/1.1 405 Method Not Allowed",
            "method not allowed: use GET or HEAD\n",
        ),
        (
            b"GET /metrics HTTQ/1.1\r\n\r\n",
            "HTTP/1.1 400 Bad Request",
            "bad request\n",
        ),
        (b"hello\n", "HTTP/1.1 400 Bad Request", "bad request\n"),
    ];
    for (request, status, body) in cases {
        let r = exchange(addr, request);
        assert_eq!((&*r.status, &*r.body), (status, body), "{request:?}");
        assert_eq!(r.header("Content-Length"), Some(&*body.len().to_string()));
        assert_eq!(r.header("Connection"), Some("close"));
    }
    let post = exchange(addr, b"POST /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(post.header("Allow"), Some("GET, HEAD"));

    // 9000 bytes of head and no end: answered at 8 KiB, the rest read and dropped, so
    // the close is a FIN and the 431 arrives intact.
    let mut big = b"GET /metrics HTTP/1.1\r\nX-Pad: ".to_vec();
    big.resize(9000, b'a');
    let r = exchange(addr, &big);
    assert_eq!(r.status, "HTTP/1.1 431 Request Header Fields Too Large");
    assert_eq!(r.body, "request head too large\n");
}

/// The real `promtool check metrics` accepts the exposition (with traffic in it, so the
/// labelled series have values), reporting no lint problem.
#[test]
fn promtool_accepts_the_exposition() {
    if !have_tool("promtool") {
        return;
    }
    let (echod, addr) = start(&[]);
    let mut s = echod.connect_greeted();
    assert_echoes(&mut s, &["some", "traffic"]);
    let body = scrape(addr);
    let mut cmd = Command::new("promtool");
    cmd.args(["check", "metrics"]);
    let out = run_with_input(cmd, body.as_bytes(), TIMEOUT);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool: {}\n{said}", out.status);
    assert_eq!(said, "", "promtool found problems");
}

/// A silent scraper is closed after the scrape timeout (a FIN, no response). The
/// timeout is 10 s; the test shortens it to 700 ms.
#[test]
fn a_silent_scraper_is_closed_after_the_scrape_timeout() {
    let (_echod, addr) = start_timed(&[], "scrape=700");
    let t0 = Instant::now();
    let mut s = connect(addr);
    assert_eq!(read_to_end(&mut s), b"");
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(700), "closed after {took:?}");
}

/// 64 scrape connections at once; the 65th gets a 503 and a clean FIN. Once they close,
/// scrapes are served again.
#[test]
fn scrapes_have_their_own_limit() {
    let (_echod, addr) = start(&[]);
    let open: Vec<TcpStream> = (0..64).map(|_| connect(addr)).collect();
    let r = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(r.status, "HTTP/1.1 503 Service Unavailable");
    assert_eq!(r.body, "too many scrapes at once\n");
    drop(open);
    // Their FINs and our next connect may land in one batch, before their slots are
    // freed, so we retry until a scrape is served.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let r = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
        if r.status == "HTTP/1.1 200 OK" {
            break;
        }
        assert!(Instant::now() < deadline, "still {}", r.status);
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The counters a scrape shows are the ones SIGUSR1 logs, after echoes, a line too
/// long, a full server (which still answers scrapes) and a refusal.
#[test]
fn counters_agree_with_sigusr1() {
    let (echod, addr) = start(&["--max-connections", "3", "--max-line", "8"]);
    let mut a = echod.connect_greeted();
    assert_echoes(&mut a, &["one", "two"]);
    send_and_close(&mut a, b"");
    assert_eq!(read_to_fin(&mut a), b"");
    let mut b = echod.connect_greeted();
    b.write_all(b"0123456789\n").unwrap();
    assert_eq!(read_to_fin(&mut b), b"ERR line too long\n");
    drop(b);
    scrape_until(addr, "a and b closed", |s| {
        open_connections(s) == 0.0
            && s.get("echod_connections_closed_total{reason=\"line_too_long\"}") == Some(&1.0)
    });
    let held: Vec<TcpStream> = (0..3).map(|_| echod.connect_greeted()).collect();
    let mut refused = echod.connect();
    assert_eq!(read_to_end(&mut refused), b"ERR server busy\n");

    let scraped = samples(&scrape(addr));
    echod.signal("USR1");
    let line = echod.expect_log("stats: accepted=");
    let logged: BTreeMap<&str, f64> = line
        .split_whitespace()
        .filter_map(|word| word.split_once('='))
        .map(|(k, v)| (k, v.parse().expect("a number")))
        .collect();
    let pairs = [
        (
            "accepted",
            "echod_connections_accepted_total".to_string(),
            5.0,
        ),
        ("peak_connections", "echod_connections_peak".into(), 3.0),
        (
            "refused_busy",
            "echod_connections_refused_total{reason=\"busy\"}".into(),
            1.0,
        ),
        (
            "refused_per_ip",
            "echod_connections_refused_total{reason=\"per_ip\"}".into(),
            0.0,
        ),
        (
            "out_of_fds_episodes",
            "echod_out_of_fds_episodes_total".into(),
            0.0,
        ),
        (
            "client_closed",
            "echod_connections_closed_total{reason=\"client_closed\"}".into(),
            1.0,
        ),
        (
            "line_too_long",
            "echod_connections_closed_total{reason=\"line_too_long\"}".into(),
            1.0,
        ),
        (
            "error",
            "echod_connections_closed_total{reason=\"error\"}".into(),
            0.0,
        ),
        ("lines", "echod_lines_total".into(), 2.0),
        // "one\ntwo\n" and "0123456789\n".
        ("bytes_in", "echod_bytes_received_total".into(), 19.0),
        // Five banners, two replies and the error; the refusal has no slot and no count.
        (
            "bytes_out",
            "echod_bytes_sent_total".into(),
            5.0 * 52.0 + 18.0 + 18.0,
        ),
        (
            "log_lines_dropped",
            "echod_log_lines_dropped_total".into(),
            0.0,
        ),
    ];
    for (key, series, want) in pairs {
        assert_eq!(
            logged[key],
            value(&scraped, &series),
            "{key} vs {series}: {line}"
        );
        assert_eq!(value(&scraped, &series), want, "{series}");
    }
    assert_eq!(logged["active"], open_connections(&scraped));
    assert_eq!(value(&scraped, "echod_connections{state=\"open\"}"), 3.0);
    assert_eq!(value(&scraped, "echod_connections_max"), 3.0);
    assert_eq!(value(&scraped, "echod_buffered_bytes"), 0.0);
    drop(held);
}

/// With `--metrics` on and nobody scraping, the loop does not wake up: not at all when
/// idle, not with an idle echo client, and not after a scrape has come and gone (its
/// deadline, shortened here to 300 ms, is not left armed).
#[test]
fn metrics_cost_no_wakeups_while_nobody_scrapes() {
    let (echod, addr) = start_timed(&[], "scrape=300");
    let span = Duration::from_millis(800);
    assert_eq!(echod.idle_wakeups(span), 0, "idle, no client");
    let _client = echod.connect_greeted();
    assert_eq!(echod.idle_wakeups(span), 0, "one idle echo client");
    scrape(addr);
    assert_eq!(echod.idle_wakeups(span), 0, "after a scrape closed");
}

/// A real Prometheus server, started by the test, killed (and its data removed) on drop.
struct Prometheus {
    /// The `prometheus` process.
    child: Child,
    /// Its config, data and log.
    dir: PathBuf,
    /// Its web address (the query API).
    addr: SocketAddr,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` every second, on a free loopback port.
    fn start(target: SocketAddr) -> Prometheus {
        let dir = std::env::temp_dir().join(format!(
            "echod-prometheus-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: echod\n    static_configs:\n\
             \x20     - targets: ['{target}']\n"
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        // A port the kernel just gave us, released for Prometheus to bind.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap();
        let log = std::fs::File::create(dir.join("log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn prometheus");
        Prometheus { child, dir, addr }
    }

    /// Its log so far, to explain a failure.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// The raw answer of the query API to `promql` (`None` while Prometheus is not up).
    fn api(&self, promql: &str) -> Option<String> {
        let mut s = TcpStream::connect_timeout(&self.addr, TIMEOUT).ok()?;
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        // Every byte but the unreserved ones percent-encoded, so any PromQL fits the URL.
        let encoded: String = promql
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    char::from(b).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        // HTTP/1.0: the answer is not chunked, and the server closes after it.
        let request = format!("GET /api/v1/query?query={encoded} HTTP/1.0\r\n\r\n");
        s.write_all(request.as_bytes()).ok()?;
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut s, &mut raw).ok()?;
        Some(String::from_utf8_lossy(&raw).into_owned())
    }

    /// The value of a PromQL query's first result, as Prometheus prints it (`"7"`), or
    /// `None` while Prometheus is not up or has no result yet.
    fn query(&self, promql: &str) -> Option<String> {
        // {"status":"success","data":{"resultType":"vector","result":[{"metric":{},
        //  "value":[1700000000.123,"7"]}]}}
        let raw = self.api(promql)?;
        let after = raw.split("\"value\":[").nth(1)?;
        let value = after.split(",\"").nth(1)?.split('"').next()?;
        Some(value.to_string())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A real Prometheus scrapes echod every second and sees the 7 echo clients we open.
#[test]
fn prometheus_scrapes_echod() {
    if !have_tool("prometheus") {
        return;
    }
    let (echod, addr) = start(&[]);
    let prometheus = Prometheus::start(addr);
    let clients: Vec<TcpStream> = (0..7).map(|_| echod.connect_greeted()).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = None;
    while last.as_deref() != Some("7") {
        assert!(
            Instant::now() < deadline,
            "Prometheus said {last:?} for sum(echod_connections) after 30 s; its log:\n{}",
            prometheus.log()
        );
        std::thread::sleep(Duration::from_millis(200));
        last = prometheus.query("sum(echod_connections)");
    }
    assert_eq!(prometheus.query("up").as_deref(), Some("1"));
    // Every query OPERATIONS.md suggests is valid PromQL over these series.
    for promql in documented("promql")[0].lines() {
        let answer = prometheus.api(promql).unwrap_or_default();
        assert!(
            answer.contains("\"status\":\"success\""),
            "{promql}: {answer}"
        );
    }
    drop(clients);
}

/// The fenced code blocks in `lang` of the "Metrics" section of docs/OPERATIONS.md.
fn documented(lang: &str) -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/OPERATIONS.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let section = doc
        .split("\n## Metrics\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("a Metrics section in OPERATIONS.md");
    let fence = format!("```{lang}");
    let mut blocks = Vec::new();
    let mut open: Option<String> = None;
    for line in section.lines() {
        match open.as_mut() {
            None if line == fence => open = Some(String::new()),
            None => {}
            Some(_) if line == "```" => blocks.extend(open.take()),
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
        }
    }
    assert!(
        !blocks.is_empty(),
        "no {fence} block in the Metrics section"
    );
    blocks
}

/// The scrape job and the alert rules that OPERATIONS.md shows pass `promtool check`.
#[test]
fn the_documented_scrape_job_and_rules_pass_promtool() {
    if !have_tool("promtool") {
        return;
    }
    let yaml = documented("yaml");
    assert_eq!(yaml.len(), 2, "a scrape config, then the rules");
    let dir = std::env::temp_dir().join(format!("echod-promtool-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (kind, text) in [("config", &yaml[0]), ("rules", &yaml[1])] {
        let file = dir.join(format!("{kind}.yml"));
        std::fs::write(&file, text).unwrap();
        let mut cmd = Command::new("promtool");
        cmd.arg("check").arg(kind).arg(&file);
        let out = run_with_input(cmd, b"", TIMEOUT);
        assert!(
            out.status.success(),
            "promtool check {kind}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

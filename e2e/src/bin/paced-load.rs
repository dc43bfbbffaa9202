//! `paced-load`: an open-loop HTTP/1.1 load at a fixed rate, evenly paced, for the
//! benchmarks in `e2e/bench`.
//!
//! Why our own: the fixed-rate loads of the packaged tools do not pace. h2load's `--rps`
//! sends what is due at a ~10 ms tick back to back, and with several connections every
//! connection's tick fires together (bursts of 20 requests every 10 ms at "2000/s over
//! 10 connections"); its `--timing-script-file` and oha's `-q` wake on millisecond
//! timers. Their latency percentiles then mostly measure queueing behind the burst.
//! wrk2 is not packaged here. This tool schedules request `k` at `start + k / rate`,
//! sends it on connection `k mod conns` (so each connection carries every `conns`-th
//! request and the requests of all connections interleave evenly). A request sent late
//! because its connection was still busy counts its latency from the due time, so the
//! wait is not hidden (no coordinated omission); otherwise latency counts from the send.
//!
//! ```text
//! paced-load --url http://api:8080/1k.txt --rate 2000 --conns 10 --seconds 10 \
//!     --log requests.log [--method POST --body-file call.json] [--header 'K: V']...
//! ```
//!
//! The log has h2load's `--log-file` format (start in µs since the epoch, status,
//! µs to the whole response), one line per request, so `e2e/bench/lib.sh` reads both
//! the same way. One summary line goes to stdout, starting `paced:`. It exits non-zero
//! when a connection fails (the log still has every request completed before).

use std::fmt::Write as _;
use std::io::{self, BufWriter, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What to send, how often and where to write the log.
struct Plan {
    host_port: String,
    request: Vec<u8>,
    rate: u64,
    conns: u64,
    seconds: u64,
    log: String,
}

/// One completed request: scheduled start (µs since the epoch), status, µs to the end
/// of the response (from the due time when the connection was still busy then, else
/// from the send), and how late it was sent.
struct Sample {
    start_us: u64,
    status: u16,
    latency_us: u64,
    send_lag_us: u64,
}

fn main() -> ExitCode {
    match parse_args(std::env::args().skip(1).collect()) {
        Ok(plan) => match run(&plan) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("paced-load: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!(
                "paced-load: {e}\nusage: paced-load --url http://HOST:PORT/PATH --rate N --conns N --seconds N --log FILE [--method M] [--body-file F] [--header 'K: V']..."
            );
            ExitCode::from(2)
        }
    }
}

fn parse_args(args: Vec<String>) -> Result<Plan, String> {
    let (mut url, mut log, mut method, mut body_file) = (None, None, "GET".to_string(), None);
    let (mut rate, mut conns, mut seconds) = (0u64, 1u64, 0u64);
    let mut headers = Vec::new();
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: '{v}' is not a whole number"))
        };
        match flag.as_str() {
            "--url" => url = Some(value()?),
            "--log" => log = Some(value()?),
            "--method" => method = value()?,
            "--body-file" => body_file = Some(value()?),
            "--header" => headers.push(value()?),
            "--rate" => rate = number(value()?)?,
            "--conns" => conns = number(value()?)?,
            "--seconds" => seconds = number(value()?)?,
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    let url = url.ok_or("--url is required")?;
    let log = log.ok_or("--log is required")?;
    if rate == 0 || conns == 0 || seconds == 0 {
        return Err("--rate, --conns and --seconds must be > 0".into());
    }
    if conns > rate {
        return Err(format!(
            "--conns {conns} is more than --rate {rate}: some connections would carry no request"
        ));
    }
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("--url '{url}': only http:// URLs are supported"))?;
    let (host_port, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if host_port.is_empty() {
        return Err(format!("--url '{url}' has no host"));
    }
    let host_port = if host_port.contains(':') && !host_port.ends_with(']') {
        host_port.to_string()
    } else {
        format!("{host_port}:80")
    };
    let body = match body_file {
        Some(f) => std::fs::read(&f).map_err(|e| format!("--body-file {f}: {e}"))?,
        None => Vec::new(),
    };
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\n",
        host_port.trim_end_matches(":80")
    );
    for h in &headers {
        if !h.contains(':') || h.contains(['\r', '\n']) {
            return Err(format!("--header '{h}' is not a 'Name: value' line"));
        }
        let _ = write!(head, "{h}\r\n");
    }
    if !body.is_empty() || method != "GET" {
        let _ = write!(head, "Content-Length: {}\r\n", body.len());
    }
    head.push_str("\r\n");
    let mut request = head.into_bytes();
    request.extend_from_slice(&body);
    Ok(Plan {
        host_port,
        request,
        rate,
        conns,
        seconds,
        log,
    })
}

fn run(plan: &Plan) -> Result<(), String> {
    let addr = plan
        .host_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", plan.host_port))?
        .next()
        .ok_or_else(|| format!("{} resolves to no address", plan.host_port))?;
    // The default 50 µs timer slack would make every sleep wake up to 50 µs late; the
    // connection threads inherit this thread's setting.
    if let Err(e) = nix::sys::prctl::set_timerslack(1) {
        eprintln!("paced-load: cannot set timer slack ({e}); sends may be up to ~50 us late");
    }
    let streams = (0..plan.conns)
        .map(|_| {
            let s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
            s.set_nodelay(true).map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .map_err(|e| e.to_string())?;
            Ok(s)
        })
        .collect::<Result<Vec<_>, String>>()?;

    let total = plan.rate * plan.seconds;
    let period = Duration::from_secs_f64(1.0 / plan.rate as f64);
    // A common origin a little ahead, so every thread is waiting when it comes.
    let origin = Instant::now() + Duration::from_millis(20);
    let origin_epoch_us = epoch_us() + 20_000;
    let results: Vec<(Vec<Sample>, Option<String>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = streams
            .into_iter()
            .enumerate()
            .map(|(c, stream)| {
                scope.spawn(move || {
                    let mut samples = Vec::new();
                    let ks = (c as u64..total).step_by(plan.conns as usize);
                    let err =
                        connection(stream, plan, ks, origin, origin_epoch_us, &mut samples).err();
                    (samples, err)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a connection thread panicked"))
            .collect()
    });

    let mut samples: Vec<Sample> = Vec::with_capacity(total as usize);
    let mut errors = Vec::new();
    for (s, e) in results {
        samples.extend(s);
        errors.extend(e);
    }
    samples.sort_by_key(|s| s.start_us);
    let file = std::fs::File::create(&plan.log).map_err(|e| format!("{}: {e}", plan.log))?;
    let mut out = BufWriter::new(file);
    for s in &samples {
        writeln!(out, "{}\t{}\t{}", s.start_us, s.status, s.latency_us)
            .map_err(|e| e.to_string())?;
    }
    out.flush().map_err(|e| e.to_string())?;

    let mut lags: Vec<u64> = samples.iter().map(|s| s.send_lag_us).collect();
    lags.sort_unstable();
    let pct = |p: usize| {
        lags.get((lags.len() * p).div_ceil(100).saturating_sub(1))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "paced: {} requests over {} connections at {}/s, one every {} us; sent late by p50 {} us, p99 {} us, max {} us",
        samples.len(),
        plan.conns,
        plan.rate,
        period.as_micros(),
        pct(50),
        pct(99),
        lags.last().copied().unwrap_or(0)
    );
    match errors.first() {
        Some(e) => Err(format!(
            "{} of {} connections failed; first: {e}",
            errors.len(),
            plan.conns
        )),
        None => Ok(()),
    }
}

/// Sends this connection's requests (numbers `ks`) each at its scheduled time and
/// reads each response whole before the next.
fn connection(
    mut stream: TcpStream,
    plan: &Plan,
    ks: impl Iterator<Item = u64>,
    origin: Instant,
    origin_epoch_us: u64,
    samples: &mut Vec<Sample>,
) -> Result<(), String> {
    let mut reader = ResponseReader::default();
    let mut free_at = origin;
    for k in ks {
        let due = origin + Duration::from_nanos(k * 1_000_000_000 / plan.rate);
        wait_until(due);
        let sent = Instant::now();
        stream
            .write_all(&plan.request)
            .map_err(|e| format!("request {k}: write: {e}"))?;
        let status = reader
            .read_response(&mut stream)
            .map_err(|e| format!("request {k}: {e}"))?;
        let done = Instant::now();
        // A request that waited for this connection's previous response counts its wait
        // from the due time (the server held it up); otherwise latency counts from the
        // send, so the few µs a sleeping thread wakes late are not charged to the server.
        let from = if free_at > due { due } else { sent };
        free_at = done;
        samples.push(Sample {
            start_us: origin_epoch_us + (due - origin).as_micros() as u64,
            status,
            latency_us: (done - from).as_micros() as u64,
            send_lag_us: (sent - due).as_micros() as u64,
        });
    }
    Ok(())
}

/// Sleeps until `due`. No spinning: on the one core a pinned load generator has, a
/// spinning thread would hold up the wake-up of another connection's thread (the
/// scheduler lets a running thread finish its slice), which is worse than the few µs
/// a sleep with 1 ns timer slack (set in `run`) wakes late.
fn wait_until(due: Instant) {
    let now = Instant::now();
    if due > now {
        std::thread::sleep(due - now);
    }
}

fn epoch_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Reads HTTP/1.1 responses off one connection: the head, then a body framed by
/// Content-Length or chunked encoding. Bytes past one response stay for the next.
#[derive(Default)]
struct ResponseReader {
    buf: Vec<u8>,
}

impl ResponseReader {
    fn read_response(&mut self, stream: &mut TcpStream) -> Result<u16, String> {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            self.fill(stream)?;
        };
        let head = std::str::from_utf8(&self.buf[..head_end])
            .map_err(|_| "response head is not UTF-8".to_string())?;
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| format!("bad status line: {:?}", head.lines().next().unwrap_or("")))?;
        let header = |name: &str| {
            head.lines().skip(1).find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_ascii_lowercase())
            })
        };
        let chunked = header("transfer-encoding").is_some_and(|v| v.contains("chunked"));
        let length = header("content-length").map(|v| {
            v.parse::<usize>()
                .map_err(|_| format!("bad content-length {v:?}"))
        });
        self.buf.drain(..head_end);
        if chunked {
            self.skip_chunked(stream)?;
        } else if let Some(length) = length {
            let length = length?;
            while self.buf.len() < length {
                self.fill(stream)?;
            }
            self.buf.drain(..length);
        } else if status >= 200 && status != 204 && status != 304 {
            return Err(format!(
                "status {status} with neither content-length nor chunked body"
            ));
        }
        Ok(status)
    }

    fn skip_chunked(&mut self, stream: &mut TcpStream) -> Result<(), String> {
        loop {
            let line_end = loop {
                if let Some(i) = find(&self.buf, b"\r\n") {
                    break i;
                }
                self.fill(stream)?;
            };
            let size_text = std::str::from_utf8(&self.buf[..line_end]).unwrap_or("");
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| format!("bad chunk size {size_text:?}"))?;
            // The size line, the data and its CRLF; the last chunk is followed by an
            // empty trailer line.
            let need = line_end + 2 + size + 2;
            while self.buf.len() < need {
                self.fill(stream)?;
            }
            self.buf.drain(..need);
            if size == 0 {
                return Ok(());
            }
        }
    }

    fn fill(&mut self, stream: &mut TcpStream) -> Result<(), String> {
        let mut chunk = [0u8; 16 * 1024];
        match stream.read(&mut chunk) {
            Ok(0) => Err("connection closed by the server".into()),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(format!("read: {e}")),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// Serves `responses` back to back, one per request head received, on loopback.
    fn serve(responses: Vec<&'static [u8]>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = Vec::new();
            for r in responses {
                while find(&buf, b"\r\n\r\n").is_none() {
                    let mut chunk = [0u8; 1024];
                    let n = s.read(&mut chunk).unwrap();
                    buf.extend_from_slice(&chunk[..n]);
                }
                let end = find(&buf, b"\r\n\r\n").unwrap() + 4;
                buf.drain(..end);
                // Split the response in two writes so the reader must wait for the rest.
                let (a, b) = r.split_at(r.len() / 2);
                s.write_all(a).unwrap();
                s.flush().unwrap();
                std::thread::sleep(Duration::from_millis(5));
                s.write_all(b).unwrap();
            }
        });
        addr.to_string()
    }

    #[test]
    fn reads_length_and_chunked_bodies_on_one_connection() {
        let addr = serve(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            b"HTTP/1.1 202 Accepted\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n4;x=y\r\ndefg\r\n0\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
        ]);
        let mut stream = TcpStream::connect(&addr).unwrap();
        let mut reader = ResponseReader::default();
        let mut statuses = Vec::new();
        for _ in 0..3 {
            stream
                .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            statuses.push(reader.read_response(&mut stream).unwrap());
        }
        assert_eq!(statuses, [200, 202, 404]);
        assert!(reader.buf.is_empty(), "bytes left over: {:?}", reader.buf);
    }

    #[test]
    fn builds_a_post_with_headers_and_rejects_bad_arguments() {
        let args = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        let dir = tempfile::tempdir().unwrap();
        let body = dir.path().join("body.json");
        std::fs::write(&body, "{}").unwrap();
        let mut a = args(
            "--url http://api:8080/mcp --rate 2000 --conns 10 --seconds 1 --log l --method POST --body-file",
        );
        a.push(body.display().to_string());
        a.extend(["--header".to_string(), "Mcp-Session-Id: s1".to_string()]);
        let plan = parse_args(a).unwrap();
        assert_eq!(plan.host_port, "api:8080");
        assert_eq!(
            String::from_utf8(plan.request).unwrap(),
            "POST /mcp HTTP/1.1\r\nHost: api:8080\r\nMcp-Session-Id: s1\r\nContent-Length: 2\r\n\r\n{}"
        );
        let err = |s: &str| parse_args(args(s)).err().unwrap();
        assert!(err("--url https://x/ --rate 1 --seconds 1 --log l").contains("only http://"));
        assert!(
            err("--url http://x/ --rate 5 --conns 10 --seconds 1 --log l")
                .contains("more than --rate")
        );
        assert!(
            err("--url http://x/ --rate fast --seconds 1 --log l").contains("not a whole number")
        );
        assert!(err("--url http://x/ --rate 1 --seconds 1").contains("--log is required"));
    }
}

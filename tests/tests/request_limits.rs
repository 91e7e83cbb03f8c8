//! End to end: a requests limit holds at a real HTTP server, whatever the
//! client does with its segments. The daemon runs on the veth; clients in the
//! test namespace send keep-alive requests without waiting for answers (so
//! TCP retransmits refused ones, coalesced into later segments), pipeline 1,
//! 10 and 40 requests per segment, and send each method's first byte in a
//! segment of its own. The count is the server's own: requests it parsed and
//! answered, read at a time `t` after the scenario's first byte, against
//! `rate × t + burst`.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use tollgate_tests::{
    daemon::{Env, free_port},
    httpd::Server,
    privileged,
    traffic::close_with_reset,
};

/// Requests per second per source, and the burst.
const RATE: f64 = 10.0;
const BURST: f64 = 10.0;
/// Each scenario's server listens on its own port (all of them HTTP ports),
/// so requests still in flight from one scenario never count in the next.
const PORTS: [u16; 5] = [8081, 8082, 8083, 8084, 8085];
/// How long each scenario sends.
const SENDING: Duration = Duration::from_secs(4);
/// How long retransmissions get after the last write before the count.
const DRAIN: Duration = Duration::from_secs(1);

fn config(env: &Env) -> String {
    let ports = PORTS.map(|p| p.to_string()).join(", ");
    format!(
        r#"interfaces = ["{iface}"]
mode = "native"
metrics_address = "127.0.0.1:{metrics}"
default_tier = "default"

[[tier]]
name = "default"
packets = "100000/s"
requests = "{RATE}/s"
requests_burst = {BURST}

[http]
ports = [{ports}]
"#,
        iface = env.veth.host,
        metrics = free_port(),
    )
}

/// How a scenario's client writes its requests.
#[derive(Clone, Copy, Debug)]
enum Writes {
    /// One request per write every `every`, never waiting for an answer.
    OnePer { every: Duration },
    /// `n` requests in one write, once a second.
    Pipelined { n: usize },
    /// The method's first byte in one write, the rest 2 ms later, every `every`.
    SplitMethod { every: Duration },
}

const REQUEST: &[u8] = b"GET /api/v1/items?id=7 HTTP/1.1\r\nHost: api.test\r\n\r\n";

/// Sends for [`SENDING`], waits [`DRAIN`], and returns (requests sent, the
/// server's count, seconds from the first write to the count). The
/// connection is then reset (SO_LINGER 0), so nothing it still holds reaches
/// the server.
fn scenario(env: &Env, port: u16, writes: Writes) -> (u64, u64, f64) {
    let server = Server::bind(SocketAddr::from((env.veth.host_ip, port))).unwrap();
    let addr = server.addr;
    let requests = server.requests.clone();
    env.ns
        .run(move || {
            let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).unwrap();
            stream.set_nodelay(true).unwrap();
            stream
                .set_write_timeout(Some(Duration::from_secs(1)))
                .unwrap();
            // Answers are read and thrown away, so the server never blocks.
            let mut reader = stream.try_clone().unwrap();
            reader
                .set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let drain_until = Instant::now() + SENDING + DRAIN + Duration::from_secs(1);
            let answers = std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while Instant::now() < drain_until {
                    match reader.read(&mut buf) {
                        Ok(0) => return,
                        _ => continue,
                    }
                }
            });
            let mut w = &stream;
            let start = Instant::now();
            let mut sent = 0u64;
            while start.elapsed() < SENDING {
                match writes {
                    Writes::OnePer { every } => {
                        let _ = w.write_all(REQUEST);
                        sent += 1;
                        std::thread::sleep(every);
                    }
                    Writes::Pipelined { n } => {
                        let _ = w.write_all(&REQUEST.repeat(n));
                        sent += n as u64;
                        std::thread::sleep(Duration::from_secs(1));
                    }
                    Writes::SplitMethod { every } => {
                        let _ = w.write_all(&REQUEST[..1]);
                        std::thread::sleep(Duration::from_millis(2));
                        let _ = w.write_all(&REQUEST[1..]);
                        sent += 1;
                        std::thread::sleep(every);
                    }
                }
            }
            std::thread::sleep(DRAIN);
            let counted = requests.load(Ordering::SeqCst);
            let t = start.elapsed().as_secs_f64();
            close_with_reset(stream);
            let _ = answers.join();
            (sent, counted, t)
        })
        .join()
        .unwrap()
        .unwrap()
}

#[test]
fn a_requests_limit_holds_at_the_server_for_every_way_of_segmenting() {
    if !privileged("a_requests_limit_holds_at_the_server_for_every_way_of_segmenting") {
        return;
    }
    let env = Env::new();
    env.write_config(&config(&env));
    let _daemon = env.start_with(&[]);

    let cases = [
        (
            "keep-alive, 40/s, one per segment",
            Writes::OnePer {
                every: Duration::from_millis(25),
            },
        ),
        ("pipelined, 1 per segment", Writes::Pipelined { n: 1 }),
        ("pipelined, 10 per segment", Writes::Pipelined { n: 10 }),
        ("pipelined, 40 per segment", Writes::Pipelined { n: 40 }),
        (
            "method's first byte in its own segment, 40/s",
            Writes::SplitMethod {
                every: Duration::from_millis(25),
            },
        ),
    ];
    let mut report = Vec::new();
    for ((what, writes), port) in cases.into_iter().zip(PORTS) {
        // A full bucket at the start of each case (burst / rate to refill).
        std::thread::sleep(Duration::from_secs_f64(BURST / RATE));
        let (sent, counted, t) = scenario(&env, port, writes);
        let bound = RATE * t + BURST;
        eprintln!(
            "{what}: sent {sent}, the server answered {counted} in {t:.2} s (bound {bound:.1})"
        );
        report.push((what, writes, sent, counted, bound));
    }
    for (what, writes, sent, counted, bound) in report {
        assert!(
            counted as f64 <= bound,
            "{what}: the server answered {counted} requests, over rate × t + burst = {bound:.1}"
        );
        match writes {
            // Under the limit: every request reaches the server.
            Writes::Pipelined { n: 1 } => assert_eq!(counted, sent, "{what}"),
            // More than the burst in one segment can never be admitted.
            Writes::Pipelined { n: 40 } => assert_eq!(counted, 0, "{what}"),
            // Over the limit, the client is held to it, not shut out.
            _ => assert!(counted as f64 >= BURST, "{what}: only {counted} answered"),
        }
    }
}

//! Redis load of one node's cluster sync (agent/src/cluster), measured.
//!
//! `tollgate-cluster-bench [SOURCES] [INTERVAL_MS] [INTERVALS]` (defaults
//! 10000, 250, 40; root: it creates pinned BPF maps): loads tollgate's maps
//! pinned under /sys/fs/bpf/tg-<id>, fills TG_SOURCES_V4 with SOURCES sources
//! of a tier with a global limit, every one pressing its local limit (so every
//! one is pushed every interval: the worst case), and runs the real sync path
//! (walk + the kernel's admitted counters, one pipelined EVALSHA round trip) against a
//! throwaway `redis-server`, once per interval. Reports the Redis side from
//! `INFO` deltas (commands, bytes in/out, CPU) and the node side (walk time,
//! round trip).

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use tollgate::{
    cluster::{self, KEY_TTL, Plan, store, usage::Usage},
    config::{self, ConfigSource},
    datapath::{
        kernel::{self, MapSizes, Maps},
        walk::SourceWalk,
    },
    state::State,
};
use tollgate_common::SourceState;
use tollgate_tests::{net::PinDir, redis::RedisServer, unique_id};

fn main() -> Result<()> {
    let arg = |i: usize, default: u64| -> Result<u64> {
        match std::env::args().nth(i) {
            Some(s) => s.parse().with_context(|| format!("argument {i}: {s:?}")),
            None => Ok(default),
        }
    };
    let sources = arg(1, 10_000)? as u32;
    let interval = Duration::from_millis(arg(2, 250)?);
    let intervals = arg(3, 40)?;
    if sources == 0 || sources > 1 << 20 {
        bail!("usage: tollgate-cluster-bench [SOURCES (1..=1048576)] [INTERVAL_MS] [INTERVALS]");
    }

    let server = RedisServer::start()?;
    let pins = PinDir::new(&unique_id());
    let sizes = MapSizes {
        sources_v4: (sources * 2).max(1024),
        sources_v6: 1024,
        rules_v4: 1024,
        rules_v6: 1024,
        sample_ring_bytes: 1 << 16,
    };
    let mut ebpf = kernel::load(tollgate::datapath::EBPF_OBJECT, &sizes, Some(&pins.path))?;
    let mut maps = Maps::from_ebpf(&mut ebpf)?;
    maps.stamp_layout()?;
    let walk = SourceWalk::open(&pins.path)?;

    // One tier: 1000/s per node, 2000/s fleet-wide, 5% share.
    let text = format!(
        r#"
[cluster]
redis = "{}"
node_id = "bench"
sync_interval = "{}ms"

[[tier]]
name = "api"
packets = "1000/s"
packets_burst = 100
global_packets = "2000/s"
"#,
        server.url(),
        interval.as_millis()
    );
    let cfg = config::parse(&text, ConfigSource::File("bench.toml".into()))?;
    let cluster_cfg = cfg.cluster.clone().expect("[cluster]");
    let mut state = State::default();
    state.assign_indices(&cfg).map_err(anyhow::Error::msg)?;
    let plan = Plan::new(
        &config::Effective::new(0, cfg, state.tier_indices.clone()),
        &cluster_cfg,
    );

    let addr = |i: u32| u32::from_ne_bytes(Ipv4Addr::from(0x0a00_0000 + i).octets());
    // Each press: every source admitted one interval's worth at its local
    // 1000/s (the kernel's admitted counter moves by that much).
    let per_interval = (1000 * interval.as_millis() as u64 / 1000).max(1);
    let mut presses = 0u64;
    let mut press = |maps: &mut Maps| -> Result<()> {
        let now = tollgate::datapath::kernel::clock_ns();
        presses += 1;
        for i in 0..sources {
            let s = SourceState {
                packets_tat: now + 500_000_000,
                admitted: presses * per_interval,
                ..Default::default()
            };
            maps.sources_v4.insert(addr(i), s, 0)?;
        }
        Ok(())
    };

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let script = store::script();
    let mut conn = rt.block_on(store::Conn::connect(
        &cluster_cfg.redis,
        "bench",
        Duration::from_secs(2),
    ))?;
    let mut usage = Usage::default();
    // Two warm-up intervals: baselines, and the script cached by EVAL.
    let mut walk_ms = Vec::new();
    let mut rtt = Vec::new();
    let mut pushed = 0u64;
    let mut before = None;
    let mut started = Instant::now();
    for i in 0..intervals + 2 {
        let tick = Instant::now();
        press(&mut maps)?;
        let window = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        let t = Instant::now();
        let mut deltas = Vec::new();
        cluster::scan(&walk, &plan, &mut usage, window, &mut deltas)?;
        let walked = t.elapsed();
        let entries = cluster::entries(&plan, window, &deltas);
        let t = Instant::now();
        rt.block_on(conn.push(
            &script,
            &store::batch_marker(window, "bench", i),
            &entries,
            KEY_TTL,
        ))?;
        let round_trip = t.elapsed();
        if i == 2 {
            before = Some(Snapshot::take(&server)?);
            started = Instant::now();
        }
        if i >= 2 {
            walk_ms.push(walked.as_secs_f64() * 1e3);
            rtt.push(round_trip.as_secs_f64() * 1e3);
            pushed += entries.len() as u64;
        }
        if let Some(rest) = interval.checked_sub(tick.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = Snapshot::take(&server)?;
    let before = before.expect("measured");
    let per_s = |a: f64, b: f64| (a - b) / elapsed;

    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        (v[v.len() / 2], v[v.len() - 1])
    };
    let (walk_med, walk_max) = median(&mut walk_ms);
    let (rtt_med, rtt_max) = median(&mut rtt);
    println!(
        "cluster sync, one node: {sources} active sources (all above the share), interval {} ms, {intervals} intervals ({elapsed:.1} s)",
        interval.as_millis()
    );
    println!(
        "  counters pushed      {:>12.0} /s  ({} per interval)",
        pushed as f64 / elapsed,
        pushed / intervals
    );
    println!(
        "  round trips          {:>12.1} /s",
        intervals as f64 / elapsed
    );
    println!(
        "  EVALSHA calls        {:>12.1} /s",
        per_s(after.evalsha, before.evalsha)
    );
    println!(
        "  EVAL calls           {:>12.1} /s  (script cache misses)",
        per_s(after.eval, before.eval)
    );
    println!(
        "  INCRBY (in scripts)  {:>12.0} /s",
        per_s(after.incrby, before.incrby)
    );
    println!(
        "  commands processed   {:>12.0} /s  (INFO total_commands_processed)",
        per_s(after.commands, before.commands)
    );
    println!(
        "  bytes to Redis       {:>12.0} B/s  ({:.1} B per counter)",
        per_s(after.net_in, before.net_in),
        (after.net_in - before.net_in) / pushed.max(1) as f64
    );
    println!(
        "  bytes from Redis     {:>12.0} B/s",
        per_s(after.net_out, before.net_out)
    );
    println!(
        "  Redis CPU            {:>12.1} % of a core",
        per_s(after.cpu, before.cpu) * 100.0
    );
    println!(
        "  Redis memory         {:>12.0} B used, {:.0} live counters ({:.0} B each)",
        after.memory,
        after.keys,
        (after.memory - after.memory_startup) / after.keys.max(1.0)
    );
    println!("  node: map walk + counters  {walk_med:.1} ms median, {walk_max:.1} ms max");
    println!("  node: round trip           {rtt_med:.1} ms median, {rtt_max:.1} ms max");
    drop(ebpf);
    Ok(())
}

/// The `INFO` numbers the bench reports.
struct Snapshot {
    commands: f64,
    net_in: f64,
    net_out: f64,
    cpu: f64,
    memory: f64,
    memory_startup: f64,
    keys: f64,
    evalsha: f64,
    eval: f64,
    incrby: f64,
}

impl Snapshot {
    fn take(server: &RedisServer) -> Result<Snapshot> {
        let text = server.command("INFO all")?;
        let mut kv = BTreeMap::new();
        for line in text.lines() {
            if let Some((k, v)) = line.split_once(':') {
                kv.insert(k.trim().to_owned(), v.trim().to_owned());
            }
        }
        let num = |k: &str| -> f64 { kv.get(k).and_then(|v| v.parse().ok()).unwrap_or(0.0) };
        let calls = |cmd: &str| -> f64 {
            kv.get(&format!("cmdstat_{cmd}"))
                .and_then(|v| v.split(',').find_map(|p| p.strip_prefix("calls=")))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0)
        };
        Ok(Snapshot {
            commands: num("total_commands_processed"),
            net_in: num("total_net_input_bytes"),
            net_out: num("total_net_output_bytes"),
            cpu: num("used_cpu_sys") + num("used_cpu_user"),
            memory: num("used_memory"),
            memory_startup: num("used_memory_startup"),
            keys: kv
                .get("db0")
                .and_then(|v| v.split(',').find_map(|p| p.strip_prefix("keys=")))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0),
            evalsha: calls("evalsha"),
            eval: calls("eval"),
            incrby: calls("incrby"),
        })
    }
}

//! The shared counters in Redis (standalone or Redis Cluster): one pipelined
//! round trip per sync, running `script.lua` by its SHA (EVALSHA), falling back
//! to EVAL for the chunks the server does not have cached.

use std::time::Duration;

use redis::{
    AsyncConnectionConfig, Client, Cmd, ErrorKind, RedisResult, Script, ServerErrorKind,
    aio::{ConnectionLike, MultiplexedConnection},
    cluster::ClusterClientBuilder,
    cluster_async::ClusterConnection,
};

use crate::config::RedisTarget;

/// The Lua script that adds deltas and reports counters over allowance.
pub const SCRIPT: &str = include_str!("script.lua");

/// How long the connection itself waits for any answer.
const RESPONSE_BACKSTOP: Duration = Duration::from_secs(5);

/// The script, ready for EVALSHA.
pub fn script() -> Script {
    Script::new(SCRIPT)
}

/// Counters per script call: bounds how long one call holds Redis (it is
/// single-threaded) to about a millisecond; all calls go in one pipeline.
pub const CHUNK: usize = 1000;

/// One counter update: `delta` units for `key`, over when the window's total
/// exceeds `allowance`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub delta: u64,
    pub allowance: u64,
}

/// The counter of one source's usage of one tier's global limit in one window:
/// `tg:{<window>}:<tier>:<kind>:<source>`. The braces make the window the Redis
/// Cluster hash tag: one sync touches one slot, and the slot moves with the
/// window, spreading the load over the shards.
pub fn key(window: u64, tier: &str, kind: char, source: &str) -> String {
    format!("tg:{{{window}}}:{tier}:{kind}:{source}")
}

/// The marker of one push's script calls: `tg:{<window>}:batch:<node>:<seq>`,
/// each call adding `:<chunk>`. A push sent again after its answer was lost
/// (Redis slow, not down) carries the same markers, and the calls Redis
/// already ran add nothing twice.
pub fn batch_marker(window: u64, node_id: &str, seq: u64) -> String {
    format!("tg:{{{window}}}:batch:{node_id}:{seq}")
}

/// A connection to the Redis that holds the counters.
pub enum Conn {
    Standalone(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Conn {
    /// Connects, failing after `timeout`. Callers bound each round trip
    /// themselves (its time depends on its size); the connection's own response
    /// timeout is only a backstop.
    pub async fn connect(
        target: &RedisTarget,
        node_id: &str,
        timeout: Duration,
    ) -> RedisResult<Conn> {
        match target {
            RedisTarget::Standalone(url) => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(RESPONSE_BACKSTOP));
                let mut c = Client::open(url.as_str())?
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                // Operators see the nodes in CLIENT LIST.
                redis::cmd("CLIENT")
                    .arg("SETNAME")
                    .arg(format!("tollgate-{node_id}"))
                    .exec_async(&mut c)
                    .await?;
                Ok(Conn::Standalone(c))
            }
            RedisTarget::Cluster(nodes) => {
                let client = ClusterClientBuilder::new(nodes.iter().map(String::as_str))
                    .connection_timeout(timeout)
                    .response_timeout(RESPONSE_BACKSTOP)
                    .build()?;
                Ok(Conn::Cluster(client.get_async_connection().await?))
            }
        }
    }

    pub async fn ping(&mut self) -> RedisResult<()> {
        match self {
            Conn::Standalone(c) => redis::cmd("PING").exec_async(c).await,
            Conn::Cluster(c) => redis::cmd("PING").exec_async(c).await,
        }
    }

    /// Adds every entry's delta in one round trip, once however often the
    /// same `marker` ([`batch_marker`]) is pushed; returns the indices (into
    /// `entries`) of the counters now over their allowance.
    pub async fn push(
        &mut self,
        script: &Script,
        marker: &str,
        entries: &[Entry],
        ttl: Duration,
    ) -> RedisResult<Vec<usize>> {
        match self {
            Conn::Standalone(c) => push_on(c, script, marker, entries, ttl).await,
            Conn::Cluster(c) => push_on(c, script, marker, entries, ttl).await,
        }
    }
}

fn eval(command: &str, body: &str, marker: &str, chunk: &[Entry], ttl: Duration) -> Cmd {
    let mut c = redis::cmd(command);
    c.arg(body).arg(chunk.len() + 1).arg(marker);
    for e in chunk {
        c.arg(&e.key);
    }
    c.arg(ttl.as_millis() as u64);
    for e in chunk {
        c.arg(e.delta).arg(e.allowance);
    }
    c
}

async fn push_on<C: ConnectionLike>(
    con: &mut C,
    script: &Script,
    marker: &str,
    entries: &[Entry],
    ttl: Duration,
) -> RedisResult<Vec<usize>> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let chunks: Vec<&[Entry]> = entries.chunks(CHUNK).collect();
    let markers: Vec<String> = (0..chunks.len()).map(|i| format!("{marker}:{i}")).collect();
    let mut over = Vec::new();
    let mut collect = |chunk: usize, indices: Vec<i64>| {
        over.extend(
            indices
                .into_iter()
                .filter(|i| *i >= 1 && (*i as usize) <= chunks[chunk].len())
                .map(|i| chunk * CHUNK + i as usize - 1),
        );
    };
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for (chunk, marker) in chunks.iter().zip(&markers) {
        pipe.add_command(eval("EVALSHA", script.get_hash(), marker, chunk, ttl));
    }
    let results: Vec<RedisResult<Vec<i64>>> = pipe.query_async(con).await?;
    // NOSCRIPT (a restarted or flushed Redis): those chunks did not run, so
    // sending them again with the script's text counts nothing twice.
    let mut missing = Vec::new();
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Ok(v) => collect(i, v),
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => missing.push(i),
            Err(e) => return Err(e),
        }
    }
    if !missing.is_empty() {
        let mut pipe = redis::pipe();
        for &i in &missing {
            pipe.add_command(eval("EVAL", SCRIPT, &markers[i], chunks[i], ttl));
        }
        let results: Vec<Vec<i64>> = pipe.query_async(con).await?;
        for (&i, v) in missing.iter().zip(results) {
            collect(i, v);
        }
    }
    over.sort_unstable();
    Ok(over)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_window_hash_tag() {
        assert_eq!(
            key(1_700_000_000, "api", 'p', "192.0.2.7"),
            "tg:{1700000000}:api:p:192.0.2.7"
        );
        assert_eq!(
            key(5, "api", 'r', "2001:db8::/64"),
            "tg:{5}:api:r:2001:db8::/64"
        );
    }

    #[test]
    fn eval_commands_carry_the_marker_keys_then_ttl_then_pairs() {
        let entries = [
            Entry {
                key: "k1".into(),
                delta: 3,
                allowance: 10,
            },
            Entry {
                key: "k2".into(),
                delta: 4,
                allowance: 20,
            },
        ];
        let packed = String::from_utf8_lossy(
            &eval("EVALSHA", "abc", "m:0", &entries, Duration::from_secs(3)).get_packed_command(),
        )
        .into_owned();
        let args: Vec<&str> = packed
            .split("\r\n")
            .filter(|s| !s.starts_with(['*', '$']) && !s.is_empty())
            .collect();
        assert_eq!(
            args,
            [
                "EVALSHA", "abc", "3", "m:0", "k1", "k2", "3000", "3", "10", "4", "20"
            ]
        );
    }
}

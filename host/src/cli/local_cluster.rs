//! Three coordinated nodes in this process, on loopback: what the
//! coordination bench and the coordination demo run on.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use molt_host::cluster::{CoordConfig, Coordination, LogMode};
use molt_host::net::{DistConfig, Distribution};
use molt_host::{Node, NodeConfig};

/// A node of a local cluster.
pub struct Member {
    pub node: Node,
    pub dist: Distribution,
    pub coord: Coordination,
}

/// Three nodes `PREFIX-a`, `-b`, `-c` with `config`'s settings (each with
/// `module` loaded, if given): `a` founds the cluster and leads, `b` and
/// `c` join; waits for three voters. Logs live under `dir` in `Disc` mode.
pub async fn three(
    config: &NodeConfig,
    prefix: &str,
    dir: &Path,
    mode: LogMode,
    module: Option<&Path>,
) -> Result<Vec<Member>> {
    start(config, prefix, dir, mode, module, 3).await
}

/// `count` nodes (at most three) as [`three`] starts them, waiting for
/// `count` voters.
pub async fn start(
    config: &NodeConfig,
    prefix: &str,
    dir: &Path,
    mode: LogMode,
    module: Option<&Path>,
    count: usize,
) -> Result<Vec<Member>> {
    let mut cookie = vec![0u8; 32];
    getrandom::fill(&mut cookie).map_err(|e| anyhow::anyhow!("random cookie: {e}"))?;
    let mut members: Vec<Member> = Vec::new();
    for suffix in ["a", "b", "c"].into_iter().take(count) {
        let name = format!("{prefix}-{suffix}");
        let node = Node::start(NodeConfig {
            name: format!("{name}@127.0.0.1"),
            processes_max: 1_000,
            ..config.clone()
        })?;
        if let Some(module) = module {
            node.load_file(module)?;
        }
        let dist = Distribution::start(
            &node,
            DistConfig::new("127.0.0.1:0".parse()?, cookie.clone()),
        )
        .await?;
        let join = members
            .first()
            .map(|m| format!("{}:{}", m.dist.name(), m.dist.local_addr().port()));
        let mut coord = CoordConfig::new(dir.join(&name));
        coord.log_mode = mode;
        let coord = Coordination::start(&node, &dist, coord, join.as_deref())
            .await
            .with_context(|| format!("starting coordination on {name}"))?;
        coord.ready().await?;
        members.push(Member { node, dist, coord });
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    // Every member knows the new voters, and the change has committed.
    let settled = |m: &Member| m.coord.status().has_settled_voters(count);
    while !members.iter().all(settled) {
        if Instant::now() > deadline {
            bail!("the local cluster did not get {count} voters in 20 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(members)
}

/// Stop one member: coordination, distribution, node.
pub async fn stop_member(m: Member) {
    m.coord.shutdown().await;
    m.dist.shutdown();
    m.node.shutdown(Duration::from_secs(2)).await;
}

/// Stop every member.
pub async fn stop(members: Vec<Member>) {
    for m in members {
        stop_member(m).await;
    }
}

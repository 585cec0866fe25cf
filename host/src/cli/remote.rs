//! The commands that talk to a running node (`molt nodes`, `ps`, `ping`,
//! `spawn`, `send`) and how the CLI reaches one: as a hidden node,
//! authenticated like any other.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use molt_host::net::tls::TlsMode;
use molt_host::net::{DistConfig, Distribution};
use molt_host::{Control, Node, NodeConfig};

use crate::Command;

/// How the CLI reaches a running node: it joins as a hidden node,
/// authenticated with the cookie like any node; with the --tls flags also
/// with a CA certificate, and then its node name is the one the
/// certificate names (so two CLIs with one certificate cannot be connected
/// to one node at once).
#[derive(clap::Args)]
pub struct Remote {
    /// The node: `name@host:port`.
    #[arg(long)]
    node: String,
    /// Cookie file (default: $HOME/.molt.cookie; MOLT_COOKIE wins).
    #[arg(long)]
    cookie_file: Option<PathBuf>,
    #[command(flatten)]
    tls: TlsArgs,
}

/// How a listing command prints.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// Columns for people.
    #[default]
    Text,
    /// One JSON document with the fields of the HTTP API's answer for the
    /// same listing (`molt_host::http`'s views).
    Json,
}

/// Print `value` as one line of JSON.
pub fn print_json(value: &impl serde::Serialize) -> Result<()> {
    out!("{}", serde_json::to_string(value)?);
    Ok(())
}

/// Mutual TLS against a CA (all three flags or none). Without them nodes
/// use self-made certificates and the cookie alone says who they are.
#[derive(clap::Args)]
pub struct TlsArgs {
    /// CA certificate (PEM) that peers' certificates must chain to.
    #[arg(long, value_name = "FILE", requires_all = ["tls_cert", "tls_key"])]
    tls_ca: Option<PathBuf>,
    /// This node's certificate chain (PEM), signed by the CA, naming the
    /// node as the DNS name `NAME.at.HOST.molt` (`a@127.0.0.1` →
    /// `a.at.127-0-0-1.molt`).
    #[arg(long, value_name = "FILE", requires_all = ["tls_ca", "tls_key"])]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires_all = ["tls_ca", "tls_cert"])]
    tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// The TLS mode the flags ask for.
    pub fn mode(&self) -> Result<TlsMode> {
        match (&self.tls_ca, &self.tls_cert, &self.tls_key) {
            (Some(ca), Some(cert), Some(key)) => Ok(TlsMode::from_files(ca, cert, key)?),
            (None, None, None) => Ok(TlsMode::SelfSigned),
            _ => anyhow::bail!("--tls-ca, --tls-cert and --tls-key go together"),
        }
    }
}

impl Remote {
    /// Start a small hidden node and connect it to the target; returns
    /// control over the cluster through it, and the target's node name.
    pub async fn connect(&self) -> Result<(Control, String)> {
        let (control, target) = self.start().await?;
        control
            .join(&self.node)
            .await
            .with_context(|| format!("connecting to {}", self.node))?;
        Ok((control, target))
    }

    /// Everything [`connect`](Self::connect) does on this side (the
    /// address, the cookie and TLS files, the hidden node) without
    /// connecting: its errors are the user's to fix, not the target's.
    async fn start(&self) -> Result<(Control, String)> {
        let (target, _) = molt_host::net::parse_node_address(&self.node)?;
        let cookie = molt_host::net::cookie::load_or_create(self.cookie_file.as_deref())?;
        let tls = self.tls.mode()?;
        // In CA mode the CLI is the node its certificate names.
        let name = match tls.certificate_node_names()?.into_iter().next() {
            Some(name) => name,
            None if tls.is_ca() => anyhow::bail!(
                "the --tls-cert certificate names no molt node \
                 (a DNS name like cli.at.127-0-0-1.molt)"
            ),
            None => format!("molt-cli-{}@127.0.0.1", std::process::id()),
        };
        let config = NodeConfig {
            name,
            processes_max: 64,
            ..NodeConfig::default()
        };
        let node = Node::start(config)?;
        let mut dist_config = DistConfig::new("127.0.0.1:0".parse()?, cookie.as_bytes().to_vec());
        dist_config.hidden = true;
        dist_config.tls = tls;
        let dist = Distribution::start(&node, dist_config).await?;
        Ok((Control::new(node, dist)?, target))
    }
}

pub async fn remote_command(command: Command) -> Result<ExitCode> {
    match command {
        Command::Nodes { remote, format } => {
            let (control, target) = remote.connect().await?;
            let nodes = control.nodes(&target).await;
            control.disconnect().await;
            let mut nodes = nodes?;
            nodes.retain(|n| *n != target);
            nodes.insert(0, target);
            match format {
                Format::Text => {
                    for n in nodes {
                        out!("{n}");
                    }
                }
                Format::Json => print_json(&nodes)?,
            }
        }
        Command::Ps {
            remote,
            format: Format::Json,
        } => {
            let (control, target) = remote.connect().await?;
            let processes = control.processes(&target).await;
            control.disconnect().await;
            let processes = processes?;
            print_json(&molt_host::http::ProcessList {
                node: target,
                total: processes.len() as u64,
                matched: processes.len() as u64,
                processes: processes.iter().map(Into::into).collect(),
            })?;
        }
        Command::Ps {
            remote,
            format: Format::Text,
        } => {
            let (control, target) = remote.connect().await?;
            out!(
                "{:<24} {:<24} {:<14} {:>8} {:>10}  {:<9}  name",
                "pid",
                "module",
                "version",
                "mailbox",
                "memory",
                "state"
            );
            for p in control.processes(&target).await? {
                let state = p.status();
                let (module, version) = p.module.unwrap_or_else(|| ("(host)".into(), "-".into()));
                let failure = p
                    .upgrade_failure
                    .map(|why| format!("  (upgrade failed: {why})"))
                    .unwrap_or_default();
                out!(
                    "{:<24} {:<24} {:<14} {:>8} {:>10}  {:<9}  {}{failure}",
                    p.pid.to_string(),
                    module,
                    version,
                    p.mailbox_len,
                    p.memory_bytes,
                    state,
                    p.name.unwrap_or_default()
                );
            }
            control.disconnect().await;
        }
        Command::Ping { remote } => {
            // An unusable cookie or TLS file is an error that says why; a
            // node that cannot be reached (or named) is a `pang`.
            if molt_host::net::parse_node_address(&remote.node).is_err() {
                out!("pang");
                return Ok(ExitCode::FAILURE);
            }
            let (control, target) = remote.start().await?;
            if control.join(&remote.node).await.is_err() {
                control.disconnect().await;
                out!("pang");
                return Ok(ExitCode::FAILURE);
            }
            let answer = control.ping(&target).await;
            control.disconnect().await;
            match answer {
                Ok(rtt) => out!("pong from {target} in {} µs", rtt.as_micros()),
                Err(_) => {
                    out!("pang");
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        Command::Spawn {
            remote,
            module,
            args,
        } => {
            let (control, target) = remote.connect().await?;
            let args = molt_abi::codec::encode(&args);
            let pid = control.spawn(&target, &module, args).await?;
            out!("{pid}");
            control.disconnect().await;
        }
        Command::Send {
            remote,
            name,
            text,
            tag,
        } => {
            let (control, target) = remote.connect().await?;
            control
                .send_named(&target, &name, tag, molt_abi::codec::encode(&text))
                .await?;
            control.disconnect().await;
        }
        _ => unreachable!("only remote commands come here"),
    }
    Ok(ExitCode::SUCCESS)
}

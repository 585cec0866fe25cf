//! `/metrics`: the node's figures in the OpenMetrics text format, read
//! where they are kept at each scrape (nothing is counted for them on the
//! way). Every name has the `molt_` prefix; labels are bounded (module,
//! version, peer), never a pid.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use super::Served;
use crate::Control;

/// The content type of the OpenMetrics text format.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub(crate) async fn metrics(State(s): State<Served>) -> Response {
    match render(&s.control) {
        Ok(text) => ([(header::CONTENT_TYPE, OPENMETRICS)], text).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "the metrics could not be encoded\n",
        )
            .into_response(),
    }
}

/// The node's metrics as OpenMetrics text (ending in `# EOF`).
pub fn render(control: &Control) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("molt");
    registry.register_collector(Box::new(NodeCollector {
        control: control.clone(),
    }));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    Ok(text)
}

/// Reads a node's figures at each scrape.
struct NodeCollector {
    control: Control,
}

impl std::fmt::Debug for NodeCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeCollector({})", self.control.name())
    }
}

/// Encode one metric without labels.
fn one(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    metric: &impl EncodeMetric,
) -> Result<(), std::fmt::Error> {
    let m = encoder.encode_descriptor(name, help, unit.as_ref(), metric.metric_type())?;
    metric.encode(m)
}

/// Encode one metric with one value per label set.
fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    kind: MetricType,
    rows: impl IntoIterator<Item = (Vec<(&'static str, String)>, M)>,
) -> Result<(), std::fmt::Error> {
    let mut m = encoder.encode_descriptor(name, help, unit.as_ref(), kind)?;
    for (labels, metric) in rows {
        let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        metric.encode(m.encode_family(&labels.as_slice())?)?;
    }
    Ok(())
}

impl Collector for NodeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.control.stats();
        let e = &mut encoder;
        one(
            e,
            "processes",
            "Processes alive on this node (guests and host mailboxes).",
            None,
            &ConstGauge::new(i64::from(stats.alive)),
        )?;
        one(
            e,
            "spawns",
            "Processes spawned since the node started.",
            None,
            &ConstCounter::new(stats.spawned),
        )?;
        one(
            e,
            "behaviours_initialized",
            "Behaviour processes whose init returned.",
            None,
            &ConstCounter::new(stats.initialized),
        )?;
        one(
            e,
            "process_exits",
            "Processes that ended since the node started.",
            None,
            &ConstCounter::new(stats.exited),
        )?;
        one(
            e,
            "uptime",
            "Time since the node started.",
            Some(Unit::Seconds),
            &ConstGauge::new(self.control.node().uptime().as_secs_f64()),
        )?;
        one(
            e,
            "pool_resident",
            "Memory that freed pool slots keep resident for the next processes (pool_keep_resident_bytes).",
            Some(Unit::Bytes),
            &ConstGauge::new(self.control.node().pool_resident_bytes() as i64),
        )?;
        let counted = self.control.node().counted();
        let counters = [
            (
                "messages_sent_local",
                "Messages sent to processes of this node.",
                counted.messages_local,
            ),
            (
                "messages_sent_remote",
                "Messages sent to processes of other nodes.",
                counted.messages_remote_out,
            ),
            (
                "messages_received_remote",
                "Messages that came from processes of other nodes.",
                counted.messages_remote_in,
            ),
            (
                "messages_received",
                "Messages processes took from their mailboxes.",
                counted.messages_received,
            ),
            (
                "upgrades",
                "Processes that moved to a new version of their module.",
                counted.upgrades,
            ),
            (
                "failed_migrations",
                "Migrations to a new version refused or failed (the process stayed).",
                counted.failed_migrations,
            ),
            ("purges", "Old module versions purged.", counted.purges),
        ];
        for (name, help, value) in counters {
            one(e, name, help, None, &ConstCounter::new(value))?;
        }
        one(
            e,
            "guest_cpu",
            "Time guests ran (inside init, handlers and migrations).",
            Some(Unit::Seconds),
            &ConstCounter::new(counted.cpu_ns as f64 / 1e9),
        )?;
        family(
            e,
            "exits_by_reason",
            "Processes that ended, by the kind of their exit reason.",
            None,
            MetricType::Counter,
            crate::ExitKind::ALL
                .iter()
                .zip(counted.exits)
                .map(|(kind, n)| {
                    (
                        vec![("reason", kind.name().to_string())],
                        ConstCounter::new(n),
                    )
                }),
        )?;
        // Per module and version: processes, memory, waiting messages.
        let by_version = self.control.node().by_version();
        one(
            e,
            "process_memory",
            "Linear memory of every process on this node.",
            Some(Unit::Bytes),
            &ConstGauge::new(counted.memory_bytes),
        )?;
        one(
            e,
            "mailbox_messages",
            "Messages waiting in every mailbox on this node.",
            None,
            &ConstGauge::new(counted.mailbox_messages),
        )?;
        let labels = |v: &crate::runtime::VersionTotals| {
            vec![("module", v.module.clone()), ("version", v.version.clone())]
        };
        family(
            e,
            "module_processes",
            "Processes running each module version.",
            None,
            MetricType::Gauge,
            by_version
                .iter()
                .map(|v| (labels(v), ConstGauge::new(v.processes as i64))),
        )?;
        family(
            e,
            "module_memory",
            "Linear memory of the processes of each module version.",
            Some(Unit::Bytes),
            MetricType::Gauge,
            by_version
                .iter()
                .map(|v| (labels(v), ConstGauge::new(v.memory_bytes))),
        )?;
        family(
            e,
            "module_mailbox_messages",
            "Messages waiting for the processes of each module version.",
            None,
            MetricType::Gauge,
            by_version
                .iter()
                .map(|v| (labels(v), ConstGauge::new(v.mailbox_messages))),
        )?;
        let peers = self
            .control
            .distribution()
            .map(|d| d.peer_stats())
            .unwrap_or_default();
        one(
            e,
            "peers",
            "Nodes connected to this one.",
            None,
            &ConstGauge::new(peers.len() as i64),
        )?;
        let peer = |name: &str| vec![("peer", name.to_string())];
        family(
            e,
            "peer_rtt",
            "Smoothed round-trip time of the connection to each peer.",
            Some(Unit::Seconds),
            MetricType::Gauge,
            peers
                .iter()
                .map(|p| (peer(&p.name), ConstGauge::new(p.rtt.as_secs_f64()))),
        )?;
        let counters = [
            (
                "peer_sent",
                "Bytes sent to each peer (UDP payloads).",
                Some(Unit::Bytes),
                (|p: &crate::net::PeerStats| p.bytes_out) as fn(&crate::net::PeerStats) -> u64,
            ),
            (
                "peer_received",
                "Bytes received from each peer (UDP payloads).",
                Some(Unit::Bytes),
                |p| p.bytes_in,
            ),
            (
                "peer_frames_sent",
                "QUIC stream frames sent to each peer.",
                None,
                |p| p.stream_frames_out,
            ),
            (
                "peer_frames_received",
                "QUIC stream frames received from each peer.",
                None,
                |p| p.stream_frames_in,
            ),
            (
                "peer_congestion_events",
                "Times the connection to each peer backed off for congestion.",
                None,
                |p| p.congestion_events,
            ),
            (
                "peer_lost_packets",
                "Packets lost on the way to each peer.",
                None,
                |p| p.lost_packets,
            ),
        ];
        for (name, help, unit, value) in counters {
            family(
                e,
                name,
                help,
                unit,
                MetricType::Counter,
                peers
                    .iter()
                    .map(|p| (peer(&p.name), ConstCounter::new(value(p)))),
            )?;
        }
        family(
            e,
            "peer_reconnects",
            "Connections to each peer made before the current one.",
            None,
            MetricType::Counter,
            peers
                .iter()
                .map(|p| (peer(&p.name), ConstCounter::new(p.reconnects))),
        )?;
        family(
            e,
            "peer_last_heard",
            "Time since a frame last came from each peer.",
            Some(Unit::Seconds),
            MetricType::Gauge,
            peers.iter().filter_map(|p| {
                let ago = p.last_heard?;
                Some((peer(&p.name), ConstGauge::new(ago.as_secs_f64())))
            }),
        )?;
        family(
            e,
            "peer_queued",
            "Bytes queued to each peer, not yet written.",
            Some(Unit::Bytes),
            MetricType::Gauge,
            peers
                .iter()
                .map(|p| (peer(&p.name), ConstGauge::new(p.queued_bytes as u64))),
        )?;
        Ok(())
    }
}

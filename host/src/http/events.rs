//! `/api/events`: one server-sent events stream of this node's live
//! figures, for the dashboard's charts. Every [`TICK`] a `node` event
//! carries the node's figures ([`NodeReport`]); each new code event
//! (load, purge, refused upgrade) follows as a `code` event.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;

use super::Served;
use super::api::CodeEventView;
use crate::control::NodeReport;

/// How often the stream sends the node's figures.
pub const TICK: Duration = Duration::from_secs(1);

/// Most streams one node serves at once; past it a new one gets `503`.
pub const STREAMS_MAX: usize = 64;

/// Where one stream is.
struct Cursor {
    served: Served,
    ticker: tokio::time::Interval,
    /// The code events already sent: the newest one's time and how many
    /// had that time.
    code_seen: (u64, usize),
    /// Events waiting to be sent.
    queued: std::collections::VecDeque<Event>,
    _slot: Slot,
}

/// One of the [`STREAMS_MAX`] slots, freed when the stream ends.
struct Slot(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

pub(crate) async fn events(
    State(s): State<Served>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, super::api::ApiError> {
    use std::sync::atomic::Ordering;
    if s.streams.fetch_add(1, Ordering::Relaxed) >= STREAMS_MAX {
        s.streams.fetch_sub(1, Ordering::Relaxed);
        return Err(super::api::ApiError(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            format!("this node serves {STREAMS_MAX} event streams already"),
        ));
    }
    let slot = Slot(s.streams.clone());
    let code_seen = newest(&s.control.node().code_events());
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let cursor = Cursor {
        served: s,
        ticker,
        code_seen,
        queued: Default::default(),
        _slot: slot,
    };
    let stream = futures_util::stream::unfold(cursor, |mut c| async move {
        while c.queued.is_empty() {
            c.ticker.tick().await;
            c.fill();
        }
        let event = c.queued.pop_front().expect("not empty");
        Some((Ok(event), c))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// The newest of `events`: its time and how many share it.
fn newest(events: &[crate::code::CodeEvent]) -> (u64, usize) {
    let at = events.last().map_or(0, |e| e.at_ms);
    (at, events.iter().filter(|e| e.at_ms == at).count())
}

impl Cursor {
    /// Queue what happened since the last tick.
    fn fill(&mut self) {
        let control = &self.served.control;
        let code = control.node().code_events();
        let (seen_at, seen_count) = self.code_seen;
        let mut same = 0;
        for e in &code {
            if e.at_ms == seen_at {
                same += 1;
            }
            let new = e.at_ms > seen_at || (e.at_ms == seen_at && same > seen_count);
            if new {
                let view = CodeEventView {
                    at_ms: e.at_ms,
                    module: e.module.clone(),
                    what: e.what.clone(),
                    failure: e.failure,
                };
                if let Ok(event) = Event::default().event("code").json_data(view) {
                    self.queued.push_back(event);
                }
            }
        }
        self.code_seen = newest(&code);
        let report = NodeReport::of(control.node(), control.distribution());
        if let Ok(event) = Event::default().event("node").json_data(report) {
            self.queued.push_back(event);
        }
    }
}

//! Fragmented (hash-partitioned) replicated tables, mnesia's
//! `frag_properties`: table `t` with `n` fragments is `n` replicated
//! tables, `t#0/n` … `t#{n-1}/n`, each its own Raft group, placed across a
//! pool of nodes (each fragment on `copies` of them). A key lives in one
//! fragment, chosen by a hash of its bytes that never changes
//! ([`of_key`]). This module is pure: names, the hash, placement, how a
//! batch splits over fragments and how fragments' rows merge; the
//! routing is `replication::fragmented`.
//!
//! Invariants: every fragment name carries the fragment count, so a node
//! that sees any fragment knows how many there are; a batch's part for a
//! fragment holds exactly the operations and conditions on its keys (a
//! lock's fence goes to every fragment the batch touches).

use std::collections::BTreeMap;

use molt_abi::table::{Batch, Condition, Replica, Row, Rows};

use super::state::op_key;

/// The character that marks a fragment's name (refused in table names).
pub const MARK: char = '#';

/// Most fragments a table has by default (`TablesLimits::fragments_max`).
pub const FRAGMENTS_MAX: u32 = 1024;

/// The name of fragment `i` of `n` of table `table`.
pub fn name(table: &str, i: u32, n: u32) -> String {
    format!("{table}{MARK}{i}/{n}")
}

/// A fragment's table, number and count, if `name` is a fragment's.
pub fn parse(name: &str) -> Option<(&str, u32, u32)> {
    let (table, rest) = name.rsplit_once(MARK)?;
    let (i, n) = rest.split_once('/')?;
    let (i, n) = (i.parse().ok()?, n.parse().ok()?);
    (i < n && !table.is_empty()).then_some((table, i, n))
}

/// The fragment of `n` that keeps `key`: FNV-1a (64 bits) of its bytes,
/// modulo `n`. Fixed: changing it would move every key.
pub fn of_key(key: &[u8], n: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % u64::from(n.max(1))) as u32
}

/// Where each of `n` fragments is kept: fragment `i` on `copies`
/// consecutive nodes of `pool` from node `i` on (wrapping), so every node
/// keeps about `n × copies / pool` fragments.
pub fn placement(pool: &[Replica], n: u32, copies: u32) -> Vec<Vec<Replica>> {
    let p = pool.len();
    (0..n as usize)
        .map(|i| {
            (0..copies as usize)
                .map(|j| pool[(i + j) % p].clone())
                .collect()
        })
        .collect()
}

/// `batch` split over `n` fragments: each fragment's part, by fragment.
/// A batch with no keyed operation or condition goes to fragment 0.
pub fn split(batch: Batch, n: u32) -> BTreeMap<u32, Batch> {
    let mut parts: BTreeMap<u32, Batch> = BTreeMap::new();
    let mut fences = Vec::new();
    for condition in batch.conditions {
        match &condition {
            Condition::Absent { key } | Condition::Version { key, .. } => {
                let part = parts.entry(of_key(key, n)).or_default();
                part.conditions.push(condition);
            }
            Condition::Fence { .. } => fences.push(condition),
        }
    }
    for op in batch.ops {
        let at = of_key(op_key(&op), n);
        parts.entry(at).or_default().ops.push(op);
    }
    if parts.is_empty() {
        parts.insert(0, Batch::default());
    }
    for part in parts.values_mut() {
        part.conditions.extend(fences.iter().cloned());
    }
    parts
}

/// Fragments' answers to one range (or prefix, or index) read, merged
/// into the table's: rows in key order, at most `limit`. A fragment that
/// had more than it sent bounds the answer: nothing past its last key is
/// given (another fragment's later rows could come before its next one),
/// and the answer says there is more.
pub fn merge(parts: Vec<Rows>, limit: usize) -> Rows {
    let mut bound: Option<Vec<u8>> = None;
    let (mut stale, mut index) = (false, 0);
    let mut rows: Vec<Row> = Vec::new();
    for part in parts {
        stale |= part.stale;
        index = index.max(part.index);
        if part.more
            && let Some(last) = part.rows.last()
            && bound.as_ref().is_none_or(|b| last.key < *b)
        {
            bound = Some(last.key.clone());
        }
        rows.extend(part.rows);
    }
    rows.sort_by(|a, b| a.key.cmp(&b.key));
    let mut more = false;
    if let Some(bound) = &bound {
        rows.retain(|r| r.key <= *bound);
        more = true;
    }
    if rows.len() > limit {
        rows.truncate(limit);
        more = true;
    }
    Rows {
        rows,
        more,
        stale,
        index,
    }
}

#[cfg(test)]
mod tests {
    use molt_abi::table::{Copy, Op, Record};

    use super::*;

    #[test]
    fn names_parse_back_and_others_do_not() {
        assert_eq!(parse(&name("carts", 3, 8)), Some(("carts", 3, 8)));
        assert_eq!(parse(&name("a#b", 0, 2)), Some(("a#b", 0, 2)));
        for other in ["carts", "carts#", "carts#3", "carts#8/8", "#1/2", "t#x/2"] {
            assert_eq!(parse(other), None, "{other}");
        }
    }

    #[test]
    fn keys_spread_over_every_fragment_and_stay_put() {
        let mut counts = [0u32; 8];
        for k in 0..8_000u32 {
            counts[of_key(format!("user-{k}").as_bytes(), 8) as usize] += 1;
        }
        assert!(counts.iter().all(|c| (800..1200).contains(c)), "{counts:?}");
        // The hash is fixed: these are what every node computes.
        assert_eq!(of_key(b"", 8), (0xcbf2_9ce4_8422_2325u64 % 8) as u32);
        assert_eq!(
            of_key(b"a", 1_000_000),
            (0xaf63_dc4c_8601_ec8c_u64 % 1_000_000) as u32
        );
    }

    #[test]
    fn placement_puts_each_fragment_on_distinct_nodes_evenly() {
        let pool: Vec<Replica> = ["a", "b", "c"]
            .iter()
            .map(|n| Replica {
                node: n.to_string(),
                copy: Copy::Ram,
            })
            .collect();
        let placed = placement(&pool, 6, 2);
        let mut per_node = BTreeMap::new();
        for replicas in &placed {
            assert_eq!(replicas.len(), 2);
            assert_ne!(replicas[0].node, replicas[1].node);
            for r in replicas {
                *per_node.entry(r.node.clone()).or_insert(0) += 1;
            }
        }
        assert_eq!(per_node.values().copied().collect::<Vec<_>>(), [4, 4, 4]);
    }

    fn put(key: &str) -> Op {
        Op::Put {
            key: key.into(),
            value: b"v".to_vec(),
            index_values: vec![],
        }
    }

    #[test]
    fn a_batch_splits_by_key_and_fences_go_to_every_part() {
        let keys: Vec<String> = (0..20).map(|k| format!("k{k}")).collect();
        let fence = Condition::Fence {
            lock: "L".into(),
            token: 3,
        };
        let batch = Batch {
            conditions: vec![
                Condition::Absent {
                    key: b"k1".to_vec(),
                },
                fence.clone(),
            ],
            ops: keys.iter().map(|k| put(k)).collect(),
        };
        let parts = split(batch, 4);
        let mut seen = 0;
        for (i, part) in &parts {
            for op in &part.ops {
                assert_eq!(of_key(op_key(op), 4), *i);
                seen += 1;
            }
            assert!(part.conditions.contains(&fence));
        }
        assert_eq!(seen, 20);
        let absent_in = of_key(b"k1", 4);
        assert!(
            parts[&absent_in]
                .conditions
                .iter()
                .any(|c| matches!(c, Condition::Absent { .. }))
        );
        assert_eq!(
            split(Batch::default(), 4)
                .keys()
                .copied()
                .collect::<Vec<_>>(),
            [0]
        );
    }

    fn rows(keys: &[&str], more: bool) -> Rows {
        Rows {
            rows: keys
                .iter()
                .map(|k| Row {
                    key: k.as_bytes().to_vec(),
                    version: 1,
                    records: vec![Record {
                        value: vec![],
                        version: 1,
                        index_values: vec![],
                    }],
                })
                .collect(),
            more,
            stale: false,
            index: 1,
        }
    }

    fn keys(r: &Rows) -> Vec<String> {
        r.rows
            .iter()
            .map(|r| String::from_utf8(r.key.clone()).unwrap())
            .collect()
    }

    #[test]
    fn merged_rows_are_in_key_order_and_stop_where_a_fragment_had_more() {
        let all = merge(
            vec![rows(&["b", "d"], false), rows(&["a", "c", "e"], false)],
            10,
        );
        assert_eq!(keys(&all), ["a", "b", "c", "d", "e"]);
        assert!(!all.more);
        // The second fragment stopped at "c": "d" could come after its
        // next key, so the answer stops at "c" and says there is more.
        let cut = merge(vec![rows(&["b", "d"], false), rows(&["a", "c"], true)], 10);
        assert_eq!(keys(&cut), ["a", "b", "c"]);
        assert!(cut.more);
        let limited = merge(vec![rows(&["b", "d"], false), rows(&["a", "c"], false)], 3);
        assert_eq!(keys(&limited), ["a", "b", "c"]);
        assert!(limited.more);
    }
}

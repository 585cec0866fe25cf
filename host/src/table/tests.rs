//! The table state machine's rules, without a cluster.

use super::state::*;

fn table(kind: TableKind, indexes: &[&str]) -> Table {
    Table::new(Schema {
        name: "t".into(),
        kind,
        indexes: indexes.iter().map(|s| s.to_string()).collect(),
    })
}

fn put(key: &str, value: &str) -> Op {
    Op::Put {
        key: key.into(),
        value: value.into(),
        index_values: vec![],
    }
}

fn put_indexed(key: &str, value: &str, index: &str) -> Op {
    Op::Put {
        key: key.into(),
        value: value.into(),
        index_values: vec![index.into()],
    }
}

fn ops(ops: Vec<Op>) -> Batch {
    Batch {
        conditions: vec![],
        ops,
    }
}

fn values(t: &Table, key: &str) -> Vec<String> {
    t.read(key.as_bytes())
        .iter()
        .map(|r| String::from_utf8(r.value.clone()).unwrap())
        .collect()
}

fn keys(found: Vec<Found<'_>>) -> Vec<String> {
    found
        .into_iter()
        .map(|f| String::from_utf8(f.key.to_vec()).unwrap())
        .collect()
}

const LIMITS: TableLimits = TableLimits {
    records_max: 10,
    key_bytes_max: 8,
    value_bytes_max: 16,
    batch_ops_max: 4,
    batch_bytes_max: 64,
    prepared_max: 4,
};

#[test]
fn a_set_keeps_one_record_per_key_and_versions_are_log_indexes() {
    let mut t = table(TableKind::Set, &[]);
    t.apply(1, &ops(vec![put("a", "1")]), &LIMITS).unwrap();
    t.apply(2, &ops(vec![put("a", "2"), put("b", "x")]), &LIMITS)
        .unwrap();
    assert_eq!(values(&t, "a"), ["2"]);
    assert_eq!((t.version(b"a"), t.version(b"b")), (Some(2), Some(2)));
    assert_eq!(t.len(), 2);
    let changes = t.apply(3, &ops(vec![Op::Delete { key: "a".into() }]), &LIMITS);
    assert_eq!(changes, Ok(vec![Change::Delete { key: "a".into() }]));
    assert_eq!((t.version(b"a"), t.len(), t.applied()), (None, 1, 3));
}

#[test]
fn a_bag_keeps_each_value_once_and_removes_one_value() {
    let mut t = table(TableKind::Bag, &[]);
    t.apply(
        1,
        &ops(vec![put("k", "x"), put("k", "y"), put("k", "x")]),
        &LIMITS,
    )
    .unwrap();
    assert_eq!(values(&t, "k"), ["y", "x"], "x rewritten, not doubled");
    assert_eq!(t.len(), 2);
    let remove_y = Op::DeleteValue {
        key: "k".into(),
        value: "y".into(),
    };
    t.apply(2, &ops(vec![remove_y]), &LIMITS).unwrap();
    assert_eq!((values(&t, "k"), t.len()), (vec!["x".to_string()], 1));
    // Removing a value changes the key's version: a reader of version 1
    // must not pass.
    assert_eq!(t.version(b"k"), Some(2));
    let remove_x = Op::DeleteValue {
        key: "k".into(),
        value: "x".into(),
    };
    t.apply(3, &ops(vec![remove_x]), &LIMITS).unwrap();
    assert_eq!((t.version(b"k"), t.len()), (None, 0));
}

#[test]
fn an_ordered_set_answers_ranges_first_next_and_prefixes_in_key_order() {
    let mut t = table(TableKind::OrderedSet, &[]);
    let all = ["b2", "a1", "b1", "c", "b3"].map(|k| put(k, "v")).to_vec();
    let (first, rest) = all.split_at(3);
    t.apply(1, &ops(first.to_vec()), &LIMITS).unwrap();
    t.apply(2, &ops(rest.to_vec()), &LIMITS).unwrap();
    assert_eq!(keys(t.range(b"b1", Some(b"c"), 10)), ["b1", "b2", "b3"]);
    assert_eq!(keys(t.range(b"b", None, 2)), ["b1", "b2"]);
    assert_eq!(keys(t.match_prefix(b"b", 10)), ["b1", "b2", "b3"]);
    assert_eq!(t.first().as_deref(), Some(&b"a1"[..]));
    assert_eq!(t.next(b"b3").as_deref(), Some(&b"c"[..]));
    assert_eq!(t.next(b"c"), None);
    assert_eq!(t.next(b"a").as_deref(), Some(&b"a1"[..]));
}

#[test]
fn conditions_make_a_batch_compare_and_set_and_a_failed_one_changes_nothing() {
    let mut t = table(TableKind::Set, &[]);
    let absent = |k: &str| Condition::Absent { key: k.into() };
    let at = |k: &str, v| Condition::Version {
        key: k.into(),
        version: v,
    };
    let cond = |conditions, ops| Batch { conditions, ops };
    t.apply(1, &cond(vec![absent("a")], vec![put("a", "1")]), &LIMITS)
        .unwrap();
    let before = t.clone();
    assert_eq!(
        t.apply(2, &cond(vec![absent("a")], vec![put("a", "2")]), &LIMITS),
        Err(Abort::Exists { key: "a".into() })
    );
    assert_eq!(
        t.apply(3, &cond(vec![at("a", 0)], vec![put("b", "2")]), &LIMITS),
        Err(Abort::Changed {
            key: "a".into(),
            now: Some(1)
        })
    );
    assert_eq!(
        t.apply(4, &cond(vec![at("z", 1)], vec![put("b", "2")]), &LIMITS),
        Err(Abort::Changed {
            key: "z".into(),
            now: None
        })
    );
    // Only the applied index moved.
    let mut expected = before;
    expected.apply(4, &ops(vec![]), &LIMITS).unwrap();
    assert_eq!(t, expected);
    // The version read makes the write go through, once.
    let cas = cond(vec![at("a", 1)], vec![put("a", "3")]);
    t.apply(5, &cas, &LIMITS).unwrap();
    assert!(matches!(
        t.apply(6, &cas, &LIMITS),
        Err(Abort::Changed { now: Some(5), .. })
    ));
    assert_eq!(values(&t, "a"), ["3"]);
}

#[test]
fn a_stale_fencing_token_is_refused_once_a_newer_one_wrote() {
    let mut t = table(TableKind::Set, &[]);
    let fenced = |token, value: &str| Batch {
        conditions: vec![Condition::Fence {
            lock: "L".into(),
            token,
        }],
        ops: vec![put("k", value)],
    };
    t.apply(1, &fenced(7, "old holder"), &LIMITS).unwrap();
    t.apply(2, &fenced(9, "new holder"), &LIMITS).unwrap();
    assert_eq!(
        t.apply(3, &fenced(7, "old holder again"), &LIMITS),
        Err(Abort::StaleFence {
            lock: "L".into(),
            token: 7,
            newest: 9
        })
    );
    t.apply(4, &fenced(9, "new holder again"), &LIMITS).unwrap();
    assert_eq!(values(&t, "k"), ["new holder again"]);
}

#[test]
fn indexes_follow_writes_rewrites_and_deletes() {
    let mut t = table(TableKind::Bag, &["colour"]);
    t.apply(
        1,
        &ops(vec![
            put_indexed("k1", "apple", "red"),
            put_indexed("k1", "plum", "blue"),
            put_indexed("k2", "cherry", "red"),
        ]),
        &LIMITS,
    )
    .unwrap();
    let red = |t: &Table| -> Vec<(String, String)> {
        t.index_read("colour", b"red")
            .unwrap()
            .into_iter()
            .map(|(k, r)| {
                (
                    String::from_utf8(k.to_vec()).unwrap(),
                    String::from_utf8(r.value.clone()).unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(
        red(&t),
        [
            ("k1".into(), "apple".into()),
            ("k2".into(), "cherry".into())
        ]
    );
    // The apple turns green: rewritten with another index value.
    t.apply(2, &ops(vec![put_indexed("k1", "apple", "green")]), &LIMITS)
        .unwrap();
    assert_eq!(red(&t), [("k2".to_string(), "cherry".to_string())]);
    t.apply(3, &ops(vec![Op::Delete { key: "k2".into() }]), &LIMITS)
        .unwrap();
    assert!(red(&t).is_empty());
    assert_eq!(t.index_read("colour", b"blue").unwrap().len(), 1);
    assert!(t.index_read("size", b"red").is_none(), "no such index");
    assert_eq!(
        t.apply(4, &ops(vec![put("k3", "x")]), &LIMITS),
        Err(Abort::IndexValues {
            given: 0,
            wanted: 1
        })
    );
}

#[test]
fn every_limit_refuses_the_whole_batch_by_name() {
    let mut t = table(TableKind::Set, &[]);
    let refused = |t: &mut Table, batch: Batch| match t.apply(9, &batch, &LIMITS) {
        Err(Abort::Limit { limit, .. }) => limit,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        refused(&mut t, ops(vec![put("a-very-long-key", "v")])),
        "key_bytes_max"
    );
    assert_eq!(
        refused(&mut t, ops(vec![put("k", "a value past sixteen bytes")])),
        "value_bytes_max"
    );
    assert_eq!(
        refused(
            &mut t,
            ops((0..5).map(|i| put(&i.to_string(), "v")).collect())
        ),
        "batch_ops_max"
    );
    let big = "0123456789abcdef";
    assert_eq!(
        refused(
            &mut t,
            ops((0..4).map(|i| put(&i.to_string(), big)).collect())
        ),
        "batch_bytes_max"
    );
    for round in 0..3 {
        let batch = (0..4).map(|i| put(&format!("{round}-{i}"), "v")).collect();
        if round < 2 {
            t.apply(round + 1, &ops(batch), &LIMITS).unwrap();
        } else {
            assert_eq!(refused(&mut t, ops(batch)), "records_max");
        }
    }
    assert_eq!(t.len(), 8, "nothing of a refused batch was written");
    // Rewriting and deleting do not grow the table.
    t.apply(
        20,
        &ops(vec![put("0-0", "w"), Op::Delete { key: "0-1".into() }]),
        &LIMITS,
    )
    .unwrap();
    assert_eq!(t.len(), 7);
}

#[test]
fn replicas_applying_the_same_batches_hold_the_same_table() {
    // A seeded stream of batches over few keys, applied to two replicas,
    // one of which also goes through an encode/decode (a snapshot) halfway.
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let limits = TableLimits::default();
    for kind in [TableKind::Set, TableKind::OrderedSet, TableKind::Bag] {
        let mut a = table(kind, &["i"]);
        let mut b = a.clone();
        for index in 1..=2_000u64 {
            let key = format!("k{}", next(12)).into_bytes();
            let op = match next(4) {
                0 => Op::Delete { key: key.clone() },
                1 => Op::DeleteValue {
                    key: key.clone(),
                    value: vec![next(3) as u8],
                },
                _ => Op::Put {
                    key: key.clone(),
                    value: vec![next(3) as u8],
                    index_values: vec![vec![next(2) as u8]],
                },
            };
            let conditions = match next(3) {
                0 => vec![Condition::Version {
                    key: key.clone(),
                    version: a.version(&key).unwrap_or(0),
                }],
                _ => vec![],
            };
            let batch = Batch {
                conditions,
                ops: vec![op],
            };
            let got = a.apply(index, &batch, &limits);
            assert_eq!(b.apply(index, &batch, &limits), got);
            if index == 1_000 {
                b = molt_abi::codec::decode(&molt_abi::codec::encode(&b)).unwrap();
            }
            // The record count and the indexes agree with the rows.
            let counted: usize = a
                .range(b"", None, usize::MAX)
                .iter()
                .map(|f| f.records.len())
                .sum();
            assert_eq!(counted as u64, a.len());
            for v in [0u8, 1] {
                let by_index = a.index_read("i", &[v]).unwrap().len();
                let by_scan = a
                    .range(b"", None, usize::MAX)
                    .iter()
                    .flat_map(|f| f.records.iter())
                    .filter(|r| r.index_values[0] == [v])
                    .count();
                assert_eq!(by_index, by_scan, "{kind:?} index value {v} at {index}");
            }
        }
        assert_eq!(a, b, "{kind:?}");
    }
}

// ---- local tables ----

mod local {
    use std::sync::{Arc, Mutex};

    use super::super::local::*;
    use super::super::state::*;
    use super::{ops, put};

    fn schema(name: &str) -> Schema {
        Schema {
            name: name.into(),
            kind: TableKind::Set,
            indexes: vec![],
        }
    }

    #[test]
    fn tables_are_created_described_and_deleted_by_name() {
        let tables = LocalTables::new(TablesLimits {
            tables_max: 2,
            ..TablesLimits::default()
        });
        tables.create(schema("carts")).unwrap();
        assert_eq!(
            tables.create(schema("carts")),
            Err(TableError::Exists("carts".into()))
        );
        assert!(matches!(
            tables.create(schema("")),
            Err(TableError::BadSchema(_))
        ));
        let twice = Schema {
            indexes: vec!["i".into(), "i".into()],
            ..schema("x")
        };
        assert!(matches!(
            tables.create(twice),
            Err(TableError::BadSchema(_))
        ));
        tables.create(schema("sessions")).unwrap();
        assert_eq!(
            tables.create(schema("third")),
            Err(TableError::Limit {
                limit: "tables_max".into(),
                max: 2
            })
        );
        assert_eq!(tables.names(), ["carts", "sessions"]);
        tables.transact("carts", ops(vec![put("k", "v")])).unwrap();
        let info = tables.info("carts").unwrap();
        assert_eq!((info.records, info.applied), (1, 1));
        tables.delete("carts").unwrap();
        assert!(matches!(
            tables.transact("carts", ops(vec![])),
            Err(TableError::NoTable(t)) if t == "carts"
        ));
        assert!(matches!(
            tables.delete("carts"),
            Err(TableError::NoTable(t)) if t == "carts"
        ));
        assert_eq!(tables.names(), ["sessions"]);
    }

    #[test]
    fn commits_sharing_one_log_entry_apply_in_order_and_are_one_event() {
        let tables = LocalTables::new(TablesLimits::default());
        let replica = tables.insert_replica(schema("carts"), None).unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let seen = events.clone();
        tables
            .subscribe(
                "carts",
                Box::new(move |index, changes| {
                    seen.lock().unwrap().push((index, changes.len()));
                    true
                }),
            )
            .unwrap();
        replica.apply(3, ops(vec![put("a", "1")])).unwrap();
        // Two writers read `a` at version 3 and a third writes `b`; the
        // leader put their commits into entry 4 together.
        let read_at_3 = |value: &str| Batch {
            conditions: vec![Condition::Version {
                key: b"a".to_vec(),
                version: 3,
            }],
            ops: vec![put("a", value)],
        };
        let outcomes = replica.apply_each(
            4,
            vec![read_at_3("2"), read_at_3("3"), ops(vec![put("b", "x")])],
        );
        // The second saw what the first wrote, as if it came after it.
        assert_eq!(
            outcomes,
            vec![
                Ok(()),
                Err(Abort::Changed {
                    key: b"a".to_vec(),
                    now: Some(4)
                }),
                Ok(())
            ]
        );
        let (records, version) = tables.get("carts", b"a").unwrap();
        assert_eq!((records[0].value.as_slice(), version), (&b"2"[..], Some(4)));
        assert_eq!(tables.get("carts", b"b").unwrap().1, Some(4));
        assert_eq!(tables.info("carts").unwrap().applied, 4);
        // One event for the entry, with both changes in commit order.
        assert_eq!(*events.lock().unwrap(), vec![(3, 1), (4, 2)]);
    }

    #[test]
    fn subscribers_see_every_commit_in_order_and_a_gone_one_is_dropped() {
        let tables = LocalTables::new(TablesLimits {
            subscribers_per_table_max: 2,
            ..TablesLimits::default()
        });
        tables.create(schema("t")).unwrap();
        type Events = Vec<(u64, Vec<Change>)>;
        let seen: Arc<Mutex<Events>> = Arc::default();
        let log = seen.clone();
        let first = tables
            .subscribe(
                "t",
                Box::new(move |index, changes| {
                    log.lock().unwrap().push((index, changes.to_vec()));
                    true
                }),
            )
            .unwrap();
        let calls = Arc::new(Mutex::new(0));
        let counted = calls.clone();
        tables
            .subscribe(
                "t",
                Box::new(move |_, _| {
                    *counted.lock().unwrap() += 1;
                    false
                }),
            )
            .unwrap();
        assert!(matches!(
            tables.subscribe("t", Box::new(|_, _| true)),
            Err(TableError::Limit { .. })
        ));
        tables.transact("t", ops(vec![put("a", "1")])).unwrap();
        // An aborted batch is no event, and takes no index (a local table
        // keeps no log; a replicated one's indexes may skip).
        let refused = Batch {
            conditions: vec![Condition::Absent { key: "a".into() }],
            ops: vec![put("a", "2")],
        };
        assert!(matches!(
            tables.transact("t", refused),
            Err(TableError::Aborted(Abort::Exists { .. }))
        ));
        tables
            .transact("t", ops(vec![Op::Delete { key: "a".into() }]))
            .unwrap();
        assert_eq!(
            *seen.lock().unwrap(),
            [
                (
                    1,
                    vec![Change::Put {
                        key: "a".into(),
                        value: "1".into()
                    }]
                ),
                (2, vec![Change::Delete { key: "a".into() }]),
            ]
        );
        assert_eq!(*calls.lock().unwrap(), 1, "dropped after it said gone");
        assert_eq!(tables.info("t").unwrap().subscribers, 1);
        assert_eq!(tables.unsubscribe("t", first), Ok(true));
        assert_eq!(tables.unsubscribe("t", first), Ok(false));
        tables.transact("t", ops(vec![put("b", "1")])).unwrap();
        assert_eq!(seen.lock().unwrap().len(), 2);
    }

    #[test]
    fn concurrent_read_modify_write_transactions_lose_no_update() {
        // Each writer reads the counter's value and version and writes
        // value + 1 on condition of that version, retrying on conflict.
        let tables = LocalTables::default();
        tables.create(schema("counter")).unwrap();
        let increments = 500;
        let writers: Vec<_> = (0..8)
            .map(|_| {
                let tables = tables.clone();
                std::thread::spawn(move || {
                    let mut conflicts = 0;
                    for _ in 0..increments {
                        loop {
                            let (records, version) = tables.get("counter", b"n").unwrap();
                            let n: u64 = records
                                .first()
                                .map_or(0, |r| u64::from_le_bytes(r.value[..].try_into().unwrap()));
                            let condition = match version {
                                Some(version) => Condition::Version {
                                    key: "n".into(),
                                    version,
                                },
                                None => Condition::Absent { key: "n".into() },
                            };
                            let batch = Batch {
                                conditions: vec![condition],
                                ops: vec![Op::Put {
                                    key: "n".into(),
                                    value: (n + 1).to_le_bytes().to_vec(),
                                    index_values: vec![],
                                }],
                            };
                            match tables.transact("counter", batch) {
                                Ok(_) => break,
                                Err(TableError::Aborted(_)) => conflicts += 1,
                                Err(e) => panic!("{e}"),
                            }
                        }
                    }
                    conflicts
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let (records, _) = tables.get("counter", b"n").unwrap();
        let n = u64::from_le_bytes(records[0].value[..].try_into().unwrap());
        assert_eq!(n, 8 * increments);
    }
}

mod backups {
    use super::super::backup::{self, BackupError};
    use super::*;

    fn filled() -> Table {
        let mut t = table(TableKind::Bag, &["colour"]);
        let tagged = |key: &str, value: &str| Op::Put {
            key: key.into(),
            value: value.into(),
            index_values: vec![b"red".to_vec()],
        };
        t.apply(1, &ops(vec![tagged("a", "1"), tagged("a", "2")]), &LIMITS)
            .unwrap();
        let fenced = Batch {
            conditions: vec![Condition::Fence {
                lock: "L".into(),
                token: 4,
            }],
            ops: vec![tagged("b", "3")],
        };
        t.apply(2, &fenced, &LIMITS).unwrap();
        t
    }

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("molt-backup-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn a_backup_reads_back_as_the_table_it_was() {
        let t = filled();
        let path = temp("round-trip");
        let covered = backup::write(&t, &path).unwrap();
        assert_eq!((covered.index, covered.records), (2, 3));
        let back = backup::read(&path).unwrap();
        assert_eq!(back, t, "rows, indexes, fences and index alike");
        // The fence survives: token 3 is still refused.
        let mut back = back;
        let stale = Batch {
            conditions: vec![Condition::Fence {
                lock: "L".into(),
                token: 3,
            }],
            ops: vec![],
        };
        assert!(matches!(
            back.apply(3, &stale, &LIMITS),
            Err(Abort::StaleFence { .. })
        ));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn damaged_cut_and_foreign_files_are_refused_by_what_is_wrong() {
        let path = temp("damaged");
        backup::write(&filled(), &path).unwrap();
        let good = std::fs::read(&path).unwrap();

        let mut flipped = good.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0x40;
        std::fs::write(&path, &flipped).unwrap();
        assert!(
            matches!(backup::read(&path), Err(BackupError::Damaged { why, .. }) if why.contains("checksum"))
        );

        std::fs::write(&path, &good[..good.len() - 5]).unwrap();
        assert!(
            matches!(backup::read(&path), Err(BackupError::Damaged { why, .. }) if why.contains("length"))
        );

        std::fs::write(&path, &good[..12]).unwrap();
        assert!(matches!(
            backup::read(&path),
            Err(BackupError::Damaged { .. })
        ));

        std::fs::write(&path, b"name,value\nann,1\n").unwrap();
        assert!(matches!(
            backup::read(&path),
            Err(BackupError::NotABackup { .. })
        ));

        let missing = temp("never-written");
        assert!(matches!(
            backup::read(&missing),
            Err(BackupError::Io { .. })
        ));
        std::fs::remove_file(&path).unwrap();
    }
}

/// A `disc` replica's group log written by an earlier build must still
/// read: see `cluster::tests::check_log_golden`.
#[test]
fn the_table_group_log_format_only_grows() {
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

    use super::group::{GroupCommand, TableRaft};
    use crate::table::state::{Batch, Condition, Op};

    let batch = Batch {
        conditions: vec![
            Condition::Absent { key: b"a".to_vec() },
            Condition::Version {
                key: b"b".to_vec(),
                version: 7,
            },
            Condition::Fence {
                lock: "l".into(),
                token: 9,
            },
        ],
        ops: vec![
            Op::Put {
                key: b"a".to_vec(),
                value: b"v".to_vec(),
                index_values: vec![b"i".to_vec()],
            },
            Op::Delete { key: b"b".to_vec() },
            Op::DeleteValue {
                key: b"c".to_vec(),
                value: b"w".to_vec(),
            },
        ],
    };
    let log_id = LogId::new(CommittedLeaderId::new(2, 1), 11);
    let tx = super::tx::TxId {
        node: "a@h".into(),
        n: 5,
    };
    let tables = vec!["a".to_string(), "b".to_string()];
    let entry = |command: GroupCommand| Entry::<TableRaft> {
        log_id,
        payload: EntryPayload::Normal(command),
    };
    let prepare = entry(GroupCommand::Prepare {
        tx: tx.clone(),
        intent: super::tx::Intent {
            home: "a".into(),
            tables: tables.clone(),
            batch: batch.clone(),
        },
    });
    let decide = entry(GroupCommand::Decide {
        tx: tx.clone(),
        commit: true,
        tables: tables.clone(),
    });
    let resolve = entry(GroupCommand::Resolve {
        tx: tx.clone(),
        commit: false,
    });
    let forget = entry(GroupCommand::Forget { tx, tables });
    let commits = entry(GroupCommand::Commits(vec![
        batch.clone(),
        Batch {
            conditions: Vec::new(),
            ops: vec![Op::Delete { key: b"d".to_vec() }],
        },
    ]));
    let commit = Entry::<TableRaft> {
        log_id,
        payload: EntryPayload::Normal(GroupCommand::Commit(batch)),
    };
    let blank = Entry::<TableRaft> {
        log_id,
        payload: EntryPayload::Blank,
    };
    let restore = Entry::<TableRaft> {
        log_id,
        payload: EntryPayload::Normal(GroupCommand::Restore(vec![1, 2, 3])),
    };
    let samples = vec![
        ("entry.commit".to_string(), molt_abi::codec::encode(&commit)),
        (
            "entry.restore".to_string(),
            molt_abi::codec::encode(&restore),
        ),
        ("entry.blank".to_string(), molt_abi::codec::encode(&blank)),
        (
            "entry.prepare".to_string(),
            molt_abi::codec::encode(&prepare),
        ),
        ("entry.decide".to_string(), molt_abi::codec::encode(&decide)),
        (
            "entry.resolve".to_string(),
            molt_abi::codec::encode(&resolve),
        ),
        ("entry.forget".to_string(), molt_abi::codec::encode(&forget)),
        (
            "entry.commits".to_string(),
            molt_abi::codec::encode(&commits),
        ),
    ];
    crate::cluster::tests::check_log_golden("src/table/log_golden.txt", samples);
}

/// A `disc_only` table read from its file answers exactly as the same
/// table in memory, for the same batches: before its commits are
/// written, after, and after its file is opened again.
mod disc_only {
    use super::super::disc::DiscFile;
    use super::super::local::*;
    use super::*;

    /// A small deterministic generator (xorshift).
    struct Dice(u64);

    impl Dice {
        fn roll(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    fn temp(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("molt-disc-only-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// Everything a reader can see of table `name`.
    fn seen(tables: &LocalTables, name: &str) -> String {
        tables
            .read(name, |t| {
                let mut out = format!("len {} applied {}\n", t.len(), t.applied());
                for f in t.range(&[], None, usize::MAX) {
                    out += &format!("{:?} v{} {:?}\n", f.key, f.version, f.records);
                }
                for value in [b"x".as_slice(), b"y", b"z"] {
                    out += &format!("index {value:?}: {:?}\n", t.index_read("i", value));
                }
                for prefix in [b"k1".as_slice(), b"k", b"q"] {
                    let keys: Vec<_> = t
                        .match_prefix(prefix, 5)
                        .into_iter()
                        .map(|f| f.key)
                        .collect();
                    out += &format!("prefix {prefix:?}: {keys:?}\n");
                }
                out += &format!("first {:?} next(k3) {:?}\n", t.first(), t.next(b"k3"));
                out += &format!("range k2..k5 {:?}\n", t.range(b"k2", Some(b"k5"), 2));
                out += &format!("fence {:?}\n", t.fence("L"));
                out
            })
            .unwrap()
    }

    fn random_batch(dice: &mut Dice, t: &LocalTables, name: &str) -> Batch {
        let key = |dice: &mut Dice| format!("k{}", dice.roll(12)).into_bytes();
        let mut batch = Batch::default();
        for _ in 0..=dice.roll(3) {
            let k = key(dice);
            let op = match dice.roll(5) {
                0 => Op::Delete { key: k },
                1 => Op::DeleteValue {
                    key: k,
                    value: format!("v{}", dice.roll(3)).into_bytes(),
                },
                _ => Op::Put {
                    key: k,
                    value: format!("v{}", dice.roll(3)).into_bytes(),
                    index_values: vec![[b"x", b"y", b"z"][dice.roll(3) as usize].to_vec()],
                },
            };
            batch.ops.push(op);
        }
        match dice.roll(6) {
            0 => batch.conditions.push(Condition::Absent { key: key(dice) }),
            1 => {
                let k = key(dice);
                let version = t.get(name, &k).unwrap().1.unwrap_or(0);
                batch.conditions.push(Condition::Version {
                    key: k,
                    version: version + dice.roll(2),
                });
            }
            2 => batch.conditions.push(Condition::Fence {
                lock: "L".into(),
                token: dice.roll(8),
            }),
            _ => {}
        }
        batch
    }

    async fn same_as_memory(kind: TableKind, seed: u64) {
        let dir = temp(&format!("{kind:?}"));
        let schema = Schema {
            name: "t".into(),
            kind,
            indexes: vec!["i".into()],
        };
        let limits = TablesLimits {
            table: TableLimits {
                records_max: 20,
                ..TableLimits::default()
            },
            ..TablesLimits::default()
        };
        let memory = LocalTables::new(limits.clone());
        memory.create(schema.clone()).unwrap();
        let disc = LocalTables::new(limits.clone());
        disc.create_copy(schema, Some(&dir), true).unwrap();
        assert_eq!(
            disc.info("t").unwrap().copy,
            molt_abi::table::Copy::DiscOnly
        );
        let mut dice = Dice(seed);
        let mut held = None;
        let mut staged_seen = 0;
        for step in 0..300 {
            // The writer is held for stretches: what is committed then is
            // read from the overlay, over the file.
            match (held.is_some(), dice.roll(10)) {
                (false, 0) => held = Some(disc.hold_writer("t")),
                (true, 0) => held = None,
                _ => {}
            }
            let batch = random_batch(&mut dice, &memory, "t");
            let a = memory.transact("t", batch.clone()).map(|c| c.index);
            let b = disc.transact("t", batch.clone());
            // Some commits are awaited (their rows then read from the
            // file), some not (read from the overlay).
            let b = match b {
                Ok(committed) => {
                    let durable = committed.durable.expect("a disc_only commit is written");
                    if held.is_none() && dice.roll(3) == 0 {
                        durable.await.unwrap().unwrap();
                    }
                    Ok(committed.index)
                }
                Err(e) => Err(e),
            };
            assert_eq!(a, b, "step {step}: {batch:?}");
            assert_eq!(seen(&memory, "t"), seen(&disc, "t"), "step {step}");
            staged_seen =
                staged_seen.max(disc.read("t", |t| t.disc_rows().unwrap().staged()).unwrap());
        }
        drop(held);
        assert!(
            staged_seen > 3,
            "reads went through a held overlay ({staged_seen} rows)"
        );
        // Written and opened again: the same table, nothing in memory.
        disc.close().await;
        let again = LocalTables::new(limits);
        assert!(again.load(&dir).is_empty());
        assert_eq!(seen(&memory, "t"), seen(&again, "t"), "reopened");
        again
            .read("t", |t| {
                assert_eq!(t.disc_rows().expect("read from disc").staged(), 0);
            })
            .unwrap();
        again.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_set_on_disc_only_reads_as_in_memory() {
        same_as_memory(TableKind::Set, 7).await;
    }

    #[tokio::test]
    async fn an_ordered_set_on_disc_only_reads_as_in_memory() {
        same_as_memory(TableKind::OrderedSet, 11).await;
    }

    #[tokio::test]
    async fn a_bag_on_disc_only_reads_as_in_memory() {
        same_as_memory(TableKind::Bag, 13).await;
    }

    #[tokio::test]
    async fn a_row_that_does_not_decode_stops_its_table_with_the_file_named() {
        let dir = temp("garbage");
        let schema = Schema {
            name: "g".into(),
            kind: TableKind::Set,
            indexes: vec![],
        };
        let tables = LocalTables::default();
        tables.create_copy(schema, Some(&dir), true).unwrap();
        let put = |k: &str| Batch {
            conditions: vec![],
            ops: vec![Op::Put {
                key: k.into(),
                value: b"v".to_vec(),
                index_values: vec![],
            }],
        };
        let c = tables.transact("g", put("a")).unwrap();
        c.durable.unwrap().await.unwrap().unwrap();
        tables.close().await;
        // Garbage in place of row "a", written with redb itself.
        let path = super::super::disc::path_for(&dir, "g");
        {
            let db = redb::Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let def: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("data");
                let mut data = txn.open_table(def).unwrap();
                data.insert(b"\x01a".as_slice(), b"\xff\xff\xff".as_slice())
                    .unwrap();
            }
            txn.commit().unwrap();
        }
        let tables = LocalTables::default();
        assert!(tables.load(&dir).is_empty(), "opens: rows are read later");
        let read = tables.get("g", b"a");
        let Err(TableError::Unavailable { table, why }) = read else {
            panic!("expected Unavailable, got {read:?}");
        };
        assert_eq!(table, "g");
        assert!(
            why.contains(".redb") && why.contains("does not decode"),
            "{why}"
        );
        // It stays refused: a write would rest on what it could not read.
        assert!(matches!(
            tables.transact("g", put("b")),
            Err(TableError::Unavailable { .. })
        ));
        assert!(matches!(
            tables.get("g", b"zz"),
            Err(TableError::Unavailable { .. })
        ));
        tables.close().await;
        let _ = DiscFile::open(&path).map(|(_, f)| f);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

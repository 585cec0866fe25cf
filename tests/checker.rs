//! Checkers for Jepsen-style histories recorded by fault-injection tests of
//! cluster-wide names, locks and leader elections.
//!
//! * [`check_linearizable`] / [`check_linearizable_per_key`]: a
//!   Wing–Gong–Lowe search for any [`Model`]; [`NameModel`] models one name
//!   of the name table, and [`check_name_table`] checks each name apart.
//! * [`check_lock`]: fencing tokens and mutual exclusion of a lock's [`Hold`]s.
//! * [`check_elections`] and [`check_reigns`]: one leader per term, terms
//!   never going back, and reigns that do not overlap.
//! * [`check_list_append`]: transactions that read lists and append to
//!   them (Elle's list-append): no lost or doubled append, all-or-nothing,
//!   reads that are prefixes of the final lists, and an acyclic graph of
//!   write-write, write-read and read-write dependencies (serializable).
//!
//! Each returns `Err(`[`Violation`]`)` naming the records that conflict; its
//! `Display` is meant to be read in a test failure. Times are plain
//! [`Nanos`] on one monotonic clock, so histories can be built by hand.
//! Intervals are half-open: one ending at `t` does not overlap one from `t`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::hash::Hash;

/// A time in nanoseconds on the test's monotonic clock.
pub type Nanos = u64;

/// How a client saw an operation end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome<R> {
    /// It took effect once, between invoke and completion, returning this.
    Ok(R),
    /// It definitely did not take effect (the checker leaves it out).
    Fail,
    /// It may have taken effect at any time after its invoke, even after
    /// the client gave up (a timeout, `no_quorum` after submitting), or never.
    Unknown,
}

/// One operation of a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry<O, R> {
    /// The client (process) that ran it; only shown in reports.
    pub process: u64,
    /// What was asked.
    pub op: O,
    /// When the client sent the request.
    pub invoke: Nanos,
    /// When the client got the answer (ignored for [`Outcome::Unknown`]).
    pub complete: Nanos,
    /// What the client was told.
    pub outcome: Outcome<R>,
}

impl<O, R> Entry<O, R> {
    /// An operation that returned `ret`.
    pub fn ok(process: u64, op: O, invoke: Nanos, complete: Nanos, ret: R) -> Self {
        let mut entry = Entry::fail(process, op, invoke, complete);
        entry.outcome = Outcome::Ok(ret);
        entry
    }

    /// An operation that definitely did not take effect.
    pub fn fail(process: u64, op: O, invoke: Nanos, complete: Nanos) -> Self {
        let outcome = Outcome::Fail;
        Entry {
            process,
            op,
            invoke,
            complete,
            outcome,
        }
    }

    /// An operation whose effect is unknown (`complete` is `Nanos::MAX`).
    pub fn unknown(process: u64, op: O, invoke: Nanos) -> Self {
        let mut entry = Entry::fail(process, op, invoke, Nanos::MAX);
        entry.outcome = Outcome::Unknown;
        entry
    }
}

/// The rule a [`Violation`] breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rule {
    /// The history is malformed (e.g. something ends before it starts).
    InvalidHistory,
    /// No order of the operations agrees with both the model and real time.
    NotLinearizable,
    /// The search gave up after [`SEARCH_LIMIT`] states: too many concurrent
    /// or unknown operations to decide.
    Inconclusive,
    /// Two grants of a lock carry the same fencing token.
    DuplicateToken,
    /// A grant made after another in real time got a lower token.
    TokenOrder,
    /// Two holds of a lock overlap in time and are not both shared.
    LockOverlap,
    /// Two different leaders were seen for one term.
    TwoLeaders,
    /// An observer saw a term lower than one it had already seen.
    TermWentBack,
    /// Two reigns of different terms overlap in time.
    ReignOverlap,
    /// An acknowledged write is missing, or a write appears twice.
    LostWrite,
    /// A transaction's writes were applied in part.
    NotAtomic,
    /// A read saw a list that is not a prefix of the key's final list.
    BadRead,
    /// The transactions' dependencies form a cycle: no serial order
    /// explains what they read and wrote.
    NotSerializable,
    /// A value no acknowledged write wrote.
    Phantom,
}

/// A broken rule, with the records that break it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The rule.
    pub rule: Rule,
    /// What went wrong, in a line (with the key, if checked per key).
    pub summary: String,
    /// The records involved and any context, a line each.
    pub details: Vec<String>,
}

/// `Err` of a violation of `rule`.
fn broken<D: Into<Vec<String>>>(
    rule: Rule,
    why: impl Into<String>,
    details: D,
) -> Result<(), Violation> {
    let (summary, details) = (why.into(), details.into());
    Err(Violation {
        rule,
        summary,
        details,
    })
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.rule, self.summary)?;
        self.details.iter().try_for_each(|d| write!(f, "\n  {d}"))
    }
}

impl std::error::Error for Violation {}

// ---------------------------------------------------------------------------
// Linearizability
// ---------------------------------------------------------------------------

/// A sequential specification for [`check_linearizable`].
pub trait Model {
    /// The state of the object (memoised, so keep it small).
    type State: Clone + Eq + Hash + fmt::Debug;
    /// An operation on it (compared so that of identical pending unknown
    /// operations only one is tried at a time).
    type Op: fmt::Debug + PartialEq;
    /// What an operation returns.
    type Ret: fmt::Debug;

    /// The state before any operation.
    fn init() -> Self::State;

    /// Applies `op` to `state`. With `Some(ret)` (the operation returned
    /// `ret`), returns `None` if `ret` is impossible from `state`. With
    /// `None` (its outcome is unknown), returns the state it leaves; the
    /// checker also considers it never taking effect.
    fn step(state: &Self::State, op: &Self::Op, ret: Option<&Self::Ret>) -> Option<Self::State>;
}

/// An [`Entry`] of `M`'s operations.
pub type EntryOf<M> = Entry<<M as Model>::Op, <M as Model>::Ret>;

/// The most configurations (ops linearized, state) one search records
/// before it gives up with [`Rule::Inconclusive`] (each takes about 200
/// bytes). The cost grows exponentially with how many ops are concurrent
/// and how many [`Outcome::Unknown`] ops are pending at once: a few hundred
/// ops per key with about ten concurrent and one in eight unknown take well
/// under a second in release builds; failing histories cost the most, as
/// every ordering must be ruled out.
pub const SEARCH_LIMIT: usize = 500_000;

/// A set of operation indices, one bit each.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Self {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn set(&mut self, i: usize, on: bool) {
        let (word, bit) = (i / 64, 1 << (i % 64));
        self.0[word] = (self.0[word] & !bit) | if on { bit } else { 0 };
    }
    fn subset_of(&self, other: &Bits) -> bool {
        self.0.iter().zip(&other.0).all(|(a, b)| a & !b == 0)
    }
}

/// The configurations a search has visited: for each set of definite ops
/// linearized and state, the least sets of unknown ops used to get there
/// (using fewer is as good, as the others stay available).
struct Memo<S>(HashMap<(Bits, S), Vec<Bits>>);

impl<S: Clone + Eq + Hash> Memo<S> {
    /// Records a configuration; false if one as good was visited.
    fn visit(&mut self, done: &Bits, state: &S, maybe: &Bits) -> bool {
        let seen = self.0.entry((done.clone(), state.clone())).or_default();
        if seen.iter().any(|v| v.subset_of(maybe)) {
            return false;
        }
        seen.retain(|v| !maybe.subset_of(v));
        seen.push(maybe.clone());
        true
    }
}

/// A node of the circular event list; node 0 is the sentinel.
#[derive(Clone, Copy)]
struct Node {
    op: usize,
    is_call: bool,
    prev: usize,
    next: usize,
}

/// The calls and returns of a history in time order, as a doubly linked
/// list that ops are lifted out of while linearized.
struct Events {
    nodes: Vec<Node>,
    /// Each op's return node, if it has one.
    ret_node: Vec<Option<usize>>,
}

impl Events {
    /// Unlinks (`on == false`) or relinks node `x`.
    fn link(&mut self, x: usize, on: bool) {
        let Node { prev, next, .. } = self.nodes[x];
        self.nodes[prev].next = if on { x } else { next };
        self.nodes[next].prev = if on { x } else { prev };
    }
    fn lift(&mut self, call: usize) {
        self.link(call, false);
        if let Some(r) = self.ret_node[self.nodes[call].op] {
            self.link(r, false);
        }
    }
    fn unlift(&mut self, call: usize) {
        if let Some(r) = self.ret_node[self.nodes[call].op] {
            self.link(r, true);
        }
        self.link(call, true);
    }
    /// The ops whose calls come before node `end`.
    fn before(&self, end: usize) -> impl Iterator<Item = usize> + '_ {
        let mut n = self.nodes[0].next;
        std::iter::from_fn(move || {
            let op = (n != end).then(|| self.nodes[n].op)?;
            n = self.nodes[n].next;
            Some(op)
        })
    }
}

fn describe<O: fmt::Debug, R: fmt::Debug>(index: usize, e: &Entry<O, R>) -> String {
    let (p, op, t) = (e.process, &e.op, e.invoke);
    match &e.outcome {
        Outcome::Ok(r) => format!(
            "op #{index} p{p} {op:?} -> {r:?}, invoked {t} done {}",
            e.complete
        ),
        Outcome::Fail => format!("op #{index} p{p} {op:?} -> failed, invoked {t}"),
        Outcome::Unknown => format!("op #{index} p{p} {op:?} -> unknown, invoked {t}"),
    }
}

/// Checks that `history` (of one object) is linearizable with respect to
/// `M`. [`Outcome::Fail`] ops are left out; [`Outcome::Unknown`] ops may
/// take effect at any point after their invoke, or never. An op invoked at
/// the time another completes counts as concurrent with it.
pub fn check_linearizable<M: Model>(history: &[EntryOf<M>]) -> Result<(), Violation> {
    search::<M>(None, &history.iter().enumerate().collect::<Vec<_>>())
}

/// Checks each key's operations apart with [`check_linearizable`] (which
/// is enough: linearizability composes), in key order. Op numbers in
/// reports are positions in `history`.
pub fn check_linearizable_per_key<M: Model, K: Ord + fmt::Debug>(
    history: &[(K, EntryOf<M>)],
) -> Result<(), Violation> {
    let mut by_key = BTreeMap::<&K, Vec<_>>::new();
    for (i, (k, e)) in history.iter().enumerate() {
        by_key.entry(k).or_default().push((i, e));
    }
    by_key
        .into_iter()
        .try_for_each(|(k, ops)| search::<M>(Some(format!("{k:?}")), &ops))
}

fn search<M: Model>(
    key: Option<String>,
    history: &[(usize, &EntryOf<M>)],
) -> Result<(), Violation> {
    let of_key = key.map(|k| format!(" of key {k}")).unwrap_or_default();
    let ops: Vec<_> = history
        .iter()
        .filter(|(_, e)| !matches!(e.outcome, Outcome::Fail))
        .collect();
    let show = |i: usize| describe(ops[i].0, ops[i].1);
    let mut times = Vec::with_capacity(2 * ops.len());
    for (i, (_, e)) in ops.iter().enumerate() {
        times.push((e.invoke, false, i));
        if matches!(e.outcome, Outcome::Ok(_)) {
            if e.complete < e.invoke {
                let why = format!("op completed before it was invoked{of_key}");
                return broken(Rule::InvalidHistory, why, [show(i)]);
            }
            times.push((e.complete, true, i));
        }
    }
    // Calls sort before returns at the same time, so such ops overlap.
    times.sort_unstable();
    let len = times.len() + 1;
    let sentinel = Node {
        op: usize::MAX,
        is_call: false,
        prev: len - 1,
        next: 1 % len,
    };
    let mut ev = Events {
        nodes: vec![sentinel],
        ret_node: vec![None; ops.len()],
    };
    for (k, &(_, is_ret, op)) in times.iter().enumerate() {
        ev.nodes.push(Node {
            op,
            is_call: !is_ret,
            prev: k,
            next: (k + 2) % len,
        });
        if is_ret {
            ev.ret_node[op] = Some(k + 1);
        }
    }

    let mut state = M::init();
    // Definite and unknown ops linearized so far.
    let (mut done, mut maybe) = (Bits::new(ops.len()), Bits::new(ops.len()));
    let mut memo = Memo(HashMap::new());
    memo.visit(&done, &state, &maybe);
    let mut stack: Vec<(usize, M::State)> = Vec::new();
    // The deepest point the search got stuck at, for the report.
    let mut stuck: Vec<String> = Vec::new();
    let mut deepest = None;
    let mut entry = ev.nodes[0].next;
    while entry != 0 {
        let node = ev.nodes[entry];
        let e = ops[node.op].1;
        if node.is_call {
            let ret = match &e.outcome {
                Outcome::Ok(r) => Some(r),
                _ => None,
            };
            // Of identical pending unknown ops, trying the first is enough;
            // an unknown op that changes nothing is better left for later.
            let twin = || {
                let same =
                    |o: usize| matches!(ops[o].1.outcome, Outcome::Unknown) && ops[o].1.op == e.op;
                ev.before(entry).any(same)
            };
            let next = M::step(&state, &e.op, ret);
            if let Some(next) = next.filter(|n| ret.is_some() || (*n != state && !twin())) {
                let bits = if ret.is_some() { &mut done } else { &mut maybe };
                bits.set(node.op, true);
                if memo.visit(&done, &next, &maybe) {
                    if memo.0.len() > SEARCH_LIMIT {
                        let why = format!(
                            "history{of_key} of {} ops: no verdict within {SEARCH_LIMIT} states",
                            ops.len()
                        );
                        let hint = "use fewer concurrent or unknown ops".to_owned();
                        return broken(Rule::Inconclusive, why, [hint]);
                    }
                    stack.push((entry, std::mem::replace(&mut state, next)));
                    ev.lift(entry);
                    entry = ev.nodes[0].next;
                    continue;
                }
                let bits = if ret.is_some() { &mut done } else { &mut maybe };
                bits.set(node.op, false);
            }
            entry = node.next;
            continue;
        }
        // This op must have taken effect by now and cannot: backtrack.
        if deepest.is_none_or(|d| stack.len() > d) {
            deepest = Some(stack.len());
            stuck = vec![format!("cannot linearize {}", show(node.op))];
            let n = stack.len();
            stuck.push(format!(
                "after the longest linearization found, {n} ops ending with:"
            ));
            let tail = &stack[n.saturating_sub(8)..];
            stuck.extend(
                tail.iter()
                    .map(|&(call, _)| format!("  {}", show(ev.nodes[call].op))),
            );
            stuck.push(format!("in state {state:?}, with these ops pending:"));
            let pending: Vec<_> = ev.before(entry).collect();
            stuck.extend(pending.iter().take(12).map(|&op| format!("  {}", show(op))));
            if pending.len() > 12 {
                stuck.push(format!("  and {} more", pending.len() - 12));
            }
        }
        let Some((call, prev)) = stack.pop() else {
            let why = format!("history{of_key} is not linearizable");
            return broken(Rule::NotLinearizable, why, stuck);
        };
        state = prev;
        done.set(ev.nodes[call].op, false);
        maybe.set(ev.nodes[call].op, false);
        ev.unlift(call);
        entry = ev.nodes[call].next;
    }
    // Only calls of unknown ops are left: they may never take effect.
    Ok(())
}

/// An operation on one name of the name table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NameOp {
    /// Register the name to `pid`.
    Register {
        /// The registering process.
        pid: u64,
    },
    /// Unregister the name; only its holder may.
    Unregister {
        /// The unregistering process.
        pid: u64,
    },
    /// Look the name up.
    Whereis,
    /// `pid` exited or its node's session expired: frees the name if held
    /// by `pid`.
    Release {
        /// The process that went away.
        pid: u64,
    },
}

/// What a [`NameOp`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NameRet {
    /// [`NameOp::Register`] took the free name, or its caller held it.
    Registered,
    /// [`NameOp::Register`] found the name held.
    AlreadyRegistered {
        /// Who held it.
        holder: u64,
    },
    /// [`NameOp::Unregister`] freed the name.
    Unregistered,
    /// [`NameOp::Unregister`] by a process that did not hold the name.
    NotHolder,
    /// [`NameOp::Whereis`]: the holder, if any.
    Holder(Option<u64>),
    /// [`NameOp::Release`] (always).
    Released,
}

/// One name of the name table: free (`None`) or held by a pid.
#[derive(Clone, Copy, Debug, Default)]
pub struct NameModel;

impl Model for NameModel {
    type State = Option<u64>;
    type Op = NameOp;
    type Ret = NameRet;

    fn init() -> Option<u64> {
        None
    }

    fn step(state: &Option<u64>, op: &NameOp, ret: Option<&NameRet>) -> Option<Option<u64>> {
        let held = *state;
        let (next, expected) = match *op {
            // The holder registering again is answered `Registered`
            // (ABI.md: "The holder registering again gets ok").
            NameOp::Register { pid } => match held {
                None => (Some(pid), NameRet::Registered),
                Some(holder) if holder == pid => (held, NameRet::Registered),
                Some(holder) => (held, NameRet::AlreadyRegistered { holder }),
            },
            NameOp::Unregister { pid } if held == Some(pid) => (None, NameRet::Unregistered),
            NameOp::Unregister { .. } => (held, NameRet::NotHolder),
            NameOp::Whereis => (held, NameRet::Holder(held)),
            NameOp::Release { pid } => (held.filter(|&h| h != pid), NameRet::Released),
        };
        ret.is_none_or(|r| *r == expected).then_some(next)
    }
}

/// Checks a name table's history, each name apart, against [`NameModel`].
pub fn check_name_table<K: Ord + fmt::Debug>(
    history: &[(K, Entry<NameOp, NameRet>)],
) -> Result<(), Violation> {
    check_linearizable_per_key::<NameModel, K>(history)
}

/// An operation on one key of a table, as a register: every write puts a
/// value no other write puts, so a compare-and-set on the value read is a
/// write conditioned on the version read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RegisterOp {
    /// Put `value`, unconditionally.
    Write(u64),
    /// Read the key (linearizably).
    Read,
    /// Put `to` if the key holds `from` (`None`: absent).
    Cas {
        /// The value read before.
        from: Option<u64>,
        /// The value to put.
        to: u64,
    },
}

/// What a [`RegisterOp`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RegisterRet {
    /// A write, or a compare-and-set that applied.
    Done,
    /// A compare-and-set whose condition failed (nothing changed).
    Refused,
    /// A read: the value, if any.
    Value(Option<u64>),
}

/// One key of a table, as a register.
#[derive(Clone, Copy, Debug, Default)]
pub struct RegisterModel;

impl Model for RegisterModel {
    type State = Option<u64>;
    type Op = RegisterOp;
    type Ret = RegisterRet;

    fn init() -> Option<u64> {
        None
    }

    fn step(
        state: &Option<u64>,
        op: &RegisterOp,
        ret: Option<&RegisterRet>,
    ) -> Option<Option<u64>> {
        let (next, expected) = match *op {
            RegisterOp::Write(v) => (Some(v), RegisterRet::Done),
            RegisterOp::Read => (*state, RegisterRet::Value(*state)),
            RegisterOp::Cas { from, to } if *state == from => (Some(to), RegisterRet::Done),
            RegisterOp::Cas { .. } => (*state, RegisterRet::Refused),
        };
        ret.is_none_or(|r| *r == expected).then_some(next)
    }
}

/// Checks a table's history, each key apart, against [`RegisterModel`].
pub fn check_registers<K: Ord + fmt::Debug>(
    history: &[(K, Entry<RegisterOp, RegisterRet>)],
) -> Result<(), Violation> {
    check_linearizable_per_key::<RegisterModel, K>(history)
}

// ---------------------------------------------------------------------------
// Locks and elections
// ---------------------------------------------------------------------------

/// How a lock was held.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LockMode {
    /// Alone.
    Exclusive,
    /// Alongside other shared holders.
    Shared,
}

/// One grant of a lock, from when its holder knew it held it to when it
/// stopped using it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Hold {
    /// Who held it.
    pub holder: u64,
    /// How.
    pub mode: LockMode,
    /// The grant's fencing token.
    pub token: u64,
    /// When the acquire was invoked, if known (the grant was made after
    /// it); token order uses it, or else `acquired_at`.
    pub requested_at: Option<Nanos>,
    /// When the holder was told it had the lock (the acquire's completion).
    pub acquired_at: Nanos,
    /// When it stopped using it: the invoke of its release, when it was
    /// told it lost the lock, or when it crashed; `None`: to the end.
    pub released_at: Option<Nanos>,
    /// From when its uses were refused by the token check (a newer grant
    /// fenced it); other holds may overlap it from then on.
    pub fenced_after: Option<Nanos>,
}

impl Hold {
    /// An exclusive hold over `[from, until)`.
    pub fn exclusive(holder: u64, token: u64, from: Nanos, until: Option<Nanos>) -> Self {
        Hold::new(LockMode::Exclusive, holder, token, from, until)
    }

    /// A shared hold over `[from, until)`.
    pub fn shared(holder: u64, token: u64, from: Nanos, until: Option<Nanos>) -> Self {
        Hold::new(LockMode::Shared, holder, token, from, until)
    }

    fn new(mode: LockMode, holder: u64, token: u64, from: Nanos, until: Option<Nanos>) -> Self {
        let (acquired_at, released_at) = (from, until);
        let (requested_at, fenced_after) = (None, None);
        Hold {
            holder,
            mode,
            token,
            requested_at,
            acquired_at,
            released_at,
            fenced_after,
        }
    }

    /// Marks its uses as refused by the token check from `at` on.
    pub fn fenced_from(mut self, at: Nanos) -> Self {
        self.fenced_after = Some(at);
        self
    }

    /// Records when the acquire was invoked.
    pub fn requested(mut self, at: Nanos) -> Self {
        self.requested_at = Some(at);
        self
    }
}

impl fmt::Display for Hold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (who, mode, token, from) = (self.holder, self.mode, self.token, self.acquired_at);
        let to = end(self.released_at);
        write!(
            f,
            "holder {who} ({mode:?}, token {token}) held from {from} to {to}"
        )?;
        match self.fenced_after {
            Some(t) => write!(f, ", fenced from {t}"),
            None => Ok(()),
        }
    }
}

const BACKWARDS: &str = "record ends before it starts";

fn end(t: Option<Nanos>) -> String {
    t.map_or_else(|| "the end".to_owned(), |t| t.to_string())
}

/// The earlier of two ends (`None`: never).
fn min_end(a: Option<Nanos>, b: Option<Nanos>) -> Option<Nanos> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The overlap of `[a, a_end)` and `[b, b_end)`, as a phrase, if any.
fn overlap(a: Nanos, a_end: Option<Nanos>, b: Nanos, b_end: Option<Nanos>) -> Option<String> {
    let (from, until) = (a.max(b), min_end(a_end, b_end));
    until
        .is_none_or(|u| from < u)
        .then(|| format!("from {from} to {}", end(until)))
}

/// Checks one lock's holds: no two grants share a token; a grant made after
/// another in real time (its `requested_at`, or else `acquired_at`, after
/// the other's `acquired_at`) has a higher token; no two holds overlap
/// unless both are shared, where a fenced hold only counts until fenced.
pub fn check_lock(holds: &[Hold]) -> Result<(), Violation> {
    let bad = |h: &&Hold| {
        h.released_at.is_some_and(|r| r < h.acquired_at)
            || h.requested_at.is_some_and(|r| r > h.acquired_at)
    };
    if let Some(h) = holds.iter().find(bad) {
        return broken(Rule::InvalidHistory, BACKWARDS, [h.to_string()]);
    }
    let mut order: Vec<&Hold> = holds.iter().collect();
    order.sort_by_key(|h| (h.acquired_at, h.token));
    let mut by_token = HashMap::new();
    for h in &order {
        if let Some(first) = by_token.insert(h.token, h) {
            let why = format!("two grants share token {}", h.token);
            return broken(
                Rule::DuplicateToken,
                why,
                [first.to_string(), h.to_string()],
            );
        }
    }
    for (i, a) in order.iter().enumerate() {
        for b in &order[i + 1..] {
            if a.token > b.token && a.acquired_at < b.requested_at.unwrap_or(b.acquired_at) {
                let (a, b) = (format!("first: {a}"), format!("then:  {b}"));
                return broken(Rule::TokenOrder, "a later grant got a lower token", [a, b]);
            }
        }
    }
    order.sort_by_key(|h| h.token);
    for (i, old) in order.iter().enumerate() {
        for new in &order[i + 1..] {
            if old.mode == LockMode::Shared && new.mode == LockMode::Shared {
                continue;
            }
            let use_end = |h: &Hold| min_end(h.released_at, h.fenced_after);
            if let Some(when) =
                overlap(old.acquired_at, use_end(old), new.acquired_at, use_end(new))
            {
                let why = format!("lock held twice {when}");
                let (old, new) = (format!("older: {old}"), format!("newer: {new}"));
                return broken(Rule::LockOverlap, why, [old, new]);
            }
        }
    }
    Ok(())
}

/// A node's view of who leads: from `elected(term)` (the observer is the
/// leader) or `leader_changed(leader, term)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Observation {
    /// The node or process that saw it.
    pub observer: u64,
    /// The term.
    pub term: u64,
    /// The leader of that term, as seen.
    pub leader: u64,
    /// When it was seen.
    pub at: Nanos,
}

impl Observation {
    /// `leader` was told `elected(term)`.
    pub fn elected(leader: u64, term: u64, at: Nanos) -> Self {
        Self::leader_changed(leader, leader, term, at)
    }

    /// `observer` was told `leader_changed(leader, term)`.
    pub fn leader_changed(observer: u64, leader: u64, term: u64, at: Nanos) -> Self {
        Observation {
            observer,
            term,
            leader,
            at,
        }
    }
}

impl fmt::Display for Observation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (o, l, t, at) = (self.observer, self.leader, self.term, self.at);
        write!(f, "{o} saw leader {l} in term {t} at {at}")
    }
}

/// Checks observations: at most one leader per term, and each observer's
/// terms (in `at` order, ties in input order) never go down.
pub fn check_elections(observations: &[Observation]) -> Result<(), Violation> {
    let mut by_term = BTreeMap::<u64, &Observation>::new();
    for o in observations {
        let first = *by_term.entry(o.term).or_insert(o);
        if first.leader != o.leader {
            let why = format!("two leaders in term {}", o.term);
            return broken(Rule::TwoLeaders, why, [first.to_string(), o.to_string()]);
        }
    }
    let mut by_observer = BTreeMap::<u64, Vec<&Observation>>::new();
    for o in observations {
        by_observer.entry(o.observer).or_default().push(o);
    }
    for (observer, mut seen) in by_observer {
        seen.sort_by_key(|o| o.at);
        for pair in seen.windows(2) {
            if pair[1].term < pair[0].term {
                let why = format!("observer {observer} saw the term go back");
                let (a, b) = (format!("first: {}", pair[0]), format!("then:  {}", pair[1]));
                return broken(Rule::TermWentBack, why, [a, b]);
            }
        }
    }
    Ok(())
}

/// A leader's reign: from when it learnt it leads until it stepped down or
/// fenced itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Reign {
    /// The leader.
    pub leader: u64,
    /// Its term.
    pub term: u64,
    /// When it learnt it leads.
    pub from: Nanos,
    /// When it stepped down or fenced itself; `None`: to the end.
    pub until: Option<Nanos>,
}

impl fmt::Display for Reign {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (l, t, from, to) = (self.leader, self.term, self.from, end(self.until));
        write!(f, "leader {l} of term {t} from {from} to {to}")
    }
}

/// Checks reigns: one leader per term, and no two reigns of different terms
/// overlap in real time.
pub fn check_reigns(reigns: &[Reign]) -> Result<(), Violation> {
    if let Some(r) = reigns.iter().find(|r| r.until.is_some_and(|u| u < r.from)) {
        return broken(Rule::InvalidHistory, BACKWARDS, [r.to_string()]);
    }
    let mut order: Vec<&Reign> = reigns.iter().collect();
    order.sort_by_key(|r| (r.term, r.from));
    for (i, old) in order.iter().enumerate() {
        for new in &order[i + 1..] {
            let (a, b) = (old.to_string(), new.to_string());
            if old.term == new.term && old.leader != new.leader {
                let why = format!("two leaders in term {}", old.term);
                return broken(Rule::TwoLeaders, why, [a, b]);
            }
            let when = overlap(old.from, old.until, new.from, new.until);
            if let Some(when) = when.filter(|_| old.term != new.term) {
                let why = format!("two leaders reigned {when}");
                return broken(Rule::ReignOverlap, why, [a, b]);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use NameRet::*;

    type E = Entry<NameOp, NameRet>;

    fn reg(pid: u64, t0: Nanos, t1: Nanos, ret: NameRet) -> E {
        Entry::ok(pid, NameOp::Register { pid }, t0, t1, ret)
    }
    fn unreg(pid: u64, t0: Nanos, t1: Nanos, ret: NameRet) -> E {
        Entry::ok(pid, NameOp::Unregister { pid }, t0, t1, ret)
    }
    fn whereis(t0: Nanos, t1: Nanos, holder: Option<u64>) -> E {
        Entry::ok(0, NameOp::Whereis, t0, t1, Holder(holder))
    }
    fn held(holder: u64) -> NameRet {
        AlreadyRegistered { holder }
    }

    /// Checks `h`, printing any violation (shown by a failing test).
    fn lin(h: &[E]) -> Result<(), Rule> {
        check_linearizable::<NameModel>(h).map_err(|v| {
            println!("{v}");
            v.rule
        })
    }

    #[test]
    fn registers_catch_a_lost_write_and_a_double_compare_and_set() {
        use RegisterOp::{Cas, Read, Write};
        type R = Entry<RegisterOp, RegisterRet>;
        let ok = |op, t0, t1, ret| -> R { Entry::ok(1, op, t0, t1, ret) };
        let value = |v| RegisterRet::Value(v);
        let fine = [
            ok(Write(1), 0, 1, RegisterRet::Done),
            ok(
                Cas {
                    from: Some(1),
                    to: 2,
                },
                2,
                5,
                RegisterRet::Done,
            ),
            ok(
                Cas {
                    from: Some(1),
                    to: 3,
                },
                3,
                6,
                RegisterRet::Refused,
            ),
            ok(Read, 7, 8, value(Some(2))),
        ];
        let check =
            |h: &[R]| check_registers(&h.iter().map(|e| ("k", e.clone())).collect::<Vec<_>>());
        assert!(check(&fine).is_ok());
        // Both compare-and-sets from the same value applied.
        let mut twice = fine.clone();
        twice[2] = ok(
            Cas {
                from: Some(1),
                to: 3,
            },
            3,
            6,
            RegisterRet::Done,
        );
        assert_eq!(check(&twice).unwrap_err().rule, Rule::NotLinearizable);
        // A write acknowledged and then not read.
        let lost = [
            ok(Write(1), 0, 1, RegisterRet::Done),
            ok(Write(2), 2, 3, RegisterRet::Done),
            ok(Read, 4, 5, value(Some(1))),
        ];
        assert_eq!(check(&lost).unwrap_err().rule, Rule::NotLinearizable);
        // An unknown write may show up later, or never.
        let maybe: [R; 2] = [
            Entry::unknown(1, Write(5), 0),
            ok(Read, 4, 5, value(Some(5))),
        ];
        assert!(check(&maybe).is_ok());
    }

    #[test]
    fn list_append_catches_a_lost_append_a_partial_one_and_a_cycle() {
        let txn = |reads: Vec<(u64, Vec<u64>)>, appends: Vec<(u64, u64)>| ListTxn {
            process: 1,
            reads,
            appends,
            acknowledged: true,
        };
        let finals = |lists: &[(u64, &[u64])]| -> BTreeMap<u64, Vec<u64>> {
            lists.iter().map(|(k, l)| (*k, l.to_vec())).collect()
        };
        let fine = [
            txn(vec![(1, vec![])], vec![(1, 10)]),
            txn(vec![(1, vec![10]), (2, vec![])], vec![(1, 11), (2, 11)]),
        ];
        assert_eq!(
            check_list_append(&fine, &finals(&[(1, &[10, 11]), (2, &[11])])),
            Ok(())
        );
        let rule = |t: &[ListTxn], f| check_list_append(t, &f).unwrap_err().rule;
        assert_eq!(rule(&fine, finals(&[(1, &[10, 11])])), Rule::NotAtomic);
        assert_eq!(rule(&fine, finals(&[(1, &[10])])), Rule::LostWrite);
        assert_eq!(
            rule(&fine, finals(&[(1, &[11, 10]), (2, &[11])])),
            Rule::BadRead
        );
        // Write skew: each read the other's key empty and appended to its
        // own; both applied: no serial order.
        let skew = [
            txn(vec![(1, vec![]), (2, vec![])], vec![(1, 20)]),
            txn(vec![(1, vec![]), (2, vec![])], vec![(2, 21)]),
        ];
        assert_eq!(
            rule(&skew, finals(&[(1, &[20]), (2, &[21])])),
            Rule::NotSerializable
        );
    }

    #[test]
    fn sequential_register_whereis() {
        let h = [
            whereis(0, 1, None),
            reg(1, 2, 3, Registered),
            whereis(4, 5, Some(1)),
            reg(2, 6, 7, held(1)),
            unreg(2, 8, 9, NotHolder),
            unreg(1, 10, 11, Unregistered),
            whereis(12, 13, None),
        ];
        assert_eq!(lin(&h), Ok(()));
    }

    #[test]
    fn the_holder_registering_again_is_registered_and_others_are_refused() {
        let h = [reg(1, 0, 1, Registered), reg(1, 2, 3, Registered)];
        assert_eq!(lin(&h), Ok(()));
        let h = [reg(1, 0, 1, Registered), reg(1, 2, 3, held(1))];
        assert_eq!(lin(&h), Err(Rule::NotLinearizable));
        let h = [reg(1, 0, 1, Registered), reg(2, 2, 3, Registered)];
        assert_eq!(lin(&h), Err(Rule::NotLinearizable));
    }

    #[test]
    fn concurrent_registrations_one_wins() {
        let h = [
            reg(1, 0, 10, held(2)),
            reg(2, 1, 9, Registered),
            reg(3, 2, 8, held(2)),
        ];
        assert_eq!(lin(&[&h[..], &[whereis(11, 12, Some(2))]].concat()), Ok(()));
        assert_eq!(
            lin(&[&h[..], &[whereis(11, 12, Some(1))]].concat()),
            Err(Rule::NotLinearizable)
        );
    }

    #[test]
    fn two_winners_without_release_is_a_violation() {
        let h = [reg(1, 0, 10, Registered), reg(2, 1, 9, Registered)];
        let v = check_linearizable::<NameModel>(&h).unwrap_err();
        assert_eq!(v.rule, Rule::NotLinearizable, "{v}");
        assert!(v.details[0].starts_with("cannot linearize op #"), "{v}");
        // A release of the first while both were running makes it fine.
        let release = Entry::ok(0, NameOp::Release { pid: 1 }, 2, 8, Released);
        assert_eq!(lin(&[&h[..], &[release]].concat()), Ok(()));
    }

    #[test]
    fn stale_whereis_is_a_violation() {
        let h = [
            reg(1, 0, 1, Registered),
            unreg(1, 2, 3, Unregistered),
            whereis(4, 5, Some(1)),
        ];
        let v = check_linearizable::<NameModel>(&h).unwrap_err();
        assert_eq!(v.rule, Rule::NotLinearizable);
        assert!(v.details[0].contains("op #2 "), "{v}");
        assert!(v.to_string().contains("in state None"), "{v}");
    }

    #[test]
    fn unknown_register_may_take_effect_late_or_never() {
        let unknown = Entry::unknown(1, NameOp::Register { pid: 1 }, 0);
        let seen_late = [
            unknown.clone(),
            whereis(5, 6, None),
            whereis(100, 101, Some(1)),
            reg(3, 102, 103, held(1)),
        ];
        assert_eq!(lin(&seen_late), Ok(()));
        let never = [
            unknown,
            Entry::fail(4, NameOp::Register { pid: 4 }, 0, 3),
            whereis(5, 6, None),
            reg(3, 7, 8, Registered),
            whereis(100, 101, Some(3)),
        ];
        assert_eq!(lin(&never), Ok(()));
    }

    #[test]
    fn failed_ops_and_bad_times() {
        let h = [
            Entry::fail(1, NameOp::Register { pid: 1 }, 0, 3),
            whereis(5, 6, Some(1)),
        ];
        assert_eq!(lin(&h), Err(Rule::NotLinearizable));
        assert_eq!(lin(&[whereis(5, 4, None)]), Err(Rule::InvalidHistory));
    }

    #[test]
    fn many_unknowns_still_decide() {
        let mut h: Vec<E> = (0..30)
            .map(|i| Entry::unknown(i, NameOp::Register { pid: i }, i))
            .collect();
        h.extend([
            whereis(1000, 1001, Some(17)),
            unreg(17, 1002, 1003, Unregistered),
        ]);
        h.push(whereis(1004, 1005, Some(3)));
        assert_eq!(lin(&h), Ok(()));
        h.push(whereis(1006, 1007, Some(100)));
        assert_eq!(lin(&h), Err(Rule::NotLinearizable));
    }

    /// xorshift64*: a tiny deterministic PRNG.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
        }
    }

    /// `n` ops on two names, run one at a time on a real table, each at its
    /// own point in time, then given random invoke and complete times
    /// around it; a few are recorded as failed or unknown.
    fn random_history(seed: u64, n: u64) -> Vec<(u8, E)> {
        let mut rng = Rng(seed);
        let mut table = HashMap::<u8, Option<u64>>::new();
        let mut h = Vec::new();
        for point in (0..n).map(|i| 100 * i) {
            let (key, pid) = (rng.below(2) as u8, 1 + rng.below(4));
            let op = [
                NameOp::Register { pid },
                NameOp::Unregister { pid },
                NameOp::Whereis,
            ]
            .get(rng.below(4) as usize)
            .copied()
            .unwrap_or(NameOp::Release { pid });
            let (invoke, complete) = (point.saturating_sub(rng.below(250)), point + rng.below(250));
            let state = table.entry(key).or_default();
            let (entry, applies) = match rng.below(20) {
                0 => (Entry::unknown(pid, op, invoke), rng.below(2) == 0),
                1 => (Entry::fail(pid, op, invoke, complete), false),
                _ => {
                    let rets = [
                        Registered,
                        Unregistered,
                        NotHolder,
                        Released,
                        Holder(*state),
                    ];
                    let ret = rets.into_iter().chain(state.map(held));
                    let mut ret = ret.filter(|r| NameModel::step(state, &op, Some(r)).is_some());
                    (
                        Entry::ok(pid, op, invoke, complete, ret.next().unwrap()),
                        true,
                    )
                }
            };
            if applies {
                *state = NameModel::step(state, &op, None).unwrap();
            }
            h.push((key, entry));
        }
        h
    }

    #[test]
    fn random_histories_pass_and_corrupted_ones_fail() {
        for seed in 1..=5 {
            let mut h = random_history(0x9e37_79b9_7f4a_7c15 ^ seed, 600);
            let started = std::time::Instant::now();
            assert_eq!(check_name_table(&h), Ok(()), "seed {seed}");
            assert!(
                started.elapsed().as_secs_f64() < 1.0,
                "slow: {:?}",
                started.elapsed()
            );

            let is_read =
                |(_, e): &(u8, E)| e.op == NameOp::Whereis && matches!(e.outcome, Outcome::Ok(_));
            let i = 300 + h[300..].iter().position(is_read).unwrap();
            h[i].1.outcome = Outcome::Ok(Holder(Some(99)));
            let v = check_name_table(&h).unwrap_err();
            assert_eq!(v.rule, Rule::NotLinearizable, "{v}");
            assert!(
                v.details[0].contains(&format!("op #{i} ")),
                "seed {seed}: {v}"
            );
        }
    }

    fn lock(holds: &[Hold]) -> Result<(), Rule> {
        check_lock(holds).map_err(|v| {
            println!("{v}");
            v.rule
        })
    }

    #[test]
    fn lock_exclusive_overlap_is_a_violation() {
        let holds = [
            Hold::exclusive(1, 1, 0, Some(10)),
            Hold::exclusive(2, 2, 5, Some(20)),
        ];
        let v = check_lock(&holds).unwrap_err();
        assert_eq!(v.rule, Rule::LockOverlap);
        assert_eq!(v.summary, "lock held twice from 5 to 10");
        assert_eq!(
            v.details,
            [
                format!("older: {}", holds[0]),
                format!("newer: {}", holds[1])
            ]
        );
        // A holder that never released overlaps every later one.
        let holds = [
            Hold::exclusive(1, 1, 0, None),
            Hold::exclusive(2, 2, 50, Some(60)),
        ];
        assert_eq!(lock(&holds), Err(Rule::LockOverlap));
    }

    #[test]
    fn lock_handover_and_shared_overlap_are_fine() {
        let holds = [
            Hold::exclusive(1, 1, 0, Some(10)),
            Hold::shared(2, 2, 10, Some(30)),
            Hold::shared(3, 3, 15, Some(25)),
            Hold::exclusive(1, 4, 30, None).requested(5),
        ];
        assert_eq!(lock(&holds), Ok(()));
        let holds = [
            Hold::shared(2, 2, 10, Some(30)),
            Hold::exclusive(3, 3, 15, Some(25)),
        ];
        assert_eq!(lock(&holds), Err(Rule::LockOverlap));
    }

    #[test]
    fn lock_fenced_older_may_overlap() {
        // Holder 1 paused past its lease; its uses from 40 on were refused.
        let old = Hold::exclusive(1, 1, 0, Some(100));
        let holds = [old.fenced_from(40), Hold::exclusive(2, 2, 40, None)];
        assert_eq!(lock(&holds), Ok(()));
        let holds = [old.fenced_from(45), holds[1]];
        assert_eq!(
            check_lock(&holds).unwrap_err().summary,
            "lock held twice from 40 to 45"
        );
    }

    #[test]
    fn lock_tokens_must_increase() {
        let holds = [
            Hold::exclusive(1, 5, 0, Some(10)),
            Hold::exclusive(2, 3, 20, Some(30)),
        ];
        assert_eq!(lock(&holds), Err(Rule::TokenOrder));
        let holds = [
            Hold::shared(1, 5, 0, Some(10)),
            Hold::shared(2, 5, 20, Some(30)),
        ];
        assert_eq!(lock(&holds), Err(Rule::DuplicateToken));
        // Concurrent acquires may complete out of token order.
        let holds = [
            Hold::shared(1, 6, 10, None).requested(0),
            Hold::shared(2, 5, 12, None).requested(1),
        ];
        assert_eq!(lock(&holds), Ok(()));
        assert_eq!(
            lock(&[Hold::shared(1, 1, 10, Some(9))]),
            Err(Rule::InvalidHistory)
        );
    }

    #[test]
    fn election_two_leaders_in_a_term() {
        let obs = [
            Observation::elected(1, 3, 10),
            Observation::leader_changed(2, 3, 3, 12),
        ];
        let v = check_elections(&obs).unwrap_err();
        assert_eq!(
            (v.rule, v.summary.as_str()),
            (Rule::TwoLeaders, "two leaders in term 3")
        );
        let r1 = Reign {
            leader: 1,
            term: 3,
            from: 0,
            until: Some(5),
        };
        let r2 = Reign {
            leader: 2,
            term: 3,
            from: 10,
            until: None,
        };
        assert_eq!(check_reigns(&[r1, r2]).unwrap_err().rule, Rule::TwoLeaders);
    }

    #[test]
    fn election_term_goes_back() {
        let obs = [
            Observation::leader_changed(5, 2, 4, 20),
            Observation::leader_changed(5, 1, 3, 25),
        ];
        let v = check_elections(&obs).unwrap_err();
        assert_eq!(
            (v.rule, v.summary.as_str()),
            (Rule::TermWentBack, "observer 5 saw the term go back")
        );
    }

    #[test]
    fn election_failover_is_fine() {
        let obs = [
            Observation::elected(1, 1, 10),
            Observation::leader_changed(2, 1, 1, 11),
            Observation::leader_changed(3, 1, 1, 12),
            // Node 1 is cut off; 2 wins term 3 after a split vote in term 2.
            Observation::elected(2, 3, 100),
            Observation::leader_changed(3, 2, 3, 101),
            Observation::leader_changed(1, 2, 3, 150),
        ];
        assert_eq!(check_elections(&obs), Ok(()));
        let old = Reign {
            leader: 1,
            term: 1,
            from: 10,
            until: Some(60),
        };
        let new = Reign {
            leader: 2,
            term: 3,
            from: 100,
            until: None,
        };
        assert_eq!(check_reigns(&[old, new]), Ok(()));
        // Had node 1 not stepped down until 120, the reigns would overlap.
        let late = Reign {
            until: Some(120),
            ..old
        };
        let v = check_reigns(&[old, late, new]).unwrap_err();
        assert_eq!(
            (v.rule, v.summary.as_str()),
            (Rule::ReignOverlap, "two leaders reigned from 100 to 120")
        );
    }
}

// ---------------------------------------------------------------------------
// List-append transactions (serializability)
// ---------------------------------------------------------------------------

/// A transaction of a list-append history: the lists it read (each key it
/// conditions on, as it was) and the one value it appended to each of some
/// keys. Appended values are unique in the history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListTxn {
    /// The client, for reports.
    pub process: u64,
    /// (key, the list read).
    pub reads: Vec<(u64, Vec<u64>)>,
    /// (key, the value appended).
    pub appends: Vec<(u64, u64)>,
    /// Acknowledged (`true`) or of unknown outcome (`false`: applied if
    /// its values are in the final lists). Refused transactions are left
    /// out of the history.
    pub acknowledged: bool,
}

impl fmt::Display for ListTxn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "process {} read {:?} appended {:?} ({})",
            self.process,
            self.reads,
            self.appends,
            if self.acknowledged { "ok" } else { "unknown" }
        )
    }
}

/// Checks list-append transactions against the final lists of every key
/// (read once everything settled): every acknowledged append is there
/// once, a transaction's appends are all there or none, each read is a
/// prefix of its key's final list, and the dependencies between applied
/// transactions (ww: list order; wr: the writer of the last value read;
/// rw: a reader before the writer of the first value it did not see)
/// have no cycle.
pub fn check_list_append(
    txns: &[ListTxn],
    finals: &BTreeMap<u64, Vec<u64>>,
) -> Result<(), Violation> {
    // Which transaction appended each value, and where it sits.
    let mut writer = HashMap::<u64, usize>::new();
    for (i, t) in txns.iter().enumerate() {
        for &(_, v) in &t.appends {
            if writer.insert(v, i).is_some_and(|other| other != i) {
                let why = format!("value {v} appended by two transactions");
                return broken(Rule::InvalidHistory, why, [t.to_string()]);
            }
        }
    }
    let mut position = HashMap::<(u64, u64), usize>::new();
    for (&key, list) in finals {
        for (at, &v) in list.iter().enumerate() {
            if position.insert((key, v), at).is_some() {
                return broken(
                    Rule::LostWrite,
                    format!("value {v} twice in key {key}"),
                    [format!("{list:?}")],
                );
            }
            if !writer.contains_key(&v) {
                return broken(
                    Rule::LostWrite,
                    format!("key {key} holds {v}, which nobody appended"),
                    [format!("{list:?}")],
                );
            }
        }
    }
    let mut applied = vec![false; txns.len()];
    for (i, t) in txns.iter().enumerate() {
        let present: Vec<bool> = t
            .appends
            .iter()
            .map(|&(k, v)| position.contains_key(&(k, v)))
            .collect();
        if present.iter().any(|p| *p) && !present.iter().all(|p| *p) {
            return broken(
                Rule::NotAtomic,
                "a transaction applied in part",
                [t.to_string()],
            );
        }
        if t.acknowledged && !present.iter().all(|p| *p) {
            return broken(
                Rule::LostWrite,
                "an acknowledged append is missing",
                [t.to_string()],
            );
        }
        applied[i] = present.first().copied().unwrap_or(t.acknowledged);
    }
    let empty = Vec::new();
    let mut edges: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); txns.len()];
    for list in finals.values() {
        for pair in list.windows(2) {
            let (from, to) = (writer[&pair[0]], writer[&pair[1]]);
            if from != to {
                edges[from].insert(to);
            }
        }
    }
    for (i, t) in txns.iter().enumerate().filter(|(i, _)| applied[*i]) {
        for (key, read) in &t.reads {
            let list = finals.get(key).unwrap_or(&empty);
            if !list.starts_with(read) {
                let why = format!("a read of key {key} is not a prefix of its final list");
                return broken(
                    Rule::BadRead,
                    why,
                    [t.to_string(), format!("final: {list:?}")],
                );
            }
            if let Some(last) = read.last() {
                let w = writer[last];
                if w != i {
                    edges[w].insert(i);
                }
            }
            if let Some(next) = list.get(read.len()) {
                let w = writer[next];
                if w != i {
                    edges[i].insert(w);
                }
            }
        }
    }
    // A cycle among applied transactions: depth-first, colouring.
    let mut state = vec![0u8; txns.len()];
    let mut path = Vec::new();
    fn visit(
        at: usize,
        edges: &[BTreeSet<usize>],
        state: &mut [u8],
        path: &mut Vec<usize>,
    ) -> Option<Vec<usize>> {
        state[at] = 1;
        path.push(at);
        for &next in &edges[at] {
            if state[next] == 1 {
                let from = path.iter().position(|&p| p == next).expect("on the path");
                return Some(path[from..].to_vec());
            }
            if state[next] == 0
                && let Some(cycle) = visit(next, edges, state, path)
            {
                return Some(cycle);
            }
        }
        path.pop();
        state[at] = 2;
        None
    }
    for start in 0..txns.len() {
        if applied[start]
            && state[start] == 0
            && let Some(cycle) = visit(start, &edges, &mut state, &mut path)
        {
            let details: Vec<String> = cycle.iter().map(|&i| txns[i].to_string()).collect();
            return broken(Rule::NotSerializable, "a cycle of dependencies", details);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Conflict-free (last-writer-wins) tables
// ---------------------------------------------------------------------------

/// One acknowledged write of a last-writer-wins key: its (unique) value,
/// the replica that took it, and that replica's table index after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LwwWrite {
    /// The key.
    pub key: Vec<u8>,
    /// The value, written once in the whole history.
    pub value: Vec<u8>,
    /// The replica that took it.
    pub replica: usize,
    /// That replica's index after it.
    pub index: u64,
}

/// What a replica told its subscriber about a key, at one of its indexes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LwwTold {
    /// The key took this value.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// A merge kept another concurrent write and discarded this value
    /// (`None`: a delete).
    Conflict {
        /// The key.
        key: Vec<u8>,
        /// The discarded value.
        lost: Option<Vec<u8>>,
    },
}

/// Check a last-writer-wins table's history: every final value was
/// written by an acknowledged write, and every acknowledged write is
/// accounted for: it is the key's final value; or a replica told it lost
/// a conflict; or a later write overwrote it causally (a write taken by a
/// replica after that replica had told the earlier value). A write that
/// vanished without any of these was lost silently.
///
/// `told[r]` is replica `r`'s (index, what) in index order; `finals` the
/// table every replica converged to.
pub fn check_lww(
    writes: &[LwwWrite],
    told: &[Vec<(u64, LwwTold)>],
    finals: &BTreeMap<Vec<u8>, Vec<u8>>,
) -> Result<(), Violation> {
    let mut by_value = HashMap::<(&[u8], &[u8]), &LwwWrite>::new();
    for w in writes {
        if by_value.insert((&w.key, &w.value), w).is_some() {
            let why = format!(
                "value {:?} written twice",
                String::from_utf8_lossy(&w.value)
            );
            return broken(Rule::InvalidHistory, why, [format!("{w:?}")]);
        }
    }
    for (key, value) in finals {
        if !by_value.contains_key(&(key.as_slice(), value.as_slice())) {
            let why = format!(
                "key {:?} holds {:?}, which no acknowledged write wrote",
                String::from_utf8_lossy(key),
                String::from_utf8_lossy(value)
            );
            return broken(Rule::Phantom, why, Vec::<String>::new());
        }
    }
    // Per replica and key: the first index at which each value was told.
    let mut first_told = HashMap::<(usize, &[u8], &[u8]), u64>::new();
    let mut lost = HashSet::<(&[u8], &[u8])>::new();
    for (r, events) in told.iter().enumerate() {
        for (index, what) in events {
            match what {
                LwwTold::Put { key, value } => {
                    first_told.entry((r, key, value)).or_insert(*index);
                }
                LwwTold::Conflict {
                    key,
                    lost: Some(value),
                } => {
                    lost.insert((key, value));
                }
                LwwTold::Conflict { lost: None, .. } => {}
            }
        }
    }
    for w in writes {
        if finals.get(&w.key) == Some(&w.value)
            || lost.contains(&(w.key.as_slice(), w.value.as_slice()))
        {
            continue;
        }
        let overwritten = writes.iter().any(|later| {
            later.key == w.key
                && later.value != w.value
                && first_told
                    .get(&(later.replica, w.key.as_slice(), w.value.as_slice()))
                    .is_some_and(|at| *at < later.index)
        });
        if !overwritten {
            let why = format!(
                "the write of {:?} to key {:?} is gone, with no conflict told and no later write that saw it",
                String::from_utf8_lossy(&w.value),
                String::from_utf8_lossy(&w.key)
            );
            return broken(
                Rule::LostWrite,
                why,
                [
                    format!("{w:?}"),
                    format!(
                        "final: {:?}",
                        finals
                            .get(&w.key)
                            .map(|v| String::from_utf8_lossy(v).into_owned())
                    ),
                ],
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod lww_tests {
    use super::*;

    fn w(key: &str, value: &str, replica: usize, index: u64) -> LwwWrite {
        LwwWrite {
            key: key.into(),
            value: value.into(),
            replica,
            index,
        }
    }

    fn put(key: &str, value: &str) -> LwwTold {
        LwwTold::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    #[test]
    fn a_causal_overwrite_and_a_told_conflict_account_for_a_write() {
        let writes = [w("k", "a", 0, 1), w("k", "b", 1, 3), w("k", "c", 2, 1)];
        let told = vec![
            vec![(1, put("k", "a"))],
            // Replica 1 had a (index 2) before it took b (index 3).
            vec![(2, put("k", "a")), (3, put("k", "b"))],
            vec![
                (1, put("k", "c")),
                (
                    2,
                    LwwTold::Conflict {
                        key: "k".into(),
                        lost: Some("c".into()),
                    },
                ),
            ],
        ];
        let finals = BTreeMap::from([(b"k".to_vec(), b"b".to_vec())]);
        assert_eq!(check_lww(&writes, &told, &finals), Ok(()));
    }

    #[test]
    fn a_write_gone_silently_is_lost_and_a_value_from_nowhere_is_a_phantom() {
        let writes = [w("k", "a", 0, 1), w("k", "b", 1, 1)];
        // b was taken before replica 1 heard of a: a concurrent write, and
        // nobody told a conflict.
        let told = vec![
            vec![(1, put("k", "a"))],
            vec![(1, put("k", "b")), (2, put("k", "a"))],
        ];
        let finals = BTreeMap::from([(b"k".to_vec(), b"b".to_vec())]);
        assert_eq!(
            check_lww(&writes, &told, &finals).unwrap_err().rule,
            Rule::LostWrite
        );
        let finals = BTreeMap::from([(b"k".to_vec(), b"z".to_vec())]);
        assert_eq!(
            check_lww(&writes, &told, &finals).unwrap_err().rule,
            Rule::Phantom
        );
    }
}

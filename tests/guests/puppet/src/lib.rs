//! `puppet`: a raw process that a controller scripts one command at a time,
//! so end-to-end tests can drive every host function from outside.
//!
//! On start it sends [`Event::Ready`] to the controller. Then, for every
//! message: a typed (`DATA`) message that decodes as a [`Cmd`] is executed
//! and answered with [`Event::Done`]; anything else is reported as
//! [`Event::Got`]. Every event goes to the controller as a typed message.

use std::time::Duration;

use molt_sdk::{Envelope, Error, Filter, Pid, Ref, System, codec};
use serde::{Deserialize, Serialize};

/// Init arguments.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PuppetArgs {
    /// Where events go.
    pub controller: Pid,
}

/// A command, executed when received.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cmd {
    /// `link(pid)`: `Ok` or `Status`.
    Link(Pid),
    /// `unlink(pid)`: `Ok` or `Status`.
    Unlink(Pid),
    /// `monitor(pid)`: `Ref`.
    Monitor(Pid),
    /// `demonitor(reference, flush)`: `Bool` (was it active).
    Demonitor {
        /// The monitor.
        reference: Ref,
        /// Also drop a queued DOWN.
        flush: bool,
    },
    /// `trap_exit(flag)`: `Bool` (the previous flag).
    TrapExit(bool),
    /// `exit(pid, reason)`: `Ok` or `Status`.
    Exit {
        /// Target.
        pid: Pid,
        /// Reason.
        reason: String,
    },
    /// `exit_self(reason)`: no answer; the puppet ends.
    ExitSelf(String),
    /// `spawn` with raw argument bytes: `Pid`, or `PidRef` when `monitor`,
    /// or `Status`.
    Spawn {
        /// Module name.
        module: String,
        /// Init argument bytes, passed as they are.
        args: Vec<u8>,
        /// Link to the new process.
        link: bool,
        /// Monitor the new process.
        monitor: bool,
    },
    /// `send`: `Ok` or `Status`.
    Send {
        /// Receiver.
        to: Pid,
        /// Tag (reserved tags give `Status(BAD_ARG)`).
        tag: u32,
        /// Payload bytes.
        payload: Vec<u8>,
    },
    /// `send_named`: `Ok` or `Status`.
    SendNamed {
        /// Registered name.
        name: String,
        /// Tag.
        tag: u32,
        /// Payload bytes.
        payload: Vec<u8>,
    },
    /// `register(name)`: `Ok` or `Status`.
    Register(String),
    /// `unregister(name)`: `Ok` or `Status`.
    Unregister(String),
    /// `whereis(name)`: `MaybePid`.
    Whereis(String),
    /// `is_alive(pid)`: `Bool`.
    IsAlive(Pid),
    /// `send_after`: `Ref` (the timer) or `Status`.
    SendAfter {
        /// Delay in milliseconds.
        delay_ms: u64,
        /// Receiver.
        to: Pid,
        /// Tag.
        tag: u32,
        /// Payload bytes.
        payload: Vec<u8>,
    },
    /// `cancel_timer(reference)`: `Remaining` (milliseconds left, `None`
    /// if there was no such timer).
    CancelTimer(Ref),
    /// A selective receive, executed now: `Received` (`None` on timeout).
    Receive {
        /// Tags to accept (any if empty).
        tags: Vec<u32>,
        /// Reference to require.
        reference: Option<Ref>,
        /// Timeout in milliseconds (`None`: wait for ever).
        timeout_ms: Option<u64>,
    },
    /// Send `count` messages with tag `tag` to `to`, payload `i: u32` for
    /// `i` in `0..count` (encoded with the SDK codec): `Ok`, or `Status` of
    /// the first failed send (the rest are not sent).
    SendSeq {
        /// Receiver.
        to: Pid,
        /// Tag.
        tag: u32,
        /// How many.
        count: u32,
    },
    /// Panic with this text; no answer.
    Panic(String),
    /// `node()`: `Text`.
    NodeName,
    /// `nodes()`: `Names`.
    Nodes,
    /// `ping(node)`: `Bool` (pong).
    Ping(String),
    /// `monitor_node(node, on)`: `Ok` or `Status`.
    MonitorNode(String, bool),
    /// `spawn_on` with raw argument bytes: `Pid`, or `PidRef` when
    /// `monitor`, or `Status`.
    SpawnOn {
        /// Target node name.
        node: String,
        /// Module name.
        module: String,
        /// Init argument bytes, passed as they are.
        args: Vec<u8>,
        /// Link to the new process.
        link: bool,
        /// Monitor the new process.
        monitor: bool,
    },
    /// `send_named_on`: `Ok` or `Status`.
    SendNamedOn {
        /// Target node name.
        node: String,
        /// Name registered there.
        name: String,
        /// Tag.
        tag: u32,
        /// Payload bytes.
        payload: Vec<u8>,
    },
    /// `true`: the puppet's loop takes only DATA-tagged messages (its
    /// commands), leaving every other message queued for `Receive`.
    /// `false` (the default): it reports everything it gets.
    OnlyCommands(bool),
    /// `pg::join(scope, group)`: `Ok` or `Status`.
    PgJoin {
        /// Scope.
        scope: String,
        /// Group.
        group: String,
    },
    /// `pg::leave(scope, group)`: `Ok` or `Status`.
    PgLeave {
        /// Scope.
        scope: String,
        /// Group.
        group: String,
    },
    /// `pg::members` (or `pg::local_members` if `local`): `Pids`.
    PgMembers {
        /// Scope.
        scope: String,
        /// Group.
        group: String,
        /// This node's members only.
        local: bool,
    },
    /// `pg::which_groups(scope)`: `Names`.
    PgWhichGroups(String),
    /// `global::register(name, self)`: `Ok`, `Pid(holder)` if taken, or a
    /// status.
    GlobalRegister(String),
    /// `global::unregister(name, self)`.
    GlobalUnregister(String),
    /// `global::whereis` (local replica) or, with `true`, linearizable.
    GlobalWhereis(String, bool),
    /// `table_call(request)` with an `out_cap`-byte reply buffer, then
    /// `table_reply` if the reply did not fit: `Bytes` (the encoded
    /// reply) or `Status`.
    Table {
        /// The request's bytes, passed as they are.
        request: Vec<u8>,
        /// The first reply buffer's size.
        out_cap: u32,
    },
    /// `table_reply` with an `out_cap`-byte buffer: `Bytes` or `Status`.
    TableReply(u32),
    /// `global::send_raw(name, tag, payload)`: `Ok` or `Status`.
    GlobalSend {
        /// The cluster name.
        name: String,
        /// Tag.
        tag: u32,
        /// Payload bytes.
        payload: Vec<u8>,
    },
    /// `global::lock`: `Tokens` or a status.
    Lock {
        /// Lock ids and whether shared.
        set: Vec<(String, bool)>,
        /// Milliseconds to wait.
        timeout_ms: u64,
    },
    /// `global::unlock`.
    Unlock(String),
    /// `election::stand`: `Leader` or a status.
    Elect(String),
    /// `election::resign`.
    Resign(String),
    /// `election::leader`: `Leader`, or `Ok` if none.
    Leader(String),
}

/// The result of a command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Success with nothing to return.
    Ok,
    /// The raw (negative) ABI status the host returned.
    Status(i32),
    /// A pid.
    Pid(Pid),
    /// A reference.
    Ref(Ref),
    /// A pid and a monitor reference.
    PidRef(Pid, Ref),
    /// A flag.
    Bool(bool),
    /// A pid, if any.
    MaybePid(Option<Pid>),
    /// Milliseconds left on a cancelled timer, if it existed.
    Remaining(Option<u64>),
    /// A received message `(tag, reference, payload)`, `None` on timeout.
    Received(Option<(u32, Option<Ref>, Vec<u8>)>),
    /// A text (a node name).
    Text(String),
    /// A list of names (nodes, groups).
    Names(Vec<String>),
    /// A list of pids (group members).
    Pids(Vec<Pid>),
    /// Fencing tokens.
    Tokens(Vec<u64>),
    /// An election's leader and term.
    Leader(Pid, u64),
    /// Bytes (an encoded table reply).
    Bytes(Vec<u8>),
}

/// A system message, mirrored with owned fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SystemEvent {
    /// A trapped exit signal.
    Exit {
        /// Sender.
        from: Pid,
        /// Reason.
        reason: String,
    },
    /// A monitor fired.
    Down {
        /// The monitor reference.
        reference: Ref,
        /// The monitored process.
        pid: Pid,
        /// Its exit reason.
        reason: String,
    },
    /// A monitored node went down (or was not connected).
    NodeDown {
        /// The node's name.
        node: String,
    },
    /// News from the coordination group.
    Coord(molt_sdk::election::Notice),
    /// A table event.
    Table(molt_sdk::table::Event),
}

/// What the puppet tells its controller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// The puppet started; this is its pid.
    Ready(Pid),
    /// A command finished.
    Done(Outcome),
    /// A message that is not a command.
    Got {
        /// Its tag.
        tag: u32,
        /// Its envelope reference.
        reference: Option<Ref>,
        /// Decoded, if it is an EXIT, DOWN or NODEDOWN.
        system: Option<SystemEvent>,
        /// Its payload.
        payload: Vec<u8>,
    },
}

fn unit(result: Result<(), Error>) -> Outcome {
    match result {
        Ok(()) => Outcome::Ok,
        Err(e) => Outcome::Status(e.code()),
    }
}

fn execute(cmd: Cmd) -> Outcome {
    match cmd {
        Cmd::Link(pid) => unit(molt_sdk::link(pid)),
        Cmd::Unlink(pid) => unit(molt_sdk::unlink(pid)),
        Cmd::Monitor(pid) => Outcome::Ref(molt_sdk::monitor(pid)),
        Cmd::Demonitor { reference, flush } => Outcome::Bool(molt_sdk::demonitor(reference, flush)),
        Cmd::TrapExit(flag) => Outcome::Bool(molt_sdk::trap_exit(flag)),
        Cmd::Exit { pid, reason } => unit(molt_sdk::exit(pid, &reason)),
        Cmd::ExitSelf(reason) => molt_sdk::exit_self(&reason),
        Cmd::Spawn {
            module,
            args,
            link,
            monitor,
        } => match molt_sdk::spawn_bytes(&module, &args, link, monitor) {
            Ok((pid, Some(reference))) => Outcome::PidRef(pid, reference),
            Ok((pid, None)) => Outcome::Pid(pid),
            Err(e) => Outcome::Status(e.code()),
        },
        Cmd::Send { to, tag, payload } => unit(molt_sdk::send_raw(to, tag, None, &payload)),
        Cmd::SendNamed { name, tag, payload } => {
            unit(molt_sdk::send_named_raw(&name, tag, None, &payload))
        }
        Cmd::Register(name) => unit(molt_sdk::register(&name)),
        Cmd::Unregister(name) => unit(molt_sdk::unregister(&name)),
        Cmd::Whereis(name) => Outcome::MaybePid(molt_sdk::whereis(&name)),
        Cmd::IsAlive(pid) => Outcome::Bool(molt_sdk::is_alive(pid)),
        Cmd::SendAfter {
            delay_ms,
            to,
            tag,
            payload,
        } => match molt_sdk::send_after_raw(Duration::from_millis(delay_ms), to, tag, &payload) {
            Ok(reference) => Outcome::Ref(reference),
            Err(e) => Outcome::Status(e.code()),
        },
        Cmd::CancelTimer(reference) => Outcome::Remaining(
            molt_sdk::cancel_timer(reference).map(|left| left.as_millis() as u64),
        ),
        Cmd::Receive {
            tags,
            reference,
            timeout_ms,
        } => {
            let mut filter = Filter::any().tags(&tags);
            if let Some(reference) = reference {
                filter = filter.reference(reference);
            }
            let got = molt_sdk::receive_matching(&filter, timeout_ms.map(Duration::from_millis));
            Outcome::Received(got.map(|e| (e.tag, e.reference, e.payload)))
        }
        Cmd::SendSeq { to, tag, count } => {
            for i in 0..count {
                if let Err(e) = molt_sdk::send_raw(to, tag, None, &codec::encode(&i)) {
                    return Outcome::Status(e.code());
                }
            }
            Outcome::Ok
        }
        Cmd::NodeName => Outcome::Text(molt_sdk::node()),
        Cmd::Nodes => Outcome::Names(molt_sdk::nodes()),
        Cmd::Ping(node) => Outcome::Bool(molt_sdk::ping(&node)),
        Cmd::MonitorNode(node, on) => unit(molt_sdk::monitor_node(&node, on)),
        Cmd::SpawnOn {
            node,
            module,
            args,
            link,
            monitor,
        } => match molt_sdk::spawn_on_bytes(&node, &module, &args, link, monitor) {
            Ok((pid, Some(reference))) => Outcome::PidRef(pid, reference),
            Ok((pid, None)) => Outcome::Pid(pid),
            Err(e) => Outcome::Status(e.code()),
        },
        Cmd::SendNamedOn {
            node,
            name,
            tag,
            payload,
        } => unit(molt_sdk::send_named_on_raw(
            &node, &name, tag, None, &payload,
        )),
        Cmd::PgJoin { scope, group } => unit(molt_sdk::pg::join(&scope, &group)),
        Cmd::GlobalRegister(name) => {
            match molt_sdk::global::register(&name, molt_sdk::self_pid()) {
                Ok(molt_sdk::global::Registered::Yes) => Outcome::Ok,
                Ok(molt_sdk::global::Registered::Taken(holder)) => Outcome::Pid(holder),
                Err(e) => Outcome::Status(e.code()),
            }
        }
        Cmd::GlobalUnregister(name) => {
            unit(molt_sdk::global::unregister(&name, molt_sdk::self_pid()))
        }
        Cmd::GlobalWhereis(name, false) => Outcome::MaybePid(molt_sdk::global::whereis(&name)),
        Cmd::Table { request, out_cap } => {
            let mut out = vec![0u8; out_cap as usize];
            match molt_sdk::sys::table_call(&request, &mut out) {
                code if code < 0 => Outcome::Status(code),
                len if len as u32 <= out_cap => {
                    out.truncate(len as usize);
                    Outcome::Bytes(out)
                }
                len => {
                    let mut out = vec![0u8; len as usize];
                    match molt_sdk::sys::table_reply(&mut out) {
                        code if code < 0 => Outcome::Status(code),
                        _ => Outcome::Bytes(out),
                    }
                }
            }
        }
        Cmd::TableReply(out_cap) => {
            let mut out = vec![0u8; out_cap as usize];
            match molt_sdk::sys::table_reply(&mut out) {
                code if code < 0 => Outcome::Status(code),
                len => {
                    out.truncate(len as usize);
                    Outcome::Bytes(out)
                }
            }
        }
        Cmd::GlobalSend { name, tag, payload } => {
            unit(molt_sdk::global::send_raw(&name, tag, None, &payload))
        }
        Cmd::GlobalWhereis(name, true) => match molt_sdk::global::whereis_linearizable(&name) {
            Ok(pid) => Outcome::MaybePid(pid),
            Err(e) => Outcome::Status(e.code()),
        },
        Cmd::Lock { set, timeout_ms } => {
            use molt_sdk::global::Mode;
            let set: Vec<(&str, Mode)> = set
                .iter()
                .map(|(id, shared)| {
                    (
                        id.as_str(),
                        if *shared {
                            Mode::Shared
                        } else {
                            Mode::Exclusive
                        },
                    )
                })
                .collect();
            match molt_sdk::global::lock(&set, Duration::from_millis(timeout_ms)) {
                Ok(tokens) => Outcome::Tokens(tokens),
                Err(e) => Outcome::Status(e.code()),
            }
        }
        Cmd::Unlock(id) => unit(molt_sdk::global::unlock(&id)),
        Cmd::Elect(group) => match molt_sdk::election::stand(&group) {
            Ok((leader, term)) => Outcome::Leader(leader, term),
            Err(e) => Outcome::Status(e.code()),
        },
        Cmd::Resign(group) => unit(molt_sdk::election::resign(&group)),
        Cmd::Leader(group) => match molt_sdk::election::leader(&group) {
            Some((leader, term)) => Outcome::Leader(leader, term),
            None => Outcome::Ok,
        },
        Cmd::PgLeave { scope, group } => unit(molt_sdk::pg::leave(&scope, &group)),
        Cmd::PgMembers {
            scope,
            group,
            local: false,
        } => Outcome::Pids(molt_sdk::pg::members(&scope, &group)),
        Cmd::PgMembers {
            scope,
            group,
            local: true,
        } => Outcome::Pids(molt_sdk::pg::local_members(&scope, &group)),
        Cmd::PgWhichGroups(scope) => Outcome::Names(molt_sdk::pg::which_groups(&scope)),
        Cmd::Panic(text) => panic!("{text}"),
        Cmd::OnlyCommands(_) => unreachable!("handled by the receive loop"),
    }
}

fn report(envelope: Envelope) -> Event {
    let system = envelope.system().map(|s| match s {
        System::Exit { from, reason } => SystemEvent::Exit { from, reason },
        System::Down {
            reference,
            pid,
            reason,
        } => SystemEvent::Down {
            reference,
            pid,
            reason,
        },
        System::NodeDown { node } => SystemEvent::NodeDown { node },
        System::Coord(notice) => SystemEvent::Coord(notice),
        System::Table(event) => SystemEvent::Table(event),
    });
    Event::Got {
        tag: envelope.tag,
        reference: envelope.reference,
        system,
        payload: envelope.payload,
    }
}

fn run(args: PuppetArgs) {
    let controller = args.controller;
    let tell = |event: &Event| {
        if let Err(e) = molt_sdk::send(controller, event) {
            molt_sdk::warn!("puppet: event to {controller} not sent: {e}");
        }
    };
    tell(&Event::Ready(molt_sdk::self_pid()));
    let mut only_commands = false;
    loop {
        let envelope = if only_commands {
            molt_sdk::receive_matching(&Filter::data(), None).expect("no timeout was given")
        } else {
            molt_sdk::receive()
        };
        if let Some(Ok(Cmd::OnlyCommands(on))) =
            envelope.is_data().then(|| envelope.decode::<Cmd>())
        {
            only_commands = on;
            tell(&Event::Done(Outcome::Ok));
            continue;
        }
        let command = if envelope.is_data() {
            envelope.decode::<Cmd>().ok()
        } else {
            None
        };
        match command {
            Some(cmd) => tell(&Event::Done(execute(cmd))),
            None => tell(&report(envelope)),
        }
    }
}

molt_sdk::main!(run);

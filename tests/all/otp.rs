//! `molt_sdk::server` and `molt_sdk::task` end to end: calls, casts and
//! info; timeouts, crashes and lost nodes as errors; deferred replies;
//! stop and terminate; tasks that succeed, fail or time out; a server's
//! state (deferred callers and a kept task included) across an upgrade.
//!
//! The SDK's client code runs inside guests: the tests ask a "proxy"
//! `otp-server` to forward calls (`server::call` inside a handler) or to
//! run tasks, and an `otp-task` job calls a server from a raw process.

use std::time::Duration;

use molt_abi::{Pid, Ref, codec, reason, tag};
use molt_host::{Filter, HostMailbox, Node};
use molt_sdk::server::CallError;
use molt_sdk::task::TaskError;
use molt_tests::{QUIET, WAIT, address_of, dead_pid, dist_node, down_reason, guest_file, node};
use otp_proto::{Call, Cast, Event, Info, Job, Reply, SERVER, ServerArgs};

/// Spawn an `otp-server` holding `value`, reporting events to `observer`.
fn spawn_server(me: &mut HostMailbox, value: u64, observer: Option<Pid>) -> Pid {
    let args = codec::encode(&ServerArgs { value, observer });
    me.spawn(SERVER, args, false, false)
        .expect("spawn otp-server")
        .0
}

/// Send a call the way the SDK does (tag CALL, a monitor reference,
/// `(caller, request)`), without waiting.
fn ask(me: &mut HostMailbox, to: Pid, call: &Call) -> Ref {
    let reference = me.monitor(to);
    let payload = codec::encode(&(me.pid(), call));
    me.send(to, tag::CALL, reference, payload)
        .expect("send call");
    reference
}

/// The reply to the call `reference` (panics on a DOWN or no answer).
async fn answer(me: &mut HostMailbox, reference: Ref) -> Reply {
    let filter = Filter {
        tags: vec![tag::REPLY, tag::DOWN],
        reference: Some(reference),
    };
    let m = me
        .recv_matching(&filter, WAIT)
        .await
        .expect("an answer to the call");
    assert_eq!(
        m.tag,
        tag::REPLY,
        "the callee went down instead of replying"
    );
    me.demonitor(reference, true);
    codec::decode(&m.payload).expect("a Reply")
}

async fn call(me: &mut HostMailbox, to: Pid, req: Call) -> Reply {
    let reference = ask(me, to, &req);
    answer(me, reference).await
}

/// `Forward` through `proxy`: the outcome of the SDK's `server::call`.
async fn forward(
    me: &mut HostMailbox,
    proxy: Pid,
    to: Pid,
    req: Call,
    timeout: Duration,
) -> Result<Reply, CallError> {
    let reply = call(me, proxy, forward_call(to, req, timeout)).await;
    match reply {
        Reply::Forwarded(outcome) => outcome.map(|r| *r),
        other => panic!("expected Forwarded, got {other:?}"),
    }
}

fn forward_call(to: Pid, req: Call, timeout: Duration) -> Call {
    Call::Forward {
        to,
        call: Box::new(req),
        timeout_ms: timeout.as_millis() as u64,
    }
}

/// Run `job` as a task from `proxy` and wait `timeout`: its pid and result.
async fn run_task(
    me: &mut HostMailbox,
    proxy: Pid,
    job: Job,
    timeout: Duration,
) -> (Pid, Result<u64, TaskError>) {
    let req = Call::Task {
        job,
        timeout_ms: timeout.as_millis() as u64,
    };
    match call(me, proxy, req).await {
        Reply::Task { pid, result } => (pid, result),
        other => panic!("expected Task, got {other:?}"),
    }
}

/// The next event an observer gets.
async fn event(observer: &mut HostMailbox) -> Event {
    let m = observer.recv(WAIT).await.expect("an event");
    codec::decode(&m.payload).expect("an Event")
}

/// Send a cast the way the SDK does (tag CAST).
fn cast(me: &mut HostMailbox, to: Pid, cast: &Cast) {
    me.send(to, tag::CAST, Ref::NONE, codec::encode(cast))
        .expect("send cast");
}

/// Wait (bounded) until the server's log has `entry`.
async fn wait_for_log(me: &mut HostMailbox, server: Pid, entry: &str) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let Reply::Log(log) = call(me, server, Call::Log).await else {
            panic!("expected Log");
        };
        if log.iter().any(|e| e == entry) {
            return log;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {entry:?} in {log:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_casts_and_info_reach_their_handlers() {
    let node = node();
    let mut me = node.mailbox().unwrap();
    let target = spawn_server(&mut me, 1, None);
    let proxy = spawn_server(&mut me, 0, None);
    assert_eq!(
        forward(&mut me, proxy, target, Call::Get, WAIT).await,
        Ok(Reply::Value(1))
    );
    assert_eq!(
        forward(&mut me, proxy, target, Call::Add(2), WAIT).await,
        Ok(Reply::Value(3))
    );
    let req = Call::CastTo {
        to: target,
        cast: Cast::Add(5),
    };
    assert_eq!(call(&mut me, proxy, req).await, Reply::Done);
    me.send(
        target,
        tag::DATA,
        Ref::NONE,
        codec::encode(&Info::Note("hi".into())),
    )
    .unwrap();
    assert_eq!(
        forward(&mut me, proxy, target, Call::Get, WAIT).await,
        Ok(Reply::Value(8))
    );
    let log = wait_for_log(&mut me, target, "note hi").await;
    assert!(log.contains(&"cast add 5".to_string()), "{log:?}");
    // A raw process (a task) calls the server too.
    let (_, result) = run_task(&mut me, proxy, Job::GetFrom(target), WAIT).await;
    assert_eq!(result, Ok(8));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_times_out_and_a_late_reply_is_only_info() {
    let node = node();
    let mut me = node.mailbox().unwrap();
    let target = spawn_server(&mut me, 1, None);
    let proxy = spawn_server(&mut me, 0, None);
    let started = std::time::Instant::now();
    assert_eq!(
        forward(
            &mut me,
            proxy,
            target,
            Call::Defer,
            Duration::from_millis(100)
        )
        .await,
        Err(CallError::Timeout)
    );
    assert!(started.elapsed() >= Duration::from_millis(100));
    // The deferred call is answered after all: the proxy gets a stray
    // REPLY as an info message and carries on.
    assert_eq!(
        call(&mut me, target, Call::Release(9)).await,
        Reply::Released(1)
    );
    wait_for_log(&mut me, proxy, &format!("other tag {}", tag::REPLY)).await;
    assert_eq!(call(&mut me, proxy, Call::Get).await, Reply::Value(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callee_that_crashes_or_is_gone_gives_down_not_a_hang() {
    let node = node();
    let mut me = node.mailbox().unwrap();
    let target = spawn_server(&mut me, 1, None);
    let proxy = spawn_server(&mut me, 0, None);
    let watch = me.monitor(target);
    match forward(&mut me, proxy, target, Call::Crash("boom".into()), WAIT).await {
        Err(CallError::Down(why)) => assert!(why.starts_with("panic: boom"), "{why}"),
        other => panic!("expected Down, got {other:?}"),
    }
    assert!(down_reason(&mut me, watch).await.starts_with("panic: boom"));
    assert_eq!(
        forward(&mut me, proxy, target, Call::Get, WAIT).await,
        Err(CallError::Down(reason::NOPROC.into()))
    );
    assert_eq!(
        forward(&mut me, proxy, dead_pid(&node), Call::Get, WAIT).await,
        Err(CallError::Down(reason::NOPROC.into()))
    );
    assert_eq!(
        forward(&mut me, proxy, proxy, Call::Get, WAIT).await,
        Err(CallError::CallingSelf)
    );
    // The caller is unharmed and its mailbox holds no DOWN leftovers.
    assert_eq!(
        call(&mut me, proxy, Call::Log).await,
        Reply::Log(Vec::new())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferred_call_is_answered_from_another_message() {
    let node = node();
    let mut me = node.mailbox().unwrap();
    let mut observer = node.mailbox().unwrap();
    let target = spawn_server(&mut me, 1, Some(observer.pid()));
    let proxy = spawn_server(&mut me, 0, None);
    let pending = ask(&mut me, proxy, &forward_call(target, Call::Defer, WAIT));
    assert_eq!(event(&mut observer).await, Event::Deferred);
    // The server still serves others while the call waits.
    assert_eq!(call(&mut me, target, Call::Get).await, Reply::Value(1));
    cast(&mut me, target, &Cast::Release(42));
    assert_eq!(
        answer(&mut me, pending).await,
        Reply::Forwarded(Ok(Box::new(Reply::Value(42))))
    );
    wait_for_log(&mut me, target, "cast release 1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_with_a_reason_runs_terminate() {
    let node = node();
    let mut me = node.mailbox().unwrap();
    let mut observer = node.mailbox().unwrap();
    // With a reply: the caller has it, terminate ran, the exit has the reason.
    let first = spawn_server(&mut me, 3, Some(observer.pid()));
    let watch = me.monitor(first);
    let req = Call::Stop {
        reason: reason::SHUTDOWN.into(),
        reply: true,
    };
    assert_eq!(call(&mut me, first, req).await, Reply::Stopping);
    assert_eq!(
        event(&mut observer).await,
        Event::Terminated {
            reason: reason::SHUTDOWN.into(),
            value: 3
        }
    );
    assert_eq!(down_reason(&mut me, watch).await, reason::SHUTDOWN);
    // Without: the (SDK) caller gets the reason as Down.
    let second = spawn_server(&mut me, 4, Some(observer.pid()));
    let proxy = spawn_server(&mut me, 0, None);
    let req = Call::Stop {
        reason: "enough".into(),
        reply: false,
    };
    assert_eq!(
        forward(&mut me, proxy, second, req, WAIT).await,
        Err(CallError::Down("enough".into()))
    );
    assert_eq!(
        event(&mut observer).await,
        Event::Terminated {
            reason: "enough".into(),
            value: 4
        }
    );
}

/// Wait (bounded) until `pid` is dead.
async fn wait_for_death(node: &Node, pid: Pid) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while node.is_alive(pid) {
        assert!(tokio::time::Instant::now() < deadline, "{pid} lives on");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_gives_its_result_its_failure_or_a_timeout() {
    let node = node();
    let mut me = node.mailbox().unwrap();
    let proxy = spawn_server(&mut me, 0, None);
    let (pid, result) = run_task(&mut me, proxy, Job::Square(7), WAIT).await;
    assert_eq!(result, Ok(49));
    wait_for_death(&node, pid).await;
    match run_task(&mut me, proxy, Job::Panic("bad job".into()), WAIT).await {
        (_, Err(TaskError::Failed(why))) => assert!(why.starts_with("panic: bad job"), "{why}"),
        other => panic!("expected Failed, got {other:?}"),
    }
    let (pid, result) = run_task(&mut me, proxy, Job::Sleep(60_000), QUIET).await;
    assert_eq!(result, Err(TaskError::Timeout));
    wait_for_death(&node, pid).await;
    // Nothing of the three tasks is left in the starter's mailbox.
    assert_eq!(
        call(&mut me, proxy, Call::Log).await,
        Reply::Log(Vec::new())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_to_a_server_on_a_lost_node_gives_noconnection() {
    let (a, da) = dist_node("a").await;
    let (b, db) = dist_node("b").await;
    da.join(&address_of(&db)).await.unwrap();
    let mut me = a.mailbox().unwrap();
    let mut on_b = b.mailbox().unwrap();
    let mut observer = b.mailbox().unwrap();
    let target = spawn_server(&mut on_b, 5, Some(observer.pid()));
    let proxy = spawn_server(&mut me, 0, None);
    assert_eq!(
        forward(&mut me, proxy, target, Call::Add(1), WAIT).await,
        Ok(Reply::Value(6)),
        "a call across nodes answers"
    );
    let pending = ask(&mut me, proxy, &forward_call(target, Call::Defer, WAIT));
    assert_eq!(event(&mut observer).await, Event::Deferred);
    db.shutdown();
    assert_eq!(
        answer(&mut me, pending).await,
        Reply::Forwarded(Err(CallError::Down(reason::NOCONNECTION.into())))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_keeps_its_state_callers_and_task_across_an_upgrade() {
    let node = node();
    let mut me = node.mailbox().unwrap();
    let mut observer = node.mailbox().unwrap();
    let target = spawn_server(&mut me, 5, Some(observer.pid()));
    let proxy = spawn_server(&mut me, 0, None);
    assert_eq!(call(&mut me, target, Call::Add(2)).await, Reply::Value(7));
    // A deferred caller and a running task, kept in the state.
    let pending = ask(&mut me, proxy, &forward_call(target, Call::Defer, WAIT));
    assert_eq!(event(&mut observer).await, Event::Deferred);
    let Reply::Started(task) = call(&mut me, target, Call::StartTask(Job::Echo)).await else {
        panic!("the task did not start");
    };

    let v1 = std::fs::read(guest_file(SERVER)).unwrap();
    let v2 = molt_tests::with_version(&v1, SERVER, "0.1.0-next");
    node.load(&v2, SERVER).expect("the new version loads");
    molt_tests::wait_for_version(&node, target, "0.1.0-next").await;

    assert_eq!(call(&mut me, target, Call::Get).await, Reply::Value(7));
    cast(&mut me, target, &Cast::Release(70));
    assert_eq!(
        answer(&mut me, pending).await,
        Reply::Forwarded(Ok(Box::new(Reply::Value(70))))
    );
    me.send(task, tag::DATA, Ref::NONE, codec::encode(&11u64))
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match call(&mut me, target, Call::TaskOutcome).await {
            Reply::Outcome(Some(outcome)) => break assert_eq!(outcome, Ok(11)),
            Reply::Outcome(None) => {}
            other => panic!("expected Outcome, got {other:?}"),
        }
        assert!(tokio::time::Instant::now() < deadline, "no task outcome");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

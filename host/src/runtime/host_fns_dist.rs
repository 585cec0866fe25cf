//! The distribution host functions: `node_name`, `nodes`, `spawn_on`,
//! `send_named_on`, `ping` and `monitor_node`. They reach other nodes only
//! through the node's [`super::Router`]; without one (a node that is not
//! distributed) every other node name is unreachable.
//!
//! The asynchronous ones copy everything they need out of guest memory,
//! and check every output, before they wait: no borrow of guest memory
//! lives across an `.await`, and a bad pointer is found before anything
//! happens on another node. After the wait they borrow memory again to
//! write their outputs.

use molt_abi::{IMPORT_MODULE, Pid, REF_BYTES, imports, spawn_flags, status};
use wasmtime::{Caller, Linker};

use super::cell::Message;
use super::guest::ProcState;
use super::guest_mem as gm;
use super::host_fns::{fault, payload, send_status, split};
use super::{NodeInner, SpawnError, Undelivered};

type Result<T> = wasmtime::Result<T>;

/// This node's name as the cluster knows it (`NodeConfig::name`).
fn own_name(node: &NodeInner) -> String {
    node.router()
        .map(|r| r.node_name())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| node.config.name.clone())
}

/// Write `text` to the guest buffer if it fits; return its full length.
/// The whole buffer is checked either way, so a bad buffer always faults.
fn write_text(mem: &mut [u8], ptr: i32, len: i32, text: &str, what: &'static str) -> Result<i32> {
    let buf = gm::bytes_mut(mem, ptr, len, what).map_err(fault)?;
    if let Some(dest) = buf.get_mut(..text.len()) {
        dest.copy_from_slice(text.as_bytes());
    }
    Ok(i32::try_from(text.len()).unwrap_or(i32::MAX))
}

fn spawn_status(e: &SpawnError) -> i32 {
    match e {
        SpawnError::NoModule(_) => status::NO_MODULE,
        SpawnError::ProcessLimit(_) => status::PROCESS_LIMIT,
        SpawnError::ArgsTooLarge { .. } => status::MESSAGE_TOO_LARGE,
        SpawnError::NoConnection(_) => status::NOCONNECTION,
    }
}

/// Register the distribution host functions.
pub(super) fn register(linker: &mut Linker<ProcState>) -> Result<()> {
    let m = IMPORT_MODULE;

    linker.func_wrap(
        m,
        imports::NODE_NAME.name,
        |mut c: Caller<'_, ProcState>, ptr: i32, len: i32| -> Result<i32> {
            let (mem, st) = split(&mut c)?;
            let name = own_name(&st.core.node);
            write_text(mem, ptr, len, &name, "node_name buffer")
        },
    )?;

    linker.func_wrap(
        m,
        imports::NODES.name,
        |mut c: Caller<'_, ProcState>, ptr: i32, len: i32| -> Result<i32> {
            let (mem, st) = split(&mut c)?;
            let names = st
                .core
                .node
                .router()
                .map(|r| r.nodes())
                .unwrap_or_default()
                .join("\n");
            write_text(mem, ptr, len, &names, "nodes buffer")
        },
    )?;

    linker.func_wrap_async(
        m,
        imports::SPAWN_ON.name,
        |mut c: Caller<'_, ProcState>,
         (
            node_ptr,
            node_len,
            module_ptr,
            module_len,
            args_ptr,
            args_len,
            flags,
            pid_out,
            ref_out,
        ): (i32, i32, i32, i32, i32, i32, i32, i32, i32)| {
            Box::new(async move {
                let request = SpawnRequest {
                    node: (node_ptr, node_len),
                    module: (module_ptr, module_len),
                    args: (args_ptr, args_len),
                    flags,
                    pid_out,
                    ref_out,
                };
                spawn_on(&mut c, request).await
            })
        },
    )?;

    linker.func_wrap_async(
        m,
        imports::SEND_NAMED_ON.name,
        |mut c: Caller<'_, ProcState>,
         (node_ptr, node_len, name_ptr, name_len, tag, ref_ptr, ptr, len): (
            i32,
            i32,
            i32,
            i32,
            i32,
            i32,
            i32,
            i32,
        )| {
            Box::new(async move {
                let request = NamedSend {
                    node: (node_ptr, node_len),
                    name: (name_ptr, name_len),
                    tag,
                    ref_ptr,
                    payload: (ptr, len),
                };
                send_named_on(&mut c, request).await
            })
        },
    )?;

    linker.func_wrap_async(
        m,
        imports::PING.name,
        |mut c: Caller<'_, ProcState>, (ptr, len): (i32, i32)| {
            Box::new(async move { ping(&mut c, ptr, len).await })
        },
    )?;

    linker.func_wrap(
        m,
        imports::MONITOR_NODE.name,
        |mut c: Caller<'_, ProcState>, ptr: i32, len: i32, flag: i32| -> Result<i32> {
            let (mem, st) = split(&mut c)?;
            let Some(node) = gm::text(mem, ptr, len, "monitor_node node").map_err(fault)? else {
                return Ok(status::BAD_ARG);
            };
            let node = node.to_string();
            st.core.monitor_node(&node, flag != 0);
            Ok(status::OK)
        },
    )?;

    Ok(())
}

/// The guest's arguments to `spawn_on`: `(ptr, len)` pairs and outputs.
struct SpawnRequest {
    node: (i32, i32),
    module: (i32, i32),
    args: (i32, i32),
    flags: i32,
    pid_out: i32,
    ref_out: i32,
}

/// `spawn_on`: a local spawn for this node's own name, else a request to
/// the router, waited for. The caller records its half of the link and
/// monitor, as `spawn` does.
async fn spawn_on(c: &mut Caller<'_, ProcState>, req: SpawnRequest) -> Result<i32> {
    let monitor_flag = req.flags & spawn_flags::MONITOR != 0;
    let link = req.flags & spawn_flags::LINK != 0;
    let (target, module, args, node, me) = {
        let (mem, st) = split(c)?;
        let node_text = gm::text(mem, req.node.0, req.node.1, "spawn_on node").map_err(fault)?;
        let module_text =
            gm::text(mem, req.module.0, req.module.1, "spawn_on module").map_err(fault)?;
        let (Some(target), Some(module)) = (node_text, module_text) else {
            return Ok(status::BAD_ARG);
        };
        let (target, module) = (target.to_string(), module.to_string());
        let args = match payload(mem, st, req.args.0, req.args.1)? {
            Ok(a) => a,
            Err(code) => return Ok(code),
        };
        // Check the outputs now, so a fault never leaves a process behind.
        gm::bytes(
            mem,
            req.pid_out,
            molt_abi::PID_BYTES as i32,
            "spawn_on pid_out",
        )
        .map_err(fault)?;
        if monitor_flag {
            gm::bytes(mem, req.ref_out, REF_BYTES as i32, "spawn_on ref_out").map_err(fault)?;
        }
        (target, module, args, st.core.node.clone(), st.core.pid())
    };
    let monitor = monitor_flag.then(|| node.make_ref());
    let result: std::result::Result<Pid, SpawnError> = if target == own_name(&node) {
        node.spawn(
            &module,
            args.into_vec(),
            link.then_some(me),
            monitor.map(|r| (r, me)),
        )
    } else {
        match node.router().cloned() {
            Some(router) => {
                router
                    .spawn_on(me, &target, &module, args.into_vec(), link, monitor)
                    .await
            }
            None => Err(SpawnError::NoConnection(format!(
                "{target}: this node is not distributed"
            ))),
        }
    };
    let child = match result {
        Ok(child) => child,
        Err(e) => return Ok(spawn_status(&e)),
    };
    let (mem, st) = split(c)?;
    if link {
        st.core.links.insert(child);
    }
    if let Some(r) = monitor {
        st.core.monitors_out.insert(r, child);
        gm::write(mem, req.ref_out, &r.to_bytes(), "spawn_on ref_out").map_err(fault)?;
    }
    gm::write(mem, req.pid_out, &child.to_bytes(), "spawn_on pid_out").map_err(fault)?;
    Ok(status::OK)
}

/// The guest's arguments to `send_named_on`.
struct NamedSend {
    node: (i32, i32),
    name: (i32, i32),
    tag: i32,
    ref_ptr: i32,
    payload: (i32, i32),
}

/// `send_named_on`: `send_named` for this node's own name, else a named
/// send through the router (which may connect first).
async fn send_named_on(c: &mut Caller<'_, ProcState>, req: NamedSend) -> Result<i32> {
    let (target, name, message, node, me) = {
        let (mem, st) = split(c)?;
        let node_text =
            gm::text(mem, req.node.0, req.node.1, "send_named_on node").map_err(fault)?;
        let name_text =
            gm::text(mem, req.name.0, req.name.1, "send_named_on name").map_err(fault)?;
        let (Some(target), Some(name)) = (node_text, name_text) else {
            return Ok(status::BAD_ARG);
        };
        let (target, name) = (target.to_string(), name.to_string());
        let reference =
            gm::optional_reference(mem, req.ref_ptr, "send_named_on ref").map_err(fault)?;
        let payload = match payload(mem, st, req.payload.0, req.payload.1)? {
            Ok(p) => p,
            Err(code) => return Ok(code),
        };
        if !molt_abi::tag::is_user(req.tag as u32) {
            return Ok(status::BAD_ARG);
        }
        let message = Message {
            tag: req.tag as u32,
            reference,
            payload,
        };
        (target, name, message, st.core.node.clone(), st.core.pid())
    };
    if target == own_name(&node) {
        let to = node
            .registry
            .lock()
            .expect("registry poisoned")
            .whereis(&name);
        let Some(to) = to else {
            return Ok(status::NOT_REGISTERED);
        };
        let sent = node.send_user(me, to, message);
        if sent.is_ok() {
            c.data().core.sent(to);
        }
        return Ok(send_status(sent));
    }
    let Some(router) = node.router().cloned() else {
        return Ok(status::NOCONNECTION);
    };
    // The router waits for room on a lane the send filled before it
    // returns, so the guest runs on only then.
    let sent = router.send_named(me, &target, &name, message).await;
    Ok(match sent {
        Ok(()) => {
            c.data().core.sent_to_node(false);
            status::OK
        }
        Err(Undelivered::NoConnection) => status::NOCONNECTION,
        // The name is looked up on the other node; a miss there drops the
        // message, as Erlang's `{Name, Node} ! Msg` does.
        Err(Undelivered::NoProc) => status::OK,
    })
}

/// `ping`: 1 if `node` answered. This node's own name answers when the
/// node is distributed; nothing answers on a node that is not.
async fn ping(c: &mut Caller<'_, ProcState>, ptr: i32, len: i32) -> Result<i32> {
    let (target, node) = {
        let (mem, st) = split(c)?;
        let Some(target) = gm::text(mem, ptr, len, "ping node").map_err(fault)? else {
            return Ok(0);
        };
        (target.to_string(), st.core.node.clone())
    };
    let Some(router) = node.router().cloned() else {
        return Ok(0);
    };
    if target == own_name(&node) {
        return Ok(1);
    }
    Ok(router.ping(&target).await as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_written_only_if_it_fits() {
        let mut mem = [0u8; 16];
        assert_eq!(write_text(&mut mem, 0, 4, "a@b", "t").unwrap(), 3);
        assert_eq!(&mem[..4], b"a@b\0");
        let mut mem = [0u8; 16];
        assert_eq!(write_text(&mut mem, 2, 2, "a@b", "t").unwrap(), 3);
        assert_eq!(mem, [0u8; 16], "nothing written when it does not fit");
        assert!(write_text(&mut mem, 10, 8, "x", "t").is_err());
        assert_eq!(write_text(&mut mem, 0, 0, "", "t").unwrap(), 0);
    }
}

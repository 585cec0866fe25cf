//! The coordination host functions: cluster names (`global_register`,
//! `global_unregister`, `global_whereis`), locks (`lock`, `unlock`) and
//! elections (`elect`, `resign`, `leader`). They reach the coordination
//! group only through the node's [`super::Coordinator`]; without one they
//! answer `NO_COORDINATION`.
//!
//! As the distribution functions do, the asynchronous ones copy their
//! inputs out of guest memory and check every output buffer before they
//! wait, and borrow memory again only to write the result.

use std::time::Duration;

use molt_abi::{
    IMPORT_MODULE, NAME_BYTES_MAX, PID_BYTES, Pid, imports, lock_mode, status, whereis_flags,
};
use wasmtime::{Caller, Linker};

use super::guest::ProcState;
use super::guest_mem as gm;
use super::host_fns::{fault, split, wrap_send_to_name};
use super::{Coordinator, GlobalAnswer, GlobalCall};

type Result<T> = wasmtime::Result<T>;

/// Most locks in one `lock` set.
const LOCK_SET_MAX: usize = 64;
/// The longest wait a `lock` may ask for (`-1` means this).
const LOCK_WAIT_MAX: Duration = Duration::from_secs(24 * 3600);

/// Whether `name` may name a cluster name, lock or election: 1 to 255
/// bytes.
fn name_ok(name: &str) -> bool {
    !name.is_empty() && name.len() <= NAME_BYTES_MAX
}

/// A name of 1 to 255 bytes of UTF-8, or `None`.
fn name(mem: &[u8], ptr: i32, len: i32, what: &'static str) -> Result<Option<String>> {
    let text = gm::text(mem, ptr, len, what).map_err(fault)?;
    Ok(text.filter(|t| name_ok(t)).map(str::to_string))
}

/// Parse a `lock` set: mode byte, `u32` length, id; `None` if malformed.
fn lock_set(bytes: &[u8]) -> Option<Vec<(String, bool)>> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (&mode, tail) = rest.split_first()?;
        let shared = match mode {
            lock_mode::EXCLUSIVE => false,
            lock_mode::SHARED => true,
            _ => return None,
        };
        let len = u32::from_le_bytes(tail.get(..4)?.try_into().ok()?) as usize;
        let id = tail.get(4..4 + len)?;
        let id = std::str::from_utf8(id).ok()?;
        if id.is_empty() || id.len() > NAME_BYTES_MAX || out.len() == LOCK_SET_MAX {
            return None;
        }
        out.push((id.to_string(), shared));
        rest = &tail[4 + len..];
    }
    (!out.is_empty()).then_some(out)
}

fn coordinator(st: &ProcState) -> Option<std::sync::Arc<dyn Coordinator>> {
    st.core.node.coordinator().cloned()
}

/// Run `call`; on success `write` stores the answer in guest memory.
async fn run(
    c: &mut Caller<'_, ProcState>,
    coordinator: std::sync::Arc<dyn Coordinator>,
    call: GlobalCall,
    write: impl FnOnce(&mut [u8], GlobalAnswer) -> Result<()>,
    holder_out: Option<i32>,
) -> Result<i32> {
    match coordinator.call(call).await {
        Ok(answer) => {
            let (mem, _) = split(c)?;
            write(mem, answer)?;
            Ok(status::OK)
        }
        Err(refusal) => {
            if let (Some(ptr), Some(holder)) = (holder_out, refusal.holder) {
                let (mem, _) = split(c)?;
                gm::write(mem, ptr, &holder.to_bytes(), "holder_out").map_err(fault)?;
            }
            Ok(refusal.status)
        }
    }
}

fn write_leader(
    mem: &mut [u8],
    leader_out: i32,
    term_out: i32,
    leader: Pid,
    term: u64,
) -> Result<()> {
    gm::write(mem, leader_out, &leader.to_bytes(), "leader_out").map_err(fault)?;
    gm::write(mem, term_out, &term.to_le_bytes(), "term_out").map_err(fault)
}

/// Register the coordination host functions.
pub(super) fn register(linker: &mut Linker<ProcState>) -> Result<()> {
    let m = IMPORT_MODULE;

    // `global_send`: the holder as this node's replica knows it.
    wrap_send_to_name(linker, imports::GLOBAL_SEND.name, |st, name| {
        let coord = coordinator(st).ok_or(status::NO_COORDINATION)?;
        if !name_ok(name) {
            return Err(status::BAD_ARG);
        }
        coord.whereis(name).ok_or(status::NOT_REGISTERED)
    })?;

    linker.func_wrap_async(
        m,
        imports::GLOBAL_REGISTER.name,
        |mut c: Caller<'_, ProcState>,
         (name_ptr, name_len, pid_ptr, holder_out): (i32, i32, i32, i32)| {
            Box::new(async move {
                let (call, coord) = {
                    let (mem, st) = split(&mut c)?;
                    let name = name(mem, name_ptr, name_len, "global name")?;
                    let pid = gm::pid(mem, pid_ptr, "global_register pid").map_err(fault)?;
                    gm::bytes_mut(mem, holder_out, PID_BYTES as i32, "holder_out")
                        .map_err(fault)?;
                    let Some(coord) = coordinator(st) else {
                        return Ok(status::NO_COORDINATION);
                    };
                    let Some(name) = name else {
                        return Ok(status::BAD_ARG);
                    };
                    (GlobalCall::Register { name, pid }, coord)
                };
                run(&mut c, coord, call, |_, _| Ok(()), Some(holder_out)).await
            })
        },
    )?;

    linker.func_wrap_async(
        m,
        imports::GLOBAL_UNREGISTER.name,
        |mut c: Caller<'_, ProcState>, (name_ptr, name_len, pid_ptr): (i32, i32, i32)| {
            Box::new(async move {
                let (call, coord) = {
                    let (mem, st) = split(&mut c)?;
                    let name = name(mem, name_ptr, name_len, "global name")?;
                    let pid = gm::pid(mem, pid_ptr, "global_unregister pid").map_err(fault)?;
                    let Some(coord) = coordinator(st) else {
                        return Ok(status::NO_COORDINATION);
                    };
                    let Some(name) = name else {
                        return Ok(status::BAD_ARG);
                    };
                    (GlobalCall::Unregister { name, pid }, coord)
                };
                run(&mut c, coord, call, |_, _| Ok(()), None).await
            })
        },
    )?;

    linker.func_wrap_async(
        m,
        imports::GLOBAL_WHEREIS.name,
        |mut c: Caller<'_, ProcState>,
         (name_ptr, name_len, flags, pid_out): (i32, i32, i32, i32)| {
            Box::new(async move {
                let (name, coord) = {
                    let (mem, st) = split(&mut c)?;
                    let name = name(mem, name_ptr, name_len, "global name")?;
                    gm::bytes_mut(mem, pid_out, PID_BYTES as i32, "pid_out").map_err(fault)?;
                    let Some(coord) = coordinator(st) else {
                        return Ok(status::NO_COORDINATION);
                    };
                    let Some(name) = name else {
                        return Ok(status::BAD_ARG);
                    };
                    if flags & !whereis_flags::LINEARIZABLE != 0 {
                        return Ok(status::BAD_ARG);
                    }
                    if flags & whereis_flags::LINEARIZABLE == 0 {
                        return Ok(match coord.whereis(&name) {
                            Some(pid) => {
                                gm::write(mem, pid_out, &pid.to_bytes(), "pid_out")
                                    .map_err(fault)?;
                                status::OK
                            }
                            None => status::NOT_REGISTERED,
                        });
                    }
                    (name, coord)
                };
                let mut found = true;
                let status = run(
                    &mut c,
                    coord,
                    GlobalCall::Whereis { name },
                    |mem, answer| {
                        match answer {
                            GlobalAnswer::Pid(Some(pid)) => {
                                gm::write(mem, pid_out, &pid.to_bytes(), "pid_out")
                                    .map_err(fault)?
                            }
                            _ => found = false,
                        }
                        Ok(())
                    },
                    None,
                )
                .await?;
                Ok(if status == status::OK && !found {
                    status::NOT_REGISTERED
                } else {
                    status
                })
            })
        },
    )?;

    linker.func_wrap_async(
        m,
        imports::LOCK.name,
        |mut c: Caller<'_, ProcState>,
         (set_ptr, set_len, timeout_ms, tokens_out, tokens_len): (i32, i32, i64, i32, i32)| {
            Box::new(async move {
                let (call, coord) = {
                    let (mem, st) = split(&mut c)?;
                    let set = gm::bytes(mem, set_ptr, set_len, "lock set").map_err(fault)?;
                    let locks = lock_set(set);
                    gm::bytes_mut(mem, tokens_out, tokens_len, "tokens_out").map_err(fault)?;
                    let Some(coord) = coordinator(st) else {
                        return Ok(status::NO_COORDINATION);
                    };
                    let Some(locks) = locks else {
                        return Ok(status::BAD_ARG);
                    };
                    if (tokens_len as usize) < locks.len() * 8 {
                        return Ok(status::BAD_ARG);
                    }
                    let timeout = match timeout_ms {
                        t if t < 0 => LOCK_WAIT_MAX,
                        t => Duration::from_millis(t as u64).min(LOCK_WAIT_MAX),
                    };
                    let pid = st.core.pid();
                    (GlobalCall::Lock { pid, locks, timeout }, coord)
                };
                run(
                    &mut c,
                    coord,
                    call,
                    |mem, answer| {
                        if let GlobalAnswer::Tokens(tokens) = answer {
                            let bytes: Vec<u8> = tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
                            gm::write(mem, tokens_out, &bytes, "tokens_out").map_err(fault)?;
                        }
                        Ok(())
                    },
                    None,
                )
                .await
            })
        },
    )?;

    linker.func_wrap_async(
        m,
        imports::UNLOCK.name,
        |mut c: Caller<'_, ProcState>, (id_ptr, id_len): (i32, i32)| {
            Box::new(async move {
                let (call, coord) = {
                    let (mem, st) = split(&mut c)?;
                    let lock = name(mem, id_ptr, id_len, "lock id")?;
                    let Some(coord) = coordinator(st) else {
                        return Ok(status::NO_COORDINATION);
                    };
                    let Some(lock) = lock else {
                        return Ok(status::BAD_ARG);
                    };
                    let pid = st.core.pid();
                    (GlobalCall::Unlock { lock, pid }, coord)
                };
                run(&mut c, coord, call, |_, _| Ok(()), None).await
            })
        },
    )?;

    linker.func_wrap_async(
        m,
        imports::ELECT.name,
        |mut c: Caller<'_, ProcState>,
         (group_ptr, group_len, leader_out, term_out): (i32, i32, i32, i32)| {
            Box::new(async move {
                let (call, coord) = {
                    let (mem, st) = split(&mut c)?;
                    let group = name(mem, group_ptr, group_len, "election group")?;
                    gm::bytes_mut(mem, leader_out, PID_BYTES as i32, "leader_out")
                        .map_err(fault)?;
                    gm::bytes_mut(mem, term_out, 8, "term_out").map_err(fault)?;
                    let Some(coord) = coordinator(st) else {
                        return Ok(status::NO_COORDINATION);
                    };
                    let Some(group) = group else {
                        return Ok(status::BAD_ARG);
                    };
                    let pid = st.core.pid();
                    (GlobalCall::Elect { group, pid }, coord)
                };
                run(
                    &mut c,
                    coord,
                    call,
                    |mem, answer| match answer {
                        GlobalAnswer::Leader(leader, term) => {
                            write_leader(mem, leader_out, term_out, leader, term)
                        }
                        _ => Ok(()),
                    },
                    None,
                )
                .await
            })
        },
    )?;

    linker.func_wrap_async(
        m,
        imports::RESIGN.name,
        |mut c: Caller<'_, ProcState>, (group_ptr, group_len): (i32, i32)| {
            Box::new(async move {
                let (call, coord) = {
                    let (mem, st) = split(&mut c)?;
                    let group = name(mem, group_ptr, group_len, "election group")?;
                    let Some(coord) = coordinator(st) else {
                        return Ok(status::NO_COORDINATION);
                    };
                    let Some(group) = group else {
                        return Ok(status::BAD_ARG);
                    };
                    let pid = st.core.pid();
                    (GlobalCall::Resign { group, pid }, coord)
                };
                run(&mut c, coord, call, |_, _| Ok(()), None).await
            })
        },
    )?;

    linker.func_wrap(
        m,
        imports::LEADER.name,
        |mut c: Caller<'_, ProcState>,
         group_ptr: i32,
         group_len: i32,
         leader_out: i32,
         term_out: i32|
         -> Result<i32> {
            let (mem, st) = split(&mut c)?;
            let group = name(mem, group_ptr, group_len, "election group")?;
            gm::bytes_mut(mem, leader_out, PID_BYTES as i32, "leader_out").map_err(fault)?;
            gm::bytes_mut(mem, term_out, 8, "term_out").map_err(fault)?;
            let Some(coord) = coordinator(st) else {
                return Ok(status::NO_COORDINATION);
            };
            let Some(group) = group else {
                return Ok(status::BAD_ARG);
            };
            match coord.leader(&group) {
                Some((leader, term)) => {
                    write_leader(mem, leader_out, term_out, leader, term)?;
                    Ok(status::OK)
                }
                None => Ok(status::NOT_REGISTERED),
            }
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(mode: u8, id: &str) -> Vec<u8> {
        let mut out = vec![mode];
        out.extend_from_slice(&(id.len() as u32).to_le_bytes());
        out.extend_from_slice(id.as_bytes());
        out
    }

    #[test]
    fn lock_sets_parse_or_are_refused() {
        let set = [entry(0, "a"), entry(1, "b")].concat();
        assert_eq!(
            lock_set(&set),
            Some(vec![("a".to_string(), false), ("b".to_string(), true)])
        );
        assert_eq!(lock_set(&[]), None, "empty");
        assert_eq!(lock_set(&entry(2, "a")), None, "unknown mode");
        assert_eq!(lock_set(&entry(0, "")), None, "empty id");
        assert_eq!(lock_set(&entry(0, &"x".repeat(256))), None, "long id");
        let mut cut = entry(0, "abc");
        cut.pop();
        assert_eq!(lock_set(&cut), None, "truncated");
        let many: Vec<u8> = (0..65).flat_map(|i| entry(0, &format!("l{i}"))).collect();
        assert_eq!(lock_set(&many), None, "more than 64");
    }
}

//! The process group host functions (Erlang's `pg`): `pg_join`,
//! `pg_leave`, `pg_members`, `pg_local_members` and `pg_which_groups`.
//! The groups live in the node ([`super::pg`]); these only check the
//! guest's buffers and names and translate errors to status codes.

use molt_abi::{IMPORT_MODULE, NAME_BYTES_MAX, PID_BYTES, imports, status};
use wasmtime::{Caller, Linker};

use super::PgError;
use super::guest::ProcState;
use super::guest_mem as gm;
use super::host_fns::{fault, split};

type Result<T> = wasmtime::Result<T>;

fn pg_status(result: std::result::Result<(), PgError>) -> i32 {
    match result {
        Ok(()) => status::OK,
        Err(PgError::BadName) => status::BAD_ARG,
        Err(PgError::MembershipLimit(_) | PgError::GroupLimit(_)) => status::PG_LIMIT,
        Err(PgError::NotJoined) => status::NOT_JOINED,
    }
}

/// A scope or group name: `None` if it is not UTF-8 or is too long (an
/// empty one is refused by the table). The length is checked before the
/// bytes are read, the bounds always.
fn name(mem: &[u8], ptr: i32, len: i32, what: &'static str) -> Result<Option<String>> {
    let text = gm::text(mem, ptr, len, what).map_err(fault)?;
    Ok(text
        .filter(|t| t.len() <= NAME_BYTES_MAX)
        .map(str::to_string))
}

/// Write `pids` to the guest buffer if they fit; return how many there are.
/// The whole buffer is checked either way, so a bad buffer always faults.
fn write_pids(mem: &mut [u8], ptr: i32, len: i32, pids: &[molt_abi::Pid]) -> Result<i32> {
    let buf = gm::bytes_mut(mem, ptr, len, "pg members buffer").map_err(fault)?;
    if pids.len() * PID_BYTES <= buf.len() {
        for (chunk, pid) in buf.chunks_exact_mut(PID_BYTES).zip(pids) {
            chunk.copy_from_slice(&pid.to_bytes());
        }
    }
    Ok(i32::try_from(pids.len()).unwrap_or(i32::MAX))
}

/// Group names as `u32` length + UTF-8 each.
fn encode_groups(groups: &[String]) -> Vec<u8> {
    let mut out = Vec::with_capacity(groups.iter().map(|g| 4 + g.len()).sum());
    for g in groups {
        out.extend_from_slice(&(g.len() as u32).to_le_bytes());
        out.extend_from_slice(g.as_bytes());
    }
    out
}

/// `pg_members` and `pg_local_members`.
fn members(
    c: &mut Caller<'_, ProcState>,
    (scope_ptr, scope_len, group_ptr, group_len): (i32, i32, i32, i32),
    (buf_ptr, buf_len): (i32, i32),
    local: bool,
) -> Result<i32> {
    let (mem, st) = split(c)?;
    let scope = name(mem, scope_ptr, scope_len, "pg scope")?;
    let group = name(mem, group_ptr, group_len, "pg group")?;
    let (Some(scope), Some(group)) = (scope, group) else {
        return Ok(status::BAD_ARG);
    };
    let pids = st.core.node.pg_members(&scope, &group, local);
    write_pids(mem, buf_ptr, buf_len, &pids)
}

/// Register the process group host functions.
pub(super) fn register(linker: &mut Linker<ProcState>) -> Result<()> {
    let m = IMPORT_MODULE;

    linker.func_wrap(
        m,
        imports::PG_JOIN.name,
        |mut c: Caller<'_, ProcState>, sp: i32, sl: i32, gp: i32, gl: i32| -> Result<i32> {
            let (mem, st) = split(&mut c)?;
            let scope = name(mem, sp, sl, "pg_join scope")?;
            let group = name(mem, gp, gl, "pg_join group")?;
            let (Some(scope), Some(group)) = (scope, group) else {
                return Ok(status::BAD_ARG);
            };
            Ok(pg_status(st.core.pg_join(&scope, &group)))
        },
    )?;

    linker.func_wrap(
        m,
        imports::PG_LEAVE.name,
        |mut c: Caller<'_, ProcState>, sp: i32, sl: i32, gp: i32, gl: i32| -> Result<i32> {
            let (mem, st) = split(&mut c)?;
            let scope = name(mem, sp, sl, "pg_leave scope")?;
            let group = name(mem, gp, gl, "pg_leave group")?;
            let (Some(scope), Some(group)) = (scope, group) else {
                return Ok(status::BAD_ARG);
            };
            Ok(pg_status(st.core.pg_leave(&scope, &group)))
        },
    )?;

    linker.func_wrap(
        m,
        imports::PG_MEMBERS.name,
        |mut c: Caller<'_, ProcState>,
         sp: i32,
         sl: i32,
         gp: i32,
         gl: i32,
         bp: i32,
         bl: i32|
         -> Result<i32> { members(&mut c, (sp, sl, gp, gl), (bp, bl), false) },
    )?;

    linker.func_wrap(
        m,
        imports::PG_LOCAL_MEMBERS.name,
        |mut c: Caller<'_, ProcState>,
         sp: i32,
         sl: i32,
         gp: i32,
         gl: i32,
         bp: i32,
         bl: i32|
         -> Result<i32> { members(&mut c, (sp, sl, gp, gl), (bp, bl), true) },
    )?;

    linker.func_wrap(
        m,
        imports::PG_WHICH_GROUPS.name,
        |mut c: Caller<'_, ProcState>, sp: i32, sl: i32, bp: i32, bl: i32| -> Result<i32> {
            let (mem, st) = split(&mut c)?;
            let Some(scope) = name(mem, sp, sl, "pg_which_groups scope")? else {
                return Ok(status::BAD_ARG);
            };
            let bytes = encode_groups(&st.core.node.pg_which_groups(&scope));
            let buf = gm::bytes_mut(mem, bp, bl, "pg_which_groups buffer").map_err(fault)?;
            if let Some(dest) = buf.get_mut(..bytes.len()) {
                dest.copy_from_slice(&bytes);
            }
            Ok(i32::try_from(bytes.len()).unwrap_or(i32::MAX))
        },
    )?;

    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use molt_abi::Pid;

    #[test]
    fn pids_are_written_only_if_they_all_fit() {
        let p = |serial| Pid {
            node: 1,
            incarnation: 2,
            serial,
        };
        let mut mem = [0u8; 64];
        assert_eq!(write_pids(&mut mem, 0, 48, &[p(1), p(2)]).unwrap(), 2);
        assert_eq!(Pid::from_slice(&mem[24..48]), Some(p(2)));
        let mut mem = [0u8; 64];
        assert_eq!(write_pids(&mut mem, 0, 47, &[p(1), p(2)]).unwrap(), 2);
        assert_eq!(mem, [0u8; 64], "nothing written when they do not fit");
        assert!(write_pids(&mut mem, 48, 24, &[]).is_err());
    }

    #[test]
    fn groups_are_length_prefixed() {
        assert_eq!(
            encode_groups(&["ab".into(), "".into()]),
            [2, 0, 0, 0, b'a', b'b', 0, 0, 0, 0]
        );
    }
}

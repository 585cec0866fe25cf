//! The table host functions: `table_call` runs a request of
//! `molt_abi::table` on the node's [`crate::table::Tables`], and
//! `table_reply` hands over a reply too long for the caller's buffer.
//!
//! Every table today has its one replica on this node, so a call answers
//! at once, except a commit to a disc table, which suspends the guest
//! until the commit is durable.

use molt_abi::table::Request;
use molt_abi::{IMPORT_MODULE, codec, imports, status};
use wasmtime::{Caller, Linker};

use super::guest::ProcState;
use super::guest_mem as gm;
use super::host_fns::{fault, split};

type Result<T> = wasmtime::Result<T>;

/// Register the table host functions.
pub(super) fn register(linker: &mut Linker<ProcState>) -> Result<()> {
    let m = IMPORT_MODULE;

    linker.func_wrap_async(
        m,
        imports::TABLE_CALL.name,
        |mut c: Caller<'_, ProcState>,
         (req_ptr, req_len, out_ptr, out_cap): (i32, i32, i32, i32)| {
            Box::new(async move {
                let answer = {
                    let (mem, st) = split(&mut c)?;
                    let node = st.core.node.clone();
                    let request =
                        gm::bytes(mem, req_ptr, req_len, "table request").map_err(fault)?;
                    if request.len() > node.tables.limits().request_bytes_max {
                        return Ok(status::BAD_ARG);
                    }
                    let Ok(request) = codec::decode::<Request>(request) else {
                        return Ok(status::BAD_ARG);
                    };
                    // Checked before any wait, so a bad buffer faults at
                    // once.
                    gm::bytes_mut(mem, out_ptr, out_cap, "table reply buffer").map_err(fault)?;
                    node.tables.call(&node, st.core.pid(), request)
                };
                // A disc table's commit waits here until it is durable,
                // with no borrow of the guest held.
                let reply = answer.reply().await;
                let (mem, st) = split(&mut c)?;
                let out =
                    gm::bytes_mut(mem, out_ptr, out_cap, "table reply buffer").map_err(fault)?;
                // Encoded straight into the guest's buffer when it fits.
                if let Some(len) = codec::encode_into(&reply, out) {
                    st.table_reply = None;
                    return Ok(len as i32);
                }
                let encoded = codec::encode(&reply);
                let len = encoded.len() as i32;
                st.table_reply = Some(encoded);
                Ok(len)
            })
        },
    )?;

    linker.func_wrap(
        m,
        imports::TABLE_GET.name,
        |mut c: Caller<'_, ProcState>,
         table_ptr: i32,
         table_len: i32,
         key_ptr: i32,
         key_len: i32,
         out_ptr: i32,
         out_cap: i32|
         -> Result<i32> {
            let (mem, st) = split(&mut c)?;
            // The name and key are copied aside (a few bytes, into a
            // buffer the process keeps) so the reply can go straight into
            // guest memory.
            let mut scratch = std::mem::take(&mut st.table_scratch);
            scratch.clear();
            scratch.extend_from_slice(
                gm::bytes(mem, table_ptr, table_len, "table name").map_err(fault)?,
            );
            scratch
                .extend_from_slice(gm::bytes(mem, key_ptr, key_len, "table key").map_err(fault)?);
            let out = gm::bytes_mut(mem, out_ptr, out_cap, "table_get buffer").map_err(fault)?;
            let (table, key) = scratch.split_at(table_len as usize);
            let found = match std::str::from_utf8(table) {
                Ok(table) => st.core.node.tables.get_into(table, key, out),
                Err(_) => None,
            };
            st.table_scratch = scratch;
            Ok(found.map_or(status::TABLE_ERROR, |len| len as i32))
        },
    )?;

    linker.func_wrap(
        m,
        imports::TABLE_REPLY.name,
        |mut c: Caller<'_, ProcState>, out_ptr: i32, out_cap: i32| -> Result<i32> {
            let (mem, st) = split(&mut c)?;
            let Some(reply) = &st.table_reply else {
                return Ok(status::NO_MESSAGE);
            };
            let out = gm::bytes_mut(mem, out_ptr, out_cap, "table reply buffer").map_err(fault)?;
            if out.len() < reply.len() {
                return Ok(status::BUFFER_TOO_SMALL);
            }
            out[..reply.len()].copy_from_slice(reply);
            let len = reply.len() as i32;
            st.table_reply = None;
            Ok(len)
        },
    )?;
    Ok(())
}

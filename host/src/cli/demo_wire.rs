//! What `molt demo` says to `examples/singleton`'s counter store, and
//! reads of `examples/cart`'s carts: mirrors of the examples' names,
//! messages and records, so the binary need not link a guest crate. The end-to-end tests include this file and check that both
//! encode alike.

use molt_abi::Pid;
use serde::{Deserialize, Serialize};

/// The store's cluster name (`singleton::STORE`).
pub const STORE: &str = "counter-store";

/// `singleton::StoreMsg`: what the store is asked (variant order matters).
#[derive(Serialize, Debug, Clone)]
pub enum StoreMsg {
    /// Add one as the holder of the lock's grant `token` (the demo only
    /// reads; kept for the variant order).
    #[allow(dead_code)]
    Add {
        /// Who to answer.
        from: Pid,
        /// The grant's fencing token.
        token: u64,
    },
    /// The value.
    Get {
        /// Who to answer.
        from: Pid,
    },
}

/// `singleton::StoreReply`: what the store answers.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum StoreReply {
    /// The value now.
    Value(u64),
    /// A token older than one already used was refused.
    Stale {
        /// The newest token seen.
        newest: u64,
    },
}

/// A cart of `examples/cart`, as its `carts` table holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cart {
    /// (item, count).
    pub items: Vec<(String, u32)>,
    /// How many adds of `shop-exactly` the cart took.
    pub done: u32,
}

/// A `carts` key: the SDK's encoding of a `String` (its bytes, then 0).
pub fn cart_key(user: &str) -> Vec<u8> {
    let mut key = user.as_bytes().to_vec();
    key.push(0);
    key
}

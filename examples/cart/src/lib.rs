//! `cart`: a shopping-cart store on tables, with transactions. Roles
//! (`molt run`-style arguments):
//!
//! - `setup [STOCK]`: create the tables (`carts`, `stock`, `orders`) and
//!   put `STOCK` (default 100) of each item of [`ITEMS`] in stock.
//! - `shop USER ITEM N`: add `ITEM` to `USER`'s cart N times, each in its
//!   own transaction. Many shoppers may fill one cart at once: a
//!   transaction that read the cart before another changed it runs again,
//!   so no add is lost.
//! - `checkout USER`: in one transaction over three tables, take every
//!   item of the cart out of stock, record the order and empty the cart;
//!   if any item is short, nothing changes and the role fails with
//!   `out_of_stock: ITEM`. An unknown outcome (`no_quorum` while a group
//!   elects) is asked again, and a try that finds the cart emptied and
//!   the order recorded knows the earlier one took.
//! - `watch N`: subscribe to `orders` and log the next N orders as they
//!   commit, then end.
//! - `replicate [STOCK] [FRAGMENTS]`: as `setup`, but each table
//!   replicated on every node of the cluster: the store goes on while a
//!   majority of them is up, and `checkout` is one transaction over three
//!   replicated tables. With FRAGMENTS, `stock` is split by item into that
//!   many fragments, each kept on two nodes: a checkout then commits over
//!   every fragment its items are in, still as one transaction.
//! - `shop-exactly USER ITEM N`: as `shop`, but each add happens exactly
//!   once even when a commit's outcome is unknown (`no_quorum` while the
//!   table's group elects a new leader): the cart records how many adds
//!   it took, and an add asked again after an unknown outcome sees
//!   whether it took.

use molt_sdk::System;
use molt_sdk::table::{self, Copy, Event, Kind, Placement, Table, TableError, Tx};
use serde::{Deserialize, Serialize};

/// What a cart holds: items and how many of each, in the order first
/// added.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cart {
    /// (item, count).
    pub items: Vec<(String, u32)>,
    /// How many adds of `shop-exactly` the cart took.
    pub done: u32,
}

impl Cart {
    /// How many of `item` the cart holds.
    pub fn count(&self, item: &str) -> u32 {
        self.items
            .iter()
            .find(|(i, _)| i == item)
            .map_or(0, |(_, n)| *n)
    }
}

/// An order, as `checkout` records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// What was bought.
    pub items: Vec<(String, u32)>,
}

/// Carts by user.
pub static CARTS: Table<String, Cart> = Table::new("carts");
/// Items in stock, by item.
pub static STOCK: Table<String, u32> = Table::new("stock");
/// Each user's orders (a bag: one record per order).
pub static ORDERS: Table<String, Order> = Table::new("orders");

/// The items `setup` stocks.
pub const ITEMS: &[&str] = &["tea", "cake", "jam"];

fn run(args: Vec<String>) -> Result<(), String> {
    let arg = |i: usize| args.get(i).map(String::as_str);
    match arg(0) {
        Some("setup") => setup(
            arg(1)
                .map_or(Ok(100), str::parse)
                .map_err(|_| "setup takes a count")?,
        ),
        Some("shop") => {
            let (Some(user), Some(item), Some(n)) = (arg(1), arg(2), arg(3)) else {
                return Err("shop takes USER ITEM N".to_string());
            };
            shop(user, item, n.parse().map_err(|_| "N is a count")?)
        }
        Some("checkout") => checkout(arg(1).ok_or("checkout takes USER")?),
        Some("replicate") => replicate(
            arg(1)
                .map_or(Ok(100), str::parse)
                .map_err(|_| "replicate takes a count")?,
            arg(2)
                .map(str::parse)
                .transpose()
                .map_err(|_| "replicate takes a count of fragments")?,
        ),
        Some("shop-exactly") => {
            let (Some(user), Some(item), Some(n)) = (arg(1), arg(2), arg(3)) else {
                return Err("shop-exactly takes USER ITEM N".to_string());
            };
            shop_exactly(user, item, n.parse().map_err(|_| "N is a count")?)
        }
        Some("watch") => watch(
            arg(1)
                .map_or(Ok(1), str::parse)
                .map_err(|_| "watch takes a count")?,
        ),
        other => Err(format!(
            "unknown role {other:?}: setup, shop USER ITEM N, checkout USER, watch N, replicate [STOCK] [FRAGMENTS] or shop-exactly USER ITEM N"
        )),
    }
}

fn setup(stock: u32) -> Result<(), String> {
    CARTS.create(Kind::Set).map_err(|e| format!("carts: {e}"))?;
    STOCK.create(Kind::Set).map_err(|e| format!("stock: {e}"))?;
    ORDERS
        .create(Kind::Bag)
        .map_err(|e| format!("orders: {e}"))?;
    for item in ITEMS {
        STOCK
            .write(&item.to_string(), &stock)
            .map_err(|e| format!("stock {item}: {e}"))?;
    }
    molt_sdk::info!("cart: tables ready, {stock} of each item in stock");
    Ok(())
}

fn replicate(stock: u32, fragments: Option<u32>) -> Result<(), String> {
    let everywhere = || Placement::everywhere(Copy::Ram);
    CARTS
        .create_with(Kind::Set, everywhere())
        .map_err(|e| format!("carts: {e}"))?;
    let stock_placement = match fragments {
        Some(n) => everywhere().fragments(n, 2),
        None => everywhere(),
    };
    STOCK
        .create_with(Kind::Set, stock_placement)
        .map_err(|e| format!("stock: {e}"))?;
    ORDERS
        .create_with(Kind::Bag, everywhere())
        .map_err(|e| format!("orders: {e}"))?;
    // One transaction over the stock: every item or none.
    table::transaction(|tx| {
        for item in ITEMS {
            tx.write(&STOCK, &item.to_string(), &stock)?;
        }
        Ok(())
    })
    .map_err(|e| format!("stock: {e}"))?;
    molt_sdk::info!("cart: tables replicated on every node, {stock} of each item in stock");
    Ok(())
}

fn shop(user: &str, item: &str, n: u32) -> Result<(), String> {
    let user = user.to_string();
    for _ in 0..n {
        table::transaction(|tx| {
            let mut cart = tx.read(&CARTS, &user)?.unwrap_or_default();
            match cart.items.iter_mut().find(|(i, _)| i == item) {
                Some((_, count)) => *count += 1,
                None => cart.items.push((item.to_string(), 1)),
            }
            tx.write(&CARTS, &user, &cart)
        })
        .map_err(|e| format!("add {item}: {e}"))?;
    }
    Ok(())
}

fn shop_exactly(user: &str, item: &str, n: u32) -> Result<(), String> {
    let user = user.to_string();
    for add in 1..=n {
        // An unknown outcome is asked again (for up to about 30 s): the
        // transaction sees whether the add took.
        let mut tries = 0;
        loop {
            let outcome = table::transaction(|tx| {
                let mut cart = tx.read(&CARTS, &user)?.unwrap_or_default();
                if cart.done >= add {
                    return Ok(());
                }
                match cart.items.iter_mut().find(|(i, _)| i == item) {
                    Some((_, count)) => *count += 1,
                    None => cart.items.push((item.to_string(), 1)),
                }
                cart.done = add;
                tx.write(&CARTS, &user, &cart)
            });
            match outcome {
                Ok(()) => break,
                Err(table::Error::Table(TableError::NoQuorum | TableError::Unavailable { .. }))
                    if tries < 300 =>
                {
                    tries += 1;
                    molt_sdk::sleep(std::time::Duration::from_millis(100));
                }
                Err(e) => return Err(format!("add {item} #{add}: {e}")),
            }
        }
    }
    molt_sdk::info!("cart: {user}'s {n} adds of {item} done, each once");
    Ok(())
}

fn checkout(user: &str) -> Result<(), String> {
    let user = user.to_string();
    // An unknown outcome (`no_quorum` or `unavailable` while a group
    // elects a new leader after a node's loss) is asked again for up to
    // about 30 s. A try after one whose outcome was unknown that finds the
    // cart empty and an order recorded knows the earlier try took.
    let mut tries = 0;
    loop {
        let retried = tries > 0;
        let outcome = table::transaction(|tx: &mut Tx| {
            let cart = tx.read(&CARTS, &user)?.unwrap_or_default();
            if cart.items.is_empty() {
                if retried && let Some(order) = tx.read(&ORDERS, &user)? {
                    return Ok(order);
                }
                return table::cancel("the cart is empty");
            }
            for (item, n) in &cart.items {
                let left = tx.read(&STOCK, item)?.unwrap_or(0);
                if left < *n {
                    // Nothing of this transaction is written, the stock
                    // taken above included.
                    return table::cancel(format!("out_of_stock: {item}"));
                }
                tx.write(&STOCK, item, &(left - n))?;
            }
            let order = Order {
                items: cart.items.clone(),
            };
            tx.write(&ORDERS, &user, &order)?;
            tx.delete(&CARTS, &user)?;
            Ok(order)
        });
        match outcome {
            Ok(order) => {
                molt_sdk::info!("cart: {user} bought {:?}", order.items);
                return Ok(());
            }
            Err(table::Error::Table(TableError::NoQuorum | TableError::Unavailable { .. }))
                if tries < 300 =>
            {
                tries += 1;
                molt_sdk::sleep(std::time::Duration::from_millis(100));
            }
            Err(table::Error::Cancelled(why)) => return Err(why),
            Err(e) => return Err(format!("checkout: {e}")),
        }
    }
}

fn watch(n: u32) -> Result<(), String> {
    ORDERS.subscribe().map_err(|e| format!("subscribe: {e}"))?;
    let mut seen = 0;
    while seen < n {
        let envelope = molt_sdk::receive();
        let Some(System::Table(Event::Committed { index, changes, .. })) = envelope.system() else {
            continue;
        };
        for change in changes {
            if let table::Change::Put { key, value } = change {
                let user: String = table::event_key(&key).map_err(|e| e.to_string())?;
                let order: Order = table::event_value(&value).map_err(|e| e.to_string())?;
                molt_sdk::info!("cart: order {index}: {user} bought {:?}", order.items);
                seen += 1;
            }
        }
    }
    Ok(())
}

molt_sdk::main!(run);

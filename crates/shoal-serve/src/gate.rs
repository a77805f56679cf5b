//! The connection caps: a [`Ticket`] for each connection held, refused beyond the total or
//! the per-address cap.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Counts the connections held, in all and by client address.
#[derive(Clone)]
pub(crate) struct Gate {
    inner: Arc<Inner>,
}

struct Inner {
    max_total: usize,
    max_per_address: usize,
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

impl Gate {
    pub(crate) fn new(max_total: usize, max_per_address: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                max_total,
                max_per_address,
                held: Mutex::default(),
            }),
        }
    }

    /// A ticket for one more connection from `address`, or `None` beyond a cap.
    pub(crate) fn admit(&self, address: IpAddr) -> Option<Ticket> {
        let address = address.to_canonical();
        let mut held = self.inner.held.lock().expect("connection gate lock");
        if held.total >= self.inner.max_total {
            return None;
        }
        let from = held.by_address.entry(address).or_default();
        if *from >= self.inner.max_per_address {
            return None;
        }
        *from += 1;
        held.total += 1;
        Some(Ticket {
            gate: self.clone(),
            address,
        })
    }
}

/// One connection held; given back when dropped.
pub(crate) struct Ticket {
    gate: Gate,
    address: IpAddr,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut held = self.gate.inner.held.lock().expect("connection gate lock");
        held.total -= 1;
        if let Some(from) = held.by_address.get_mut(&self.address) {
            *from -= 1;
            if *from == 0 {
                held.by_address.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold_and_tickets_give_back() {
        let gate = Gate::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = gate.admit(a).unwrap();
        let _a2 = gate.admit(a).unwrap();
        // The same address, also as an IPv4-mapped IPv6 one, is over its cap.
        assert!(gate.admit(a).is_none());
        assert!(gate.admit("::ffff:10.0.0.1".parse().unwrap()).is_none());
        let _b1 = gate.admit(b).unwrap();
        // Three in all: even a new address waits.
        assert!(gate.admit("10.0.0.3".parse().unwrap()).is_none());
        drop(a1);
        assert!(gate.admit(a).is_some());
        assert!(gate.inner.held.lock().unwrap().by_address.len() == 2);
    }
}

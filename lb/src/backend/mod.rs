//! Backends: the pool of servers a listener or route sends to, the balancer that picks one, and
//! the health checks that take servers in and out.

pub(crate) mod balance;
pub(crate) mod health;
pub(crate) mod pool;

//! duet-engine-epoll: the readiness engine, a loop per thread over one of four
//! selectors ([`Readiness`]): edge-triggered epoll (the production engine), and the
//! classic baselines level-triggered epoll, poll and select. One loop, generic over the
//! selector (`selector/`); what differs is only how readiness is learnt.
//!
//! Each worker is a [`WorkerCore`] (from `duet-engine`, which also holds the engine
//! contract this crate meets: the SO_REUSEPORT listener, a [`Waker`] for shutdown,
//! the slab of connections, the deadlines, the accept policy, the drain and the
//! counters) plus a selector, the per-thread read buffer, and per connection its socket
//! and what the selector last said of it. A connection is registered once
//! (epoll: `EPOLLIN|EPOLLOUT|EPOLLRDHUP|EPOLLET`) and its readiness is remembered in
//! its slot (a level-triggered selector watches it for what it needs instead):
//! reads go until EAGAIN within a per-wakeup budget (a flooding socket is requeued, not
//! allowed to starve the others), and all queued output leaves in one `sendmsg` per
//! flush. Bodies streamed from disk go out with `sendfile` from the shared descriptor,
//! a bounded chunk per call and a bounded amount per wakeup, and only as fast as the
//! socket takes them: nothing of a file is ever buffered in user space. Reads land in
//! one per-thread buffer; an idle keep-alive connection holds no buffer at all. The
//! HTTP work is `duet_http::Connection`'s; this crate only moves bytes and keeps time.
//! The loop is in `worker.rs`; all `unsafe` is in `sys.rs`.
//!
//! [`Waker`]: duet_engine::Waker
//! [`WorkerCore`]: duet_engine::WorkerCore

#![warn(missing_docs)]

mod selector;
mod sys;
mod worker;

use duet_engine::{run_workers, ServeConfig, Shutdown, Stats};
use duet_http::Site;
use selector::Selector;
use std::io;
use std::sync::Arc;

/// The selector a readiness engine waits with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// Edge-triggered epoll: registered once, each change reported once.
    Epoll,
    /// Level-triggered epoll: interest follows need through `epoll_ctl`.
    EpollLt,
    /// poll(2) over an incrementally kept `pollfd` array.
    Poll,
    /// select(2) over `fd_set`s rebuilt per wait; descriptors below FD_SETSIZE only.
    Select,
}

impl Readiness {
    /// The engine name (`--engine`, logs, metrics).
    pub fn name(self) -> &'static str {
        match self {
            Readiness::Epoll => selector::Epoll::NAME,
            Readiness::EpollLt => selector::EpollLt::NAME,
            Readiness::Poll => selector::Poll::NAME,
            Readiness::Select => selector::Select::NAME,
        }
    }
}

/// Serves with `readiness` until `shutdown` (see the engine contract in `duet_engine`).
pub fn serve(config: ServeConfig, site: Arc<Site>, shutdown: Shutdown, readiness: Readiness) -> io::Result<Stats> {
    match readiness {
        Readiness::Epoll => serve_with::<selector::Epoll>(config, site, shutdown),
        Readiness::EpollLt => serve_with::<selector::EpollLt>(config, site, shutdown),
        Readiness::Poll => serve_with::<selector::Poll>(config, site, shutdown),
        Readiness::Select => serve_with::<selector::Select>(config, site, shutdown),
    }
}

fn serve_with<S: Selector>(config: ServeConfig, site: Arc<Site>, shutdown: Shutdown) -> io::Result<Stats> {
    run_workers(S::NAME, config, site, &shutdown, |setup| worker::Worker::<S>::new(setup)?.run())
}

//! duet-engine-epoll: an edge-triggered epoll readiness loop, one per thread.
//!
//! Each worker owns a SO_REUSEPORT listener, an epoll instance, a [`Waker`] for
//! shutdown, a slab of connections and its deadlines (all from `duet-engine`, which
//! also holds the engine contract this crate meets). A connection is registered once
//! (`EPOLLIN|EPOLLOUT|EPOLLRDHUP|EPOLLET`) and its readiness is remembered in its slot:
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

mod selector;
mod sys;
mod worker;

use duet_engine::{run_workers, ServeConfig, Shutdown, Stats};
use duet_http::Site;
use std::io;
use std::sync::Arc;

/// Serves until `shutdown` (see the engine contract in `duet_engine`).
pub fn serve(config: ServeConfig, site: Arc<Site>, shutdown: Shutdown) -> io::Result<Stats> {
    run_workers(<selector::Epoll as selector::Selector>::NAME, config, site, &shutdown, |setup| {
        worker::Worker::<selector::Epoll>::new(setup)?.run()
    })
}

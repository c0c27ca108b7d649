//! duet-engine-epoll: the edge-triggered epoll engine (in progress).

use duet_http::{Report, ServeConfig, Shutdown, Site};
use std::io;
use std::sync::Arc;

/// Serves until `shutdown` (see the engine contract in `duet_http`).
pub fn serve(_config: ServeConfig, _site: Arc<Site>, _shutdown: Shutdown) -> io::Result<Report> {
    Err(io::Error::other("not yet"))
}

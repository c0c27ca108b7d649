//! duet-engine-uring: the io_uring completion engine (in progress).

use duet_http::{Report, ServeConfig, Shutdown, Site, UringOptions};
use std::fmt;
use std::io;
use std::sync::Arc;

/// Why io_uring cannot be used here.
#[derive(Debug)]
pub struct ProbeError(String);

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProbeError {}

/// Checks that io_uring works here with everything the engine needs.
pub fn probe(_opts: &UringOptions) -> Result<(), ProbeError> {
    Err(ProbeError("the io_uring engine is not built yet".into()))
}

/// Serves until `shutdown` (see the engine contract in `duet_http`).
pub fn serve(_config: ServeConfig, _site: Arc<Site>, _shutdown: Shutdown) -> io::Result<Report> {
    Err(io::Error::other("the io_uring engine is not built yet"))
}

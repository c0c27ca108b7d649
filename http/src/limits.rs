//! Limits on what one connection may make the server hold or wait for.

use std::time::Duration;

/// The hard ceiling for [`Limits::max_headers`]: the header array is on the stack.
pub const MAX_HEADERS_CEILING: usize = 256;

/// Per-connection limits. Every one turns into a status code or a close, never into
/// unbounded memory.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request head (request line + fields). Longer: 414 if the request line
    /// alone does not fit, 431 otherwise.
    pub max_head: usize,
    /// Most header fields in one request (431 beyond). At most 256 (`MAX_HEADERS_CEILING`).
    pub max_headers: usize,
    /// Largest request body that is read and discarded (413 beyond).
    pub max_body: u64,
    /// Time from the first byte of a request head to its end (absolute, so a client
    /// trickling bytes cannot hold a connection forever: slowloris). Also the longest
    /// pause between two reads of a request body.
    pub header_timeout: Duration,
    /// Time from the end of a request head to the end of its body (absolute, so a
    /// client sending a few bytes now and then cannot hold a connection forever);
    /// 408 when it passes.
    pub body_timeout: Duration,
    /// How long an idle keep-alive connection is kept.
    pub keepalive_timeout: Duration,
    /// How long queued output may make no progress before the connection is dropped.
    pub send_timeout: Duration,
    /// After a close is decided and the write side shut down, how long unread input is
    /// still drained so the peer gets the response rather than a reset.
    pub linger_timeout: Duration,
    /// Queued output above which the connection stops reading and parsing
    /// (backpressure against pipelining floods).
    pub max_output: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: 8 * 1024,
            max_headers: 64,
            max_body: 1024 * 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            linger_timeout: Duration::from_secs(5),
            max_output: 256 * 1024,
        }
    }
}

impl Limits {
    /// Checks the limits for values that cannot work, with a message for the user.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_head < 64 {
            return Err(format!("max head size {} is below the minimum of 64 bytes", self.max_head));
        }
        if self.max_headers == 0 || self.max_headers > MAX_HEADERS_CEILING {
            return Err(format!("max headers {} must be between 1 and {MAX_HEADERS_CEILING}", self.max_headers));
        }
        if self.max_output < 1024 {
            return Err(format!("output queue cap {} is below the minimum of 1024 bytes", self.max_output));
        }
        for (name, d) in [
            ("header timeout", self.header_timeout),
            ("body timeout", self.body_timeout),
            ("keep-alive timeout", self.keepalive_timeout),
            ("send timeout", self.send_timeout),
        ] {
            if d.is_zero() {
                return Err(format!("{name} must be greater than zero"));
            }
        }
        Ok(())
    }
}

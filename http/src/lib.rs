//! duet-http: the sans-IO HTTP/1.1 layer shared by both of duet's engines.
//!
//! This crate never touches a socket, a file descriptor or a clock. Bytes and time go
//! in; response bytes and decisions come out. Both engines drive exactly this code, so
//! a behaviour exists once and is tested once.
//!
//! ```text
//!            engine (epoll or io_uring)                     duet-http
//!   socket ──recv──▶ &[u8] ──────────────▶ Connection::handle_input(ctx, bytes)
//!                                              │ parse, frame bodies, route
//!                                              ▼
//!   socket ◀─writev/sendmsg── IoSlices ◀── Connection::poll_output()   (OutBuf::fill)
//!   socket ◀─sendfile/splice── file range ◀┘                          (OutBuf::front_file)
//!                       n bytes sent ─────▶ Connection::handle_sent(ctx, n)
//!   EOF / RDHUP ───────────────────────────▶ Connection::handle_eof(ctx)
//!   deadline due ──────────────────────────▶ Connection::handle_timeout(ctx)
//!   Connection::poll_timeout() ─▶ (Timer, Instant) ─▶ the engine's deadlines
//! ```
//!
//! # Who does what
//!
//! The engines (`duet-engine-epoll`, `duet-engine-uring`) own sockets, threads and
//! time; the contract they meet when driving a [`Connection`] is written down in the
//! `duet-engine` crate's docs. This crate owns the protocol: [`Connection`], the
//! per-thread [`Context`], what is served ([`Site`]), the [`Limits`], the Date cache
//! and the HTTP counters ([`HttpStats`]). It never spawns a thread, opens a socket or
//! reads a clock.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod accept_encoding;
mod access_log;
mod chunked;
mod conn;
mod context;
mod date;
mod echo;
mod headers;
mod limits;
mod line;
mod out;
mod reject;
mod request;
mod site;
mod static_files;
#[cfg(feature = "testing")]
pub mod testing;

pub use accept_encoding::Coding;
pub use conn::{Connection, Timer};
pub use context::{Context, HttpStats, MetricsSource};
pub use date::DateCache;
pub use headers::HeaderError;
pub use limits::Limits;
pub use out::{BufPool, OutBuf};
pub use site::{Body, FileMeta, Prerendered, Site, SiteBuilder, Variant};

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
//! reads a clock. (The one exception is test code: the `testing` feature's model engine,
//! `duet_http::testing`, built only for duet-http's tests and the fuzz targets, reads a
//! clock once for its virtual time and reads files as an engine would; its docs say so.)
//!
//! # Layers
//!
//! The modules form layers, drawn here with the lowest at the bottom. A module imports
//! only from the layers below its own, or from a module to its left in its own layer:
//! so parsing never reaches into routing, and nothing reaches up into the connection.
//!
//! ```text
//!   access_log, context, conn        the connection state machine, per-thread state
//!   request, route                   parse a head (request), decide its answer (route)
//!   static_files, echo               answers made per request, from a file or the request
//!   site                             the routing table (Site, Snapshot), swappable
//!   accept_encoding, chunked, out    content negotiation, chunked bodies, output queues
//!   response                         Prerendered, Body, reason phrases, Answer
//!   reject, line, headers, limits,   rejections, the request line, field helpers (trim,
//!   date, stats                      list_items), limits, the Date cache, the counters
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

// The layers of the crate docs, bottom-up, one group each.
mod date;
mod headers;
mod limits;
mod line;
mod reject;
mod stats;

mod response;

mod accept_encoding;
mod chunked;
mod out;

mod site;

mod echo;
mod static_files;
#[cfg(feature = "testing")]
pub mod testing;

mod request;
mod route;

mod access_log;
mod conn;
mod context;

pub use accept_encoding::Coding;
pub use conn::{Connection, Timer};
pub use context::Context;
pub use date::DateCache;
pub use headers::{HeaderError, SetInstead};
pub use limits::Limits;
pub use out::{BufPool, OutBuf};
pub use response::{Body, Prerendered};
pub use site::{BuiltFile, FileMeta, Site, SiteBuilder, Variant};
pub use stats::{HttpStats, MetricsSource};

//! What is served: a table from path to a pre-rendered response, swappable at run time.
//!
//! A [`Site`] is the handle every worker shares. It holds the current immutable
//! [`Snapshot`] (the routing table) and a generation counter. Each worker's
//! [`Context`](crate::Context) keeps its own `Arc` of the snapshot and, once per loop
//! turn, compares one relaxed atomic load of the generation with the one it has: only
//! when they differ does it take the lock and pick up the new snapshot. So a reload
//! ([`Site::replace`]) costs the hot path nothing, requests already answered keep the
//! bodies they hold, and requests parsed afterwards see the new table.
//!
//! The old table goes as soon as nothing uses it: a worker lets go of it at its next
//! loop turn, and a reload wakes every worker ([`Site::on_replace`]) so that turn comes
//! at once even on a worker with no traffic; responses in flight hold only the bodies
//! they send. A file streamed by the old table is closed when the last of them is sent.

use crate::accept_encoding::Coding;
use crate::headers::{check_response_header, HeaderError};
use crate::response::{Body, Prerendered, ERROR_STATUSES};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// The Allow list of a static path.
const STATIC_ALLOW: &str = "Allow: GET, HEAD, OPTIONS";

/// The Allow list of an echo route.
const ECHO_ALLOW: &str = "Allow: GET, HEAD, OPTIONS, POST, PUT, PATCH, DELETE";

/// Up to this many routes are matched by a linear scan instead of a hash.
const FEW_ROUTES: usize = 8;

/// A file served with validators: `ETag`, `Last-Modified`, conditional requests and
/// byte ranges; and, when it has precompressed variants, content negotiation.
#[derive(Debug)]
pub(crate) struct FileEntry {
    /// The full `200` response (headers include ETag, Last-Modified, Accept-Ranges).
    pub(crate) ok: Arc<Prerendered>,
    /// The `304` response: ETag and Last-Modified, no body.
    pub(crate) not_modified: Arc<Prerendered>,
    /// The entity-tag, quotes included.
    pub(crate) etag: Box<str>,
    /// Last modification, whole seconds since the epoch.
    pub(crate) modified: u64,
    pub(crate) last_modified: Box<str>,
    pub(crate) content_type: Box<str>,
    /// `Content-Encoding` of this representation (a precompressed variant).
    pub(crate) coding: Option<Coding>,
    /// Header lines every response about this file carries besides the validators:
    /// `Vary: Accept-Encoding` when it has variants (or is one), and `--header` lines.
    /// Used by the answers rendered per request (206, 416, 406).
    pub(crate) lines: Box<[Box<str>]>,
    /// The precompressed variants, br before gzip (the order of preference at equal
    /// weight); empty when there are none, and then Accept-Encoding is never read.
    pub(crate) variants: Box<[(Coding, FileEntry)]>,
    /// The codings of `variants`, in the same order.
    pub(crate) codings: Box<[Coding]>,
}

impl FileEntry {
    /// The header lines of a response with this file's (possibly partial) content.
    pub(crate) fn content_lines(&self) -> impl Iterator<Item = &str> {
        let coding = self.coding.map(|c| match c {
            Coding::Br => "Content-Encoding: br",
            Coding::Gzip => "Content-Encoding: gzip",
        });
        coding.into_iter().chain(self.lines.iter().map(|l| &**l))
    }
}

/// A file as one site serves it: its responses rendered, with its variants and the
/// header lines of that site. [`SiteBuilder::built_file`] serves it unchanged in another
/// site, so a reload that finds a file unchanged neither renders it again nor frees
/// the old rendering on a worker thread.
#[derive(Clone, Debug)]
pub struct BuiltFile(Arc<FileEntry>);

/// The same rendering (one shared by two sites), not merely equal content.
impl PartialEq for BuiltFile {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl BuiltFile {
    /// The codings of its precompressed variants, br before gzip.
    pub fn codings(&self) -> &[Coding] {
        &self.0.codings
    }
}

/// What a path maps to.
#[derive(Clone, Debug)]
pub(crate) enum Entry {
    /// A fixed response (`--route`, the built-in hello).
    Fixed(Arc<Prerendered>),
    /// A file with validators and ranges.
    File(Arc<FileEntry>),
    /// A directory asked for without its trailing slash: 301 to the slashed path.
    Redirect,
    /// An echo route (`--echo`): the request body, or head, sent back.
    Echo,
}

/// Which `Allow` list an `OPTIONS` answer carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Allow {
    /// A static path: `GET, HEAD, OPTIONS`.
    Static,
    /// An echo route: those and the methods it echoes.
    Echo,
    /// `OPTIONS *`: every method some path of this site answers.
    Server,
}

/// `a == b`, without a call for paths of a few bytes.
#[inline(always)]
fn same_path(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && if a.len() <= 8 { a.iter().zip(b).all(|(x, y)| x == y) } else { a == b }
}

/// One immutable version of the site: routes and error responses.
#[derive(Debug)]
pub(crate) struct Snapshot {
    routes: HashMap<Box<[u8]>, Entry>,
    /// The same routes as a list when there are at most `FEW_ROUTES` of them.
    few: Vec<(Box<[u8]>, Entry)>,
    errors: Vec<Arc<Prerendered>>,
    /// `204` answers to OPTIONS, by [`Allow`] (in its order).
    options: [Arc<Prerendered>; 3],
    /// `405` on an echo route, with its Allow list.
    echo_405: Arc<Prerendered>,
    /// The `--header` lines, for the answers rendered per request (301, 206...).
    headers: Box<[Box<str>]>,
}

impl Snapshot {
    /// What a decoded path maps to, if anything.
    #[inline(always)]
    pub(crate) fn lookup(&self, path: &[u8]) -> Option<&Entry> {
        // A handful of routes is the common case (benchmarks): comparing a few short
        // slices costs less than hashing one, and a short one byte by byte less than
        // a call to memcmp.
        if !self.few.is_empty() || self.routes.is_empty() {
            return self.few.iter().find(|(p, _)| same_path(p, path)).map(|(_, r)| r);
        }
        self.routes.get(path)
    }

    /// The pre-rendered error response for `status` (one of `ERROR_STATUSES`).
    pub(crate) fn error(&self, status: u16) -> &Arc<Prerendered> {
        let i = ERROR_STATUSES.iter().position(|&s| s == status).unwrap_or(0);
        &self.errors[i]
    }

    /// The `204` answer to OPTIONS, with the `Allow` list of `allow`.
    pub(crate) fn options(&self, allow: Allow) -> &Arc<Prerendered> {
        &self.options[allow as usize]
    }

    /// The `405` answer on an echo route.
    pub(crate) fn echo_405(&self) -> &Arc<Prerendered> {
        &self.echo_405
    }

    /// The configured response header lines (`Name: value`).
    pub(crate) fn headers(&self) -> impl Iterator<Item = &str> {
        self.headers.iter().map(|l| &**l)
    }
}

/// What is served, shared by all worker threads. Read-only on the hot path; the whole
/// table can be swapped with [`Site::replace`] while serving.
pub struct Site {
    current: Mutex<Arc<Snapshot>>,
    /// Bumped (under the lock) by every `replace`.
    generation: AtomicU64,
    /// Called after every `replace` ([`Site::on_replace`]).
    on_replace: Mutex<Vec<ReplaceHook>>,
}

type ReplaceHook = Box<dyn Fn() + Send + Sync>;

impl std::fmt::Debug for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Site").field("generation", &self.generation()).field("routes", &self.len()).finish()
    }
}

impl Site {
    /// Starts an empty site.
    pub fn builder() -> SiteBuilder {
        SiteBuilder { routes: HashMap::new(), headers: Vec::new(), file_headers: Vec::new() }
    }

    /// The default site: `GET /` answers `200 text/plain; charset=utf-8` `Hello, World!`.
    pub fn hello() -> Self {
        Site::builder().hello().build()
    }

    fn from_snapshot(snapshot: Snapshot) -> Self {
        Site {
            current: Mutex::new(Arc::new(snapshot)),
            generation: AtomicU64::new(0),
            on_replace: Mutex::new(Vec::new()),
        }
    }

    /// Swaps in the table of `next` atomically. Responses already queued keep their
    /// bodies; each worker picks up the new table at its next loop turn, so every
    /// request parsed after that sees it. Then calls the [`Site::on_replace`] hooks.
    pub fn replace(&self, next: Site) {
        let snapshot = next.snapshot().0;
        let old = {
            let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
            let old = std::mem::replace(&mut *current, snapshot);
            self.generation.fetch_add(1, Ordering::Release);
            old
        };
        drop(old); // outside the lock: the last reference may close files
        let hooks = self.on_replace.lock().unwrap_or_else(|e| e.into_inner());
        for hook in hooks.iter() {
            hook();
        }
    }

    /// Registers `hook`, called after every [`Site::replace`]: the engines wake their
    /// workers with it, so each lets go of the old table at once rather than at its
    /// next request (an idle worker would keep the old table's open files forever).
    pub fn on_replace(&self, hook: impl Fn() + Send + Sync + 'static) {
        let mut hooks = self.on_replace.lock().unwrap_or_else(|e| e.into_inner());
        hooks.push(Box::new(hook));
    }

    /// The file served at `path` (decoded, as given to [`SiteBuilder::file`]), if a
    /// file is served there.
    pub fn built_file(&self, path: &str) -> Option<BuiltFile> {
        match self.snapshot().0.lookup(path.as_bytes()) {
            Some(Entry::File(entry)) => Some(BuiltFile(Arc::clone(entry))),
            _ => None,
        }
    }

    /// How many times the table has been replaced.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// The current table and its generation (read together under the lock).
    pub(crate) fn snapshot(&self) -> (Arc<Snapshot>, u64) {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        (Arc::clone(&current), self.generation.load(Ordering::Relaxed))
    }

    /// Number of paths served (files, aliases and directory redirects included).
    pub fn len(&self) -> usize {
        self.snapshot().0.routes.len()
    }

    /// True when no path is served.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The validators of a file served with [`SiteBuilder::file`].
#[derive(Clone, Debug)]
pub struct FileMeta {
    /// The opaque part of a strong entity-tag, without quotes: visible ASCII other
    /// than `"` (anything else is dropped).
    pub etag: String,
    /// Last modification time (sent as `Last-Modified`, compared with
    /// `If-Modified-Since` at one-second resolution).
    pub modified: SystemTime,
}

/// A precompressed variant of a file ([`SiteBuilder::file_with_variants`]): the same
/// content in a content coding, with its own validators.
#[derive(Clone, Debug)]
pub struct Variant {
    /// Its content coding.
    pub coding: Coding,
    /// The encoded bytes.
    pub body: Body,
    /// Its own validators (a distinct entity-tag from the identity's).
    pub meta: FileMeta,
}

/// Builds a [`Site`].
#[derive(Debug)]
pub struct SiteBuilder {
    routes: HashMap<Box<[u8]>, Entry>,
    /// `--header` lines, rendered into every response added after them.
    headers: Vec<Box<str>>,
    /// Lines rendered only into the responses about files added after them.
    file_headers: Vec<Box<str>>,
}

impl SiteBuilder {
    /// Adds `line` (`Name: value`) to every response of the site: routes, files
    /// (200, 206, 304, 416), redirects, OPTIONS and error responses. It is rendered
    /// into the pre-rendered heads, so it costs a request nothing; it applies to what
    /// is added after it, so add headers first. Refused: a malformed line, and the
    /// fields duet sets itself ([`HeaderError`]).
    pub fn header(mut self, line: &str) -> Result<Self, HeaderError> {
        self.headers.push(check_response_header(line)?.into());
        Ok(self)
    }

    /// Adds `line` (`Name: value`) to every response about a file added after it
    /// ([`SiteBuilder::file`]: 200, 206, 304, 416, 406), before the [`SiteBuilder::header`]
    /// lines; routes, redirects and errors do not get it. Checked as `header` checks.
    pub fn file_header(mut self, line: &str) -> Result<Self, HeaderError> {
        self.file_headers.push(check_response_header(line)?.into());
        Ok(self)
    }

    /// The `--header` lines followed by `more`.
    fn lines<'a>(&'a self, more: &[&'a str]) -> Vec<&'a str> {
        more.iter().copied().chain(self.headers.iter().map(|l| &**l)).collect()
    }

    /// Serves `body` with `content_type` and status 200 at `path` (decoded, starting
    /// with `/`). A later entry for the same path replaces an earlier one. The body is
    /// bytes in memory or a file streamed from disk ([`Body::file`]).
    pub fn route(mut self, path: &str, content_type: &str, body: impl Into<Body>) -> Self {
        let resp = Prerendered::new(200, content_type, body, self.lines(&[]));
        self.routes.insert(path.as_bytes().into(), Entry::Fixed(Arc::new(resp)));
        self
    }

    /// Adds the default route: `GET /` answers `200 text/plain; charset=utf-8`
    /// `Hello, World!` (typed as a `--route` text is).
    pub fn hello(self) -> Self {
        self.route("/", "text/plain; charset=utf-8", Bytes::from_static(b"Hello, World!"))
    }

    /// Serves a file at `path`: `200` with `ETag`, `Last-Modified` and
    /// `Accept-Ranges: bytes`; answers `If-None-Match`, `If-Modified-Since`, `Range` and
    /// `If-Range`. The body is bytes in memory or a file streamed from disk
    /// ([`Body::file`]); both are answered alike.
    pub fn file(self, path: &str, content_type: &str, body: impl Into<Body>, meta: &FileMeta) -> Self {
        self.file_with_variants(path, content_type, body, meta, Vec::new())
    }

    /// Like [`SiteBuilder::file`], with precompressed `variants` (one per coding; a
    /// later one for the same coding wins) chosen by the request's `Accept-Encoding`:
    /// each is served with `Content-Encoding`, the file's Content-Type and its own
    /// validators, and every response about the file says `Vary: Accept-Encoding`.
    pub fn file_with_variants(
        mut self,
        path: &str,
        content_type: &str,
        body: impl Into<Body>,
        meta: &FileMeta,
        variants: Vec<Variant>,
    ) -> Self {
        let mut by_coding: Vec<Variant> = Vec::new();
        for v in variants {
            by_coding.retain(|b| b.coding != v.coding);
            by_coding.push(v);
        }
        by_coding.sort_by_key(|v| v.coding);
        let vary = !by_coding.is_empty();
        let variants: Box<[(Coding, FileEntry)]> = by_coding
            .into_iter()
            .map(|v| (v.coding, self.file_entry(content_type, v.body, &v.meta, Some(v.coding), true, Box::default())))
            .collect();
        let entry = self.file_entry(content_type, body.into(), meta, None, vary, variants);
        self.routes.insert(path.as_bytes().into(), Entry::File(Arc::new(entry)));
        self
    }

    /// Serves at `path` a file built by another site ([`Site::built_file`]) as it was
    /// built there: the same responses, variants and header lines (so only for a site
    /// built with the same [`SiteBuilder::header`] and [`SiteBuilder::file_header`] lines).
    pub fn built_file(mut self, path: &str, file: BuiltFile) -> Self {
        self.routes.insert(path.as_bytes().into(), Entry::File(file.0));
        self
    }

    fn file_entry(
        &self,
        content_type: &str,
        body: Body,
        meta: &FileMeta,
        coding: Option<Coding>,
        vary: bool,
        variants: Box<[(Coding, FileEntry)]>,
    ) -> FileEntry {
        let opaque: String = meta.etag.chars().filter(|&c| c.is_ascii_graphic() && c != '"').collect();
        let etag = format!("\"{opaque}\"");
        let modified = meta.modified.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let last_modified = httpdate::fmt_http_date(UNIX_EPOCH + std::time::Duration::from_secs(modified));
        let etag_line = format!("ETag: {etag}");
        let lm_line = format!("Last-Modified: {last_modified}");
        let lines: Box<[Box<str>]> = vary
            .then_some("Vary: Accept-Encoding")
            .into_iter()
            .chain(self.file_headers.iter().map(|l| &**l))
            .chain(self.headers.iter().map(|l| &**l))
            .map(Box::from)
            .collect();
        let coding_line = coding.map(|c| format!("Content-Encoding: {}", c.name()));
        let mut ok_lines = vec![etag_line.as_str(), lm_line.as_str(), "Accept-Ranges: bytes"];
        ok_lines.extend(coding_line.as_deref());
        ok_lines.extend(lines.iter().map(|l| &**l));
        let ok = Prerendered::new(200, content_type, body, &ok_lines);
        let mut nm_lines = vec![etag_line.as_str(), lm_line.as_str()];
        nm_lines.extend(lines.iter().map(|l| &**l));
        let not_modified = Prerendered::bodiless(304, &nm_lines);
        let codings = variants.iter().map(|(c, _)| *c).collect();
        FileEntry {
            ok: Arc::new(ok),
            not_modified: Arc::new(not_modified),
            etag: etag.into(),
            modified,
            last_modified: last_modified.into(),
            content_type: content_type.into(),
            coding,
            lines,
            variants,
            codings,
        }
    }

    /// Serves at `path` whatever `existing` serves (a directory's `index.html` at the
    /// directory's slashed path). No-op when `existing` serves nothing.
    pub fn alias(mut self, path: &str, existing: &str) -> Self {
        if let Some(entry) = self.routes.get(existing.as_bytes()).cloned() {
            self.routes.insert(path.as_bytes().into(), entry);
        }
        self
    }

    /// Marks `path` (without its trailing slash) as a directory: it answers `301` with
    /// `Location:` the path with a slash appended (query kept).
    pub fn directory(mut self, path: &str) -> Self {
        let path = path.trim_end_matches('/');
        if !path.is_empty() {
            self.routes.insert(path.as_bytes().into(), Entry::Redirect);
        }
        self
    }

    /// Makes `path` (a directory's slashed path with no index) answer `403 Forbidden`,
    /// as nginx does when listing is off.
    pub fn forbidden(mut self, path: &str) -> Self {
        let resp = Prerendered::error(403, self.lines(&[]));
        self.routes.insert(path.as_bytes().into(), Entry::Fixed(Arc::new(resp)));
        self
    }

    /// Makes `path` an echo route: POST, PUT, PATCH and DELETE are answered `200` with
    /// the request body (and Content-Type); GET and HEAD with the request line and
    /// header fields as received.
    pub fn echo(mut self, path: &str) -> Self {
        self.routes.insert(path.as_bytes().into(), Entry::Echo);
        self
    }

    /// True when `path` serves something.
    pub fn contains(&self, path: &str) -> bool {
        self.routes.contains_key(path.as_bytes())
    }

    /// Number of paths added so far.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// True when nothing was added.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Finishes the site, rendering the error responses.
    pub fn build(self) -> Site {
        let errors = ERROR_STATUSES
            .iter()
            .map(|&s| {
                let extra: &[&str] = if s == 405 { &[STATIC_ALLOW] } else { &[] };
                Arc::new(Prerendered::error(s, self.lines(extra)))
            })
            .collect();
        let any_echo = self.routes.values().any(|e| matches!(e, Entry::Echo));
        let options = |allow| Arc::new(Prerendered::bodiless(204, self.lines(&[allow])));
        let options =
            [options(STATIC_ALLOW), options(ECHO_ALLOW), options(if any_echo { ECHO_ALLOW } else { STATIC_ALLOW })];
        let echo_405 = Arc::new(Prerendered::error(405, self.lines(&[ECHO_ALLOW])));
        let few = if self.routes.len() <= FEW_ROUTES {
            self.routes.iter().map(|(p, r)| (p.clone(), r.clone())).collect()
        } else {
            Vec::new()
        };
        let headers = self.headers.into_boxed_slice();
        Site::from_snapshot(Snapshot { routes: self.routes, few, errors, options, echo_405, headers })
    }
}

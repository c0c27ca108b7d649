//! Static content: `--route` and `--dir` read from disk and turned into a [`Site`].
//!
//! All file I/O happens here, at start, on SIGHUP and when the watcher (`watch.rs`)
//! applies a change set; duet-http only ever sees bytes and open files. Every body up to `--max-cached-file`, while the total stays within
//! `--cache-budget`, is loaded once into a shared `Bytes` and its headers rendered once,
//! so such a file costs a request no more than the built-in `Hello, World!`. Larger
//! files, and every file past the budget, are opened here and streamed from disk by the
//! engine at request time (same pre-rendered headers and validators); a reload opens
//! them again.
//!
//! A reload after a change ([`reload_changed`]) walks the tree again but reads only what
//! changed: a file whose device, inode, size, modification and change times are those
//! it had at the last load keeps the body it had (the same bytes in memory, or the same
//! open descriptor). Files still being written ([`Reuse::held`]) keep their previous
//! version, or are not served yet when new.
//!
//! Only what is loaded can be served: the site is a table of the files found under
//! `--dir` (symlinks that leave it refused, dotfiles skipped unless `--dotfiles`), so
//! no request path, however encoded, can reach anything else. The same holds for what
//! `--precompressed` and `--list-dirs` add: a variant is a served sibling file, and a
//! listing names exactly the entries of the table.

use bytes::Bytes;
use duet_http::{Body, Coding, FileMeta, HeaderError, SetInstead, Site, SiteBuilder, Variant};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};
use tracing::{debug, warn};

/// What `duet serve` was asked to serve.
#[derive(Clone, Debug, Default)]
pub struct ContentConfig {
    /// `PATH=TEXT` or `PATH=@FILE`.
    pub routes: Vec<String>,
    /// `PATH=MIME`.
    pub route_types: Vec<String>,
    pub dir: Option<PathBuf>,
    pub dotfiles: bool,
    /// Serve `FILE.br` / `FILE.gz` siblings as variants of FILE.
    pub precompressed: bool,
    /// An HTML index for a directory without index.html (else 403).
    pub list_dirs: bool,
    /// `--header` lines, `Name: value`.
    pub headers: Vec<String>,
    pub max_cached_file: u64,
    pub cache_budget: u64,
    /// `--echo` paths.
    pub echoes: Vec<String>,
}

/// The freshness duet gives files under `--dir` unless a `--header` sets Cache-Control:
/// content changes on disk while served, so caches must revalidate every time (a
/// conditional request, answered `304` from the pre-rendered response while the file is
/// unchanged) rather than guess a lifetime from Last-Modified.
pub const DEFAULT_FILE_CACHE_CONTROL: &str = "Cache-Control: no-cache";

/// True when one of the `--header` lines sets the field `name`.
fn sets_header(lines: &[String], name: &str) -> bool {
    lines.iter().any(|l| l.split_once(':').is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case(name)))
}

impl ContentConfig {
    /// No `--route` and no `--dir`: the built-in `Hello, World!` site (echo routes, if
    /// any, are added to it).
    pub fn is_default(&self) -> bool {
        self.routes.is_empty() && self.dir.is_none() && self.route_types.is_empty()
    }
}

/// A loaded site and what went into it.
pub struct Loaded {
    pub site: Site,
    /// Files under `--dir`.
    pub files: usize,
    pub routes: usize,
    /// `--echo` routes.
    pub echoes: usize,
    /// Bytes held in memory (cached files and routes).
    pub bytes: u64,
    /// Bodies (files and `@FILE` routes) streamed from disk, and their total size.
    pub streamed: usize,
    pub streamed_bytes: u64,
    /// Files served with a precompressed variant.
    pub precompressed: usize,
    /// Every file body loaded, with the version it was loaded at: what the next
    /// [`reload_changed`] reuses. Keyed by what serves it: a file under `--dir` by its
    /// URL path (so a link added to a file already served is a change), a `@FILE`
    /// route by `@` and its path.
    pub bodies: HashMap<OsString, LoadedFile>,
    /// The directories walked under `--dir` (real paths, the root first): what the
    /// watcher watches.
    pub dirs: Vec<PathBuf>,
    /// Their URL paths, with the trailing slash.
    pub dir_urls: Vec<String>,
    /// Files left at their previous version (or not served yet) because they changed
    /// too recently ([`Reuse::settle`]): the caller tries again.
    pub unsettled: usize,
}

/// One version of a file on disk. Writing a file changes its size or times, replacing
/// it changes its inode: a file with the same version holds the same bytes (short of
/// writes through a shared mapping, which update no time until msync).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Version {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Version {
    fn of(meta: &fs::Metadata) -> Version {
        Version {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// A loaded file body and the version it was read from.
#[derive(Clone, Debug)]
pub struct LoadedFile {
    pub version: Version,
    body: Body,
    meta: FileMeta,
}

/// What a reload after a change may take from the previous load.
pub struct Reuse<'a> {
    /// The previous load's bodies.
    pub previous: &'a HashMap<OsString, LoadedFile>,
    /// Files still being written (real paths): they keep their previous version, and a
    /// new one is not served until its writer is done.
    pub held: &'a HashSet<OsString>,
    /// The site built from `previous`: a file kept at its previous version (and whose
    /// variants are) is served as that site renders it.
    pub site: &'a Site,
    /// A file changed (its ctime) less than this long ago is treated as held too, and
    /// counted in [`Loaded::unsettled`]: its writer's events may not have arrived yet.
    pub settle: Duration,
}

/// What changed between two loads, by URL path (directories with a trailing `/`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: BTreeSet<String>,
    pub changed: BTreeSet<String>,
    pub removed: BTreeSet<String>,
}

/// What a load served: its bodies ([`Loaded::bodies`]) and its directories' URL paths.
pub type Served<'a> = (&'a HashMap<OsString, LoadedFile>, &'a [String]);

impl Changes {
    pub fn between((before, before_dirs): Served, (after, after_dirs): Served) -> Changes {
        let mut changes = Changes::default();
        let (before_set, after_set): (HashSet<_>, HashSet<_>) =
            (before_dirs.iter().collect(), after_dirs.iter().collect());
        changes.added.extend(after_set.difference(&before_set).map(|d| d.to_string()));
        changes.removed.extend(before_set.difference(&after_set).map(|d| d.to_string()));
        let mut files_added = 0;
        for (path, file) in after {
            match before.get(path) {
                None => {
                    changes.added.insert(path.to_string_lossy().into_owned());
                    files_added += 1;
                }
                Some(old) if old.version != file.version => {
                    changes.changed.insert(path.to_string_lossy().into_owned());
                }
                Some(_) => {}
            }
        }
        // Every file of `after` not added was in `before`: unless `before` has more,
        // nothing was removed (no second pass over the tree).
        if before.len() > after.len() - files_added {
            changes
                .removed
                .extend(before.keys().filter(|p| !after.contains_key(*p)).map(|p| p.to_string_lossy().into_owned()));
        }
        changes
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }

    /// `2 added, 1 changed (+/a.html ...)`: the counts that are not zero, then the
    /// first few paths.
    pub fn describe(&self) -> String {
        const SHOWN: usize = 3;
        let all: Vec<String> = [("+", &self.added), ("~", &self.changed), ("-", &self.removed)]
            .iter()
            .flat_map(|(mark, set)| set.iter().map(move |p| format!("{mark}{p}")))
            .collect();
        let counts: Vec<String> =
            [(self.added.len(), "added"), (self.changed.len(), "changed"), (self.removed.len(), "removed")]
                .iter()
                .filter(|(n, _)| *n > 0)
                .map(|(n, what)| format!("{n} {what}"))
                .collect();
        let more = all.len().saturating_sub(SHOWN);
        format!(
            "{} ({}{})",
            counts.join(", "),
            all[..all.len().min(SHOWN)].join(" "),
            if more > 0 { format!(" and {more} more") } else { String::new() }
        )
    }
}

/// `1 thread`, `2 threads`, `1 body`, `0 bodies`.
pub fn count(n: usize, noun: &str) -> String {
    match (n, noun.strip_suffix('y')) {
        (1, _) => format!("1 {noun}"),
        (_, Some(stem)) => format!("{n} {stem}ies"),
        _ => format!("{n} {noun}s"),
    }
}

impl Loaded {
    pub fn summary(&self) -> String {
        format!(
            "{} and {}: {} cached ({} in memory), {} streamed from disk ({}){}",
            count(self.files, "file"),
            count(self.routes, "route"),
            count(self.files + self.routes - self.streamed, "body"),
            count(self.bytes as usize, "byte"),
            self.streamed,
            count(self.streamed_bytes as usize, "byte"),
            if self.echoes > 0 { format!("; {}", count(self.echoes, "echo route")) } else { String::new() }
        ) + &if self.precompressed > 0 {
            format!("; {} with precompressed variants", count(self.precompressed, "file"))
        } else {
            String::new()
        }
    }
}

/// Why `--header` refused a line, in the terms of duet's flags: a field duet sets
/// itself names the flag that sets it instead.
fn header_error(e: &HeaderError) -> String {
    match e {
        HeaderError::Managed { name, instead: Some(SetInstead::ContentType) } => {
            format!("duet sets {name} itself (set it per path with --route-type)")
        }
        HeaderError::Managed { name, instead: Some(SetInstead::Variants) } => {
            format!("duet sets {name} itself (see --precompressed)")
        }
        other => other.to_string(),
    }
}

/// Reads everything the configuration names. Any error is one line saying what to fix.
pub fn load(cfg: &ContentConfig) -> Result<Loaded, String> {
    load_with(cfg, None)
}

/// Like [`load`], after a change on disk: reuses every body of `reuse.previous` whose
/// file is unchanged, and keeps files still being written at their previous version.
pub fn reload_changed(cfg: &ContentConfig, reuse: &Reuse) -> Result<Loaded, String> {
    load_with(cfg, Some(reuse))
}

fn load_with(cfg: &ContentConfig, reuse: Option<&Reuse>) -> Result<Loaded, String> {
    for path in &cfg.echoes {
        check_path("--echo", path, path)?;
    }
    let mut base = cfg.headers.iter().try_fold(Site::builder(), |b, line| {
        b.header(line).map_err(|e| format!("--header {line:?}: {}", header_error(&e)))
    })?;
    if cfg.dir.is_some() && !sets_header(&cfg.headers, "cache-control") {
        base = base.file_header(DEFAULT_FILE_CACHE_CONTROL).map_err(|e| e.to_string())?;
    }
    if cfg.is_default() {
        let builder = cfg.echoes.iter().fold(base.hello(), |b, path| b.echo(path));
        return Ok(Loaded {
            site: builder.build(),
            files: 0,
            routes: 1,
            echoes: cfg.echoes.len(),
            bytes: 13,
            streamed: 0,
            streamed_bytes: 0,
            precompressed: 0,
            bodies: HashMap::new(),
            dirs: Vec::new(),
            dir_urls: Vec::new(),
            unsettled: 0,
        });
    }
    let routes = cfg.routes.iter().map(|r| parse_route(r)).collect::<Result<Vec<_>, _>>()?;
    let mut types = HashMap::new();
    for t in &cfg.route_types {
        let (path, mime) = parse_route_type(t)?;
        types.insert(path, mime);
    }
    let mut loader = Loader {
        builder: base,
        types,
        used_types: HashSet::new(),
        max_file: cfg.max_cached_file,
        budget: cfg.cache_budget,
        used: 0,
        files: 0,
        streamed: 0,
        streamed_bytes: 0,
        precompressed: 0,
        reuse,
        bodies: HashMap::new(),
        dirs: Vec::new(),
        dir_urls: Vec::new(),
        unsettled: 0,
    };
    if let Some(dir) = &cfg.dir {
        loader.load_dir(dir, cfg)?;
    }
    for (path, body) in &routes {
        loader.add_route(path, body)?;
    }
    let unused: Vec<&String> = loader.types.keys().filter(|p| !loader.used_types.contains(*p)).collect();
    if let Some(path) = unused.first() {
        return Err(format!("--route-type {path}: no --route or file under --dir serves {path}"));
    }
    // An echo route wins over a route or file at the same path.
    let builder = cfg.echoes.iter().fold(loader.builder, |b, path| b.echo(path));
    Ok(Loaded {
        site: builder.build(),
        files: loader.files,
        routes: routes.len(),
        echoes: cfg.echoes.len(),
        bytes: loader.used,
        streamed: loader.streamed,
        streamed_bytes: loader.streamed_bytes,
        precompressed: loader.precompressed,
        bodies: loader.bodies,
        dirs: loader.dirs,
        dir_urls: loader.dir_urls,
        unsettled: loader.unsettled,
    })
}

enum RouteBody {
    Text(String),
    File(PathBuf),
}

fn parse_route(arg: &str) -> Result<(String, RouteBody), String> {
    let Some((path, value)) = arg.split_once('=') else {
        return Err(format!("--route {arg:?}: expected PATH=TEXT or PATH=@FILE"));
    };
    check_path("--route", arg, path)?;
    let body = if let Some(literal) = value.strip_prefix("@@") {
        RouteBody::Text(format!("@{literal}"))
    } else if let Some(file) = value.strip_prefix('@') {
        if file.is_empty() {
            return Err(format!("--route {arg:?}: no file after @"));
        }
        RouteBody::File(PathBuf::from(file))
    } else {
        RouteBody::Text(value.to_string())
    };
    Ok((path.to_string(), body))
}

fn parse_route_type(arg: &str) -> Result<(String, String), String> {
    let Some((path, mime)) = arg.split_once('=') else {
        return Err(format!("--route-type {arg:?}: expected PATH=MIME, e.g. /data=application/json"));
    };
    check_path("--route-type", arg, path)?;
    let mime = mime.trim();
    if mime.is_empty() || mime.chars().any(|c| c.is_control() || !c.is_ascii()) {
        return Err(format!("--route-type {arg:?}: {mime:?} is not a media type"));
    }
    Ok((path.to_string(), mime.to_string()))
}

/// A route path is matched against the decoded request path: it starts with `/` and
/// holds no query, fragment, whitespace or control character.
fn check_path(flag: &str, arg: &str, path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("{flag} {arg:?}: the path must start with /"));
    }
    if path.chars().any(|c| c.is_control() || c.is_whitespace() || c == '?' || c == '#') {
        return Err(format!("{flag} {arg:?}: the path may not contain spaces, control characters, ? or #"));
    }
    Ok(())
}

/// The media type for a file name: from its extension, `charset=utf-8` on text types.
fn guess_type(path: &Path) -> String {
    match mime_guess::from_path(path).first_raw() {
        Some(t) if t.starts_with("text/") => format!("{t}; charset=utf-8"),
        Some(t) => t.to_string(),
        None => "application/octet-stream".to_string(),
    }
}

/// Deepest directory nesting followed under `--dir`.
const MAX_DEPTH: usize = 64;

struct Loader<'a> {
    builder: SiteBuilder,
    types: HashMap<String, String>,
    used_types: HashSet<String>,
    max_file: u64,
    budget: u64,
    used: u64,
    files: usize,
    streamed: usize,
    streamed_bytes: u64,
    precompressed: usize,
    reuse: Option<&'a Reuse<'a>>,
    bodies: HashMap<OsString, LoadedFile>,
    dirs: Vec<PathBuf>,
    dir_urls: Vec<String>,
    unsettled: usize,
}

/// The sibling suffixes `--precompressed` looks for, and their codings.
const PRECOMPRESSED: [(&str, Coding); 2] = [(".br", Coding::Br), (".gz", Coding::Gzip)];

/// A file of a directory, opened and ready to be served.
struct DirFile {
    name: String,
    disk: PathBuf,
    body: Body,
    meta: FileMeta,
    /// The version the previous site serves (so its built entry can be reused).
    kept: bool,
}

impl Loader<'_> {
    fn content_type(&mut self, url: &str, fallback: impl FnOnce() -> String) -> String {
        match self.types.get(url) {
            Some(t) => {
                self.used_types.insert(url.to_string());
                t.clone()
            }
            None => fallback(),
        }
    }

    /// True when `size` more bytes fit in memory: not over `--max-cached-file` and not
    /// past `--cache-budget`.
    fn fits(&self, size: u64) -> bool {
        size <= self.max_file && self.used.saturating_add(size) <= self.budget
    }

    /// Opens a file and either reads it into memory (when it fits the limits) or keeps
    /// it open to be streamed from disk at request time. Also returns the version it
    /// had when opened and, for a body read into memory, whether the file was written
    /// while it was read.
    fn open_body(&mut self, path: &Path) -> std::io::Result<(Body, fs::Metadata, bool)> {
        let file = fs::File::open(path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(std::io::Error::other("not a regular file"));
        }
        let size = meta.len();
        if !self.fits(size) {
            return Ok((self.account(Body::file(Arc::new(file), size)), meta, false));
        }
        let mut data = Vec::with_capacity(size as usize);
        // Never more than the stat said (the file may be growing): what was read is
        // what is served and accounted for.
        (&file).take(size).read_to_end(&mut data)?;
        let written_meanwhile = file.metadata().map_or(true, |after| Version::of(&after) != Version::of(&meta));
        Ok((self.account(Body::Memory(Bytes::from(data))), meta, written_meanwhile))
    }

    /// Counts `body` against the cache budget (in memory) or as streamed.
    fn account(&mut self, body: Body) -> Body {
        match &body {
            Body::Memory(b) => self.used += b.len() as u64,
            Body::File { len, .. } => {
                self.streamed += 1;
                self.streamed_bytes += len;
            }
        }
        body
    }

    /// The body of the file at `real` (its metadata `meta` just read), and its
    /// validators; `None` for a new file still being written (not served yet). After a
    /// change, an unchanged file keeps the body it had, as long as it would be held the
    /// same way (in memory or streamed) now; a file being written, and a `route` file,
    /// keeps its previous version.
    fn file_body(
        &mut self,
        real: &Path,
        key: OsString,
        meta: &fs::Metadata,
        route: bool,
    ) -> Result<Option<(Body, FileMeta, bool)>, String> {
        let previous = self.reuse.and_then(|r| r.previous.get(&key));
        let version = Version::of(meta);
        // A `--route` file is read at start and on SIGHUP only.
        let mut held = self.reuse.is_some_and(|r| route || r.held.contains(real.as_os_str()));
        if let Some(reuse) = self.reuse.filter(|_| !held && previous.is_none_or(|p| p.version != version)) {
            let changed = UNIX_EPOCH + Duration::new(meta.ctime().max(0) as u64, meta.ctime_nsec() as u32);
            // (A ctime in the future, after the clock was set back, counts as settled.)
            if changed.elapsed().is_ok_and(|age| age < reuse.settle) {
                self.unsettled += 1;
                held = true;
            }
        }
        let keep = match previous {
            Some(p) if held => Some(p.clone()),
            Some(p) if p.version == version => {
                let in_memory = matches!(p.body, Body::Memory(_));
                (in_memory == self.fits(version.len)).then(|| p.clone())
            }
            _ if held => return Ok(None),
            _ => None,
        };
        let kept = keep.is_some();
        let loaded = match keep {
            Some(p) => LoadedFile { body: self.account(p.body), ..p },
            None => {
                let (body, meta, written_meanwhile) = match self.open_body(real) {
                    Ok(opened) => opened,
                    // Removed since its directory was read: as if it had not been there.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.reuse.is_some() => return Ok(None),
                    Err(e) => return Err(format!("cannot read {}: {e}", real.display())),
                };
                if written_meanwhile && self.reuse.is_some() {
                    // Caught mid-write: the writer's own events bring another change set.
                    debug!("{} changed while it was read; keeping its previous version", real.display());
                    self.undo(&body);
                    return match previous {
                        Some(p) => {
                            let p = LoadedFile { body: self.account(p.body.clone()), ..p.clone() };
                            Ok(Some(self.keep(key, p, true)))
                        }
                        None => Ok(None),
                    };
                }
                LoadedFile { version: Version::of(&meta), meta: file_meta(&meta, body.len()), body }
            }
        };
        Ok(Some(self.keep(key, loaded, kept)))
    }

    fn keep(&mut self, key: OsString, file: LoadedFile, kept: bool) -> (Body, FileMeta, bool) {
        let out = (file.body.clone(), file.meta.clone(), kept);
        self.bodies.insert(key, file);
        out
    }

    /// Takes back what [`Loader::account`] counted for `body`.
    fn undo(&mut self, body: &Body) {
        match body {
            Body::Memory(b) => self.used -= b.len() as u64,
            Body::File { len, .. } => {
                self.streamed -= 1;
                self.streamed_bytes -= len;
            }
        }
    }

    fn add_route(&mut self, path: &str, body: &RouteBody) -> Result<(), String> {
        let (content_type, body) = match body {
            // Already in memory (it came on the command line): always cached.
            RouteBody::Text(text) => {
                self.used += text.len() as u64;
                let t = self.content_type(path, || "text/plain; charset=utf-8".to_string());
                (t, Body::Memory(Bytes::from(text.clone().into_bytes())))
            }
            RouteBody::File(file) => {
                let meta = fs::metadata(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
                let body = match self.file_body(file, format!("@{path}").into(), &meta, true)? {
                    Some((body, _, _)) => body,
                    None => return Err(format!("cannot read {}: it is being written or was removed", file.display())),
                };
                (self.content_type(path, || guess_type(file)), body)
            }
        };
        let b = std::mem::replace(&mut self.builder, Site::builder());
        self.builder = b.route(path, &content_type, body);
        Ok(())
    }

    fn load_dir(&mut self, dir: &Path, cfg: &ContentConfig) -> Result<(), String> {
        let root = fs::canonicalize(dir).map_err(|e| format!("--dir {}: {e}", dir.display()))?;
        if !root.is_dir() {
            return Err(format!("--dir {}: not a directory", dir.display()));
        }
        // (directory on disk, its URL path without the trailing slash, the real
        // directories above it: a symlink back up the tree is not followed)
        let mut stack = vec![(root.clone(), String::new(), Vec::new())];
        while let Some((disk, url, ancestors)) = stack.pop() {
            self.dirs.push(disk.clone());
            self.dir_urls.push(format!("{url}/"));
            let read = fs::read_dir(&disk).map_err(|e| format!("cannot read directory {}: {e}", disk.display()))?;
            let mut entries = read
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("cannot read directory {}: {e}", disk.display()))?;
            entries.sort_by_key(|e| e.file_name());
            // What this directory serves, in name order: (name, is a directory).
            let mut listed: Vec<(String, bool)> = Vec::new();
            let mut files: Vec<DirFile> = Vec::new();
            for entry in entries {
                let path = entry.path();
                let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                    warn!("not serving {}: the name is not UTF-8", path.display());
                    continue;
                };
                if name.starts_with('.') && !cfg.dotfiles {
                    continue;
                }
                let file_type = entry.file_type().map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                let real = if file_type.is_symlink() {
                    match fs::canonicalize(&path) {
                        Ok(real) if real.starts_with(&root) => real,
                        Ok(real) => {
                            warn!("not serving {}: it links to {}, outside --dir", path.display(), real.display());
                            continue;
                        }
                        Err(e) => {
                            warn!("not serving {}: broken symlink ({e})", path.display());
                            continue;
                        }
                    }
                } else {
                    path.clone()
                };
                // fstatat from the directory, not a walk of the whole path, when the
                // entry is no link.
                let meta = match if file_type.is_symlink() { fs::metadata(&real) } else { entry.metadata() } {
                    Ok(meta) => meta,
                    // Removed since the directory was read: as if it had not been there.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
                };
                let child_url = format!("{url}/{name}");
                if meta.is_dir() {
                    if real == disk || ancestors.contains(&real) {
                        warn!("not following {}: it links back up the tree", path.display());
                        continue;
                    }
                    if ancestors.len() >= MAX_DEPTH {
                        return Err(format!("--dir {}: more than {MAX_DEPTH} levels of directories", dir.display()));
                    }
                    let mut below = ancestors.clone();
                    below.push(disk.clone());
                    stack.push((real, child_url.clone(), below));
                    let b = std::mem::replace(&mut self.builder, Site::builder());
                    self.builder = b.directory(&child_url);
                    listed.push((name, true));
                } else if meta.is_file() {
                    if let Some((body, meta, kept)) = self.file_body(&real, child_url.clone().into(), &meta, false)? {
                        files.push(DirFile { meta, name: name.clone(), disk: real, body, kept });
                        listed.push((name, false));
                    }
                }
                // Sockets, FIFOs and devices are never served.
            }
            for file in &files {
                let variants = if cfg.precompressed { precompressed_variants(&file.name, &files) } else { Vec::new() };
                if !variants.is_empty() {
                    self.precompressed += 1;
                }
                let file_url = format!("{url}/{}", file.name);
                // Unchanged with the same variants, themselves unchanged: served as the
                // previous site renders it.
                let built = self
                    .reuse
                    .filter(|_| file.kept && siblings_kept(&file.name, &files, cfg.precompressed))
                    .and_then(|r| r.site.built_file(&file_url))
                    .filter(|b| b.codings().iter().eq(variants.iter().map(|v| &v.coding)));
                match built {
                    Some(built) => {
                        if self.types.contains_key(&file_url) {
                            self.used_types.insert(file_url.clone());
                        }
                        let b = std::mem::replace(&mut self.builder, Site::builder());
                        self.builder = b.built_file(&file_url, built);
                        self.files += 1;
                    }
                    None => self.add_file(file, &file_url, variants),
                }
            }
            let index = format!("{url}/index.html");
            let slashed = format!("{url}/");
            let b = std::mem::replace(&mut self.builder, Site::builder());
            self.builder = if b.contains(&index) {
                b.alias(&slashed, &index)
            } else if cfg.list_dirs {
                b.route(&slashed, "text/html; charset=utf-8", Bytes::from(listing(&slashed, &listed)))
            } else {
                b.forbidden(&slashed)
            };
        }
        Ok(())
    }

    fn add_file(&mut self, file: &DirFile, url: &str, variants: Vec<Variant>) {
        let content_type = self.content_type(url, || guess_type(&file.disk));
        let b = std::mem::replace(&mut self.builder, Site::builder());
        self.builder = b.file_with_variants(url, &content_type, file.body.clone(), &file.meta, variants);
        self.files += 1;
    }
}

/// The validators of a file: a strong ETag that changes whenever the file is replaced
/// (inode), rewritten (mtime) or resized, as nginx's and Apache's do.
fn file_meta(meta: &fs::Metadata, len: u64) -> FileMeta {
    let modified = meta.modified().unwrap_or(UNIX_EPOCH);
    let nanos = modified.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_nanos();
    FileMeta { etag: format!("{:x}-{nanos:x}-{len:x}", meta.ino()), modified }
}

/// True when every `NAME.br` / `NAME.gz` next to `name` in `files` (name order) is at
/// the version the previous site serves (always, without `--precompressed`).
fn siblings_kept(name: &str, files: &[DirFile], precompressed: bool) -> bool {
    !precompressed
        || PRECOMPRESSED.iter().all(|(suffix, _)| {
            let sibling = format!("{name}{suffix}");
            files.binary_search_by(|f| f.name.as_str().cmp(&sibling)).map_or(true, |i| files[i].kept)
        })
}

/// The `NAME.br` and `NAME.gz` among the files of the same directory, as variants of
/// `NAME` (the bodies are shared with the files served at their own paths). `files` is in
/// name order, so each sibling is a binary search: a directory of n files costs
/// O(n log n), not the O(n²) of a scan per file.
fn precompressed_variants(name: &str, files: &[DirFile]) -> Vec<Variant> {
    PRECOMPRESSED
        .iter()
        .filter_map(|(suffix, coding)| {
            let sibling = format!("{name}{suffix}");
            let f = &files[files.binary_search_by(|f| f.name.as_str().cmp(&sibling)).ok()?];
            Some(Variant { coding: *coding, body: f.body.clone(), meta: f.meta.clone() })
        })
        .collect()
}

/// The HTML index of the directory at URL path `dir` (with its trailing slash) that
/// serves `entries` (name, is a directory), in that order: names HTML-escaped, links
/// relative and percent-encoded (so a name like `a:b` or `#x` stays a path).
fn listing(dir: &str, entries: &[(String, bool)]) -> String {
    let title = html_escape(dir);
    let mut html = format!(
        "<!DOCTYPE html>\n<html>\n<head><meta charset=\"utf-8\"><title>Index of {title}</title></head>\n\
         <body>\n<h1>Index of {title}</h1>\n<ul>\n"
    );
    if dir != "/" {
        html.push_str("<li><a href=\"../\">../</a></li>\n");
    }
    for (name, is_dir) in entries {
        let slash = if *is_dir { "/" } else { "" };
        html.push_str(&format!(
            "<li><a href=\"{}{slash}\">{}{slash}</a></li>\n",
            percent_encode(name),
            html_escape(name)
        ));
    }
    html.push_str("</ul>\n</body>\n</html>\n");
    html
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Every byte but the unreserved characters of RFC 3986 as `%XX`.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_are_singular_for_one() {
        assert_eq!(count(1, "thread"), "1 thread");
        assert_eq!(count(2, "thread"), "2 threads");
        assert_eq!(count(0, "route"), "0 routes");
        assert_eq!(count(1, "body"), "1 body");
        assert_eq!(count(3, "body"), "3 bodies");
    }

    use super::*;

    #[test]
    fn a_refused_managed_header_names_the_flag_that_sets_it() {
        let refused = |line: &str| header_error(&Site::builder().header(line).unwrap_err());
        assert_eq!(
            refused("Content-Type: text/html"),
            "duet sets Content-Type itself (set it per path with --route-type)"
        );
        assert_eq!(refused("content-encoding: br"), "duet sets Content-Encoding itself (see --precompressed)");
        assert_eq!(refused("Date: today"), "duet sets Date itself");
        assert_eq!(refused("no colon"), "expected 'Name: value'");
    }

    #[test]
    fn route_syntax() {
        assert!(matches!(parse_route("/a=hi").unwrap().1, RouteBody::Text(t) if t == "hi"));
        assert!(matches!(parse_route("/a=x=y").unwrap().1, RouteBody::Text(t) if t == "x=y"));
        assert!(matches!(parse_route("/a=@f.bin").unwrap().1, RouteBody::File(p) if p == Path::new("f.bin")));
        assert!(matches!(parse_route("/a=@@me").unwrap().1, RouteBody::Text(t) if t == "@me"));
        assert!(matches!(parse_route("/a=").unwrap().1, RouteBody::Text(t) if t.is_empty()));
        for bad in ["nopath", "a=b", "/a b=c", "/a?q=c", "/a=@"] {
            assert!(parse_route(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_route_type("/a=application/json").unwrap().1, "application/json");
        assert!(parse_route_type("/a=").is_err());
        assert!(parse_route_type("/a").is_err());
    }

    #[test]
    fn listing_escapes_names_and_encodes_links() {
        let entries = [
            ("a b&<c>.txt".to_string(), false),
            ("d\"ir'".to_string(), true),
            ("x:y#z?.html".to_string(), false),
            ("été".to_string(), false),
        ];
        let html = listing("/s<p>/", &entries);
        assert!(html.contains("<title>Index of /s&lt;p&gt;/</title>"), "{html}");
        assert!(html.contains("<li><a href=\"../\">../</a></li>"), "{html}");
        assert!(html.contains("<a href=\"a%20b%26%3Cc%3E.txt\">a b&amp;&lt;c&gt;.txt</a>"), "{html}");
        assert!(html.contains("<a href=\"d%22ir%27/\">d&quot;ir&#39;/</a>"), "{html}");
        assert!(html.contains("<a href=\"x%3Ay%23z%3F.html\">x:y#z?.html</a>"), "{html}");
        assert!(html.contains("<a href=\"%C3%A9t%C3%A9\">été</a>"), "{html}");
        assert!(!listing("/", &entries).contains("../"), "no parent link at the root");
    }

    fn dir_config(dir: &Path) -> ContentConfig {
        ContentConfig {
            dir: Some(dir.to_path_buf()),
            max_cached_file: 1 << 20,
            cache_budget: 1 << 30,
            ..Default::default()
        }
    }

    fn memory(loaded: &Loaded, key: &str) -> Bytes {
        match &loaded.bodies[std::ffi::OsStr::new(key)].body {
            Body::Memory(b) => b.clone(),
            Body::File { .. } => panic!("{key} is streamed"),
        }
    }

    #[test]
    fn a_reload_after_a_change_reads_only_the_files_that_changed() {
        let tmp = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(tmp.path()).unwrap();
        fs::write(root.join("same.txt"), "same").unwrap();
        fs::write(root.join("edited.txt"), "before").unwrap();
        let cfg = dir_config(&root);
        let first = load(&cfg).unwrap();
        fs::write(root.join("edited.txt"), "after!").unwrap();
        let held = HashSet::new();
        let second = reload_changed(
            &cfg,
            &Reuse { previous: &first.bodies, held: &held, site: &first.site, settle: Duration::ZERO },
        )
        .unwrap();
        let (same, edited) = ("/same.txt", "/edited.txt");
        assert_eq!(memory(&second, same).as_ptr(), memory(&first, same).as_ptr(), "unchanged: the same bytes");
        assert_eq!(&memory(&second, edited)[..], b"after!");
        assert_eq!(second.bytes, 4 + 6, "reused bodies count against the budget too");
        let built = |l: &Loaded, p: &str| l.site.built_file(p).expect(p);
        assert!(built(&second, "/same.txt") == built(&first, "/same.txt"), "unchanged: not rendered again");
        assert!(built(&second, "/edited.txt") != built(&first, "/edited.txt"));
        let changes = Changes::between((&first.bodies, &first.dir_urls), (&second.bodies, &second.dir_urls));
        assert_eq!(changes.describe(), "1 changed (~/edited.txt)");
        fs::remove_file(root.join("same.txt")).unwrap();
        fs::write(root.join("new.txt"), "new").unwrap();
        let third = reload_changed(
            &cfg,
            &Reuse { previous: &second.bodies, held: &held, site: &second.site, settle: Duration::ZERO },
        )
        .unwrap();
        let changes = Changes::between((&second.bodies, &second.dir_urls), (&third.bodies, &third.dir_urls));
        assert_eq!(changes.describe(), "1 added, 1 removed (+/new.txt -/same.txt)");
        // A link to a file already served is a path added.
        std::os::unix::fs::symlink("edited.txt", root.join("link.txt")).unwrap();
        let fourth = reload_changed(
            &cfg,
            &Reuse { previous: &third.bodies, held: &held, site: &third.site, settle: Duration::ZERO },
        )
        .unwrap();
        let changes = Changes::between((&third.bodies, &third.dir_urls), (&fourth.bodies, &fourth.dir_urls));
        assert_eq!(changes.describe(), "1 added (+/link.txt)");
    }

    #[test]
    fn a_file_being_written_keeps_its_previous_version_and_a_new_one_waits() {
        let tmp = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(tmp.path()).unwrap();
        fs::write(root.join("page.html"), "old").unwrap();
        let cfg = dir_config(&root);
        let first = load(&cfg).unwrap();
        fs::write(root.join("page.html"), "half").unwrap();
        fs::write(root.join("new.html"), "partial").unwrap();
        fs::create_dir(root.join("sub")).unwrap();
        let held: HashSet<OsString> = [root.join("page.html").into(), root.join("new.html").into()].into();
        let second = reload_changed(
            &cfg,
            &Reuse { previous: &first.bodies, held: &held, site: &first.site, settle: Duration::ZERO },
        )
        .unwrap();
        assert_eq!(&memory(&second, "/page.html")[..], b"old");
        assert!(
            !second.bodies.contains_key(std::ffi::OsStr::new("/new.html")),
            "a new file is not served while written"
        );
        assert_eq!(second.files, 1);
        let changes = Changes::between((&first.bodies, &first.dir_urls), (&second.bodies, &second.dir_urls));
        assert_eq!(changes.describe(), "1 added (+/sub/)");
        // SIGHUP reads everything as it is.
        assert_eq!(&memory(&load(&cfg).unwrap(), "/page.html")[..], b"half");
    }

    #[test]
    fn a_file_changed_within_the_settle_time_waits_for_the_next_change_set() {
        let tmp = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(tmp.path()).unwrap();
        fs::write(root.join("page.html"), "old").unwrap();
        let cfg = dir_config(&root);
        let first = load(&cfg).unwrap();
        fs::write(root.join("page.html"), "new!").unwrap();
        fs::write(root.join("fresh.html"), "fresh").unwrap();
        let held = HashSet::new();
        let reuse =
            Reuse { previous: &first.bodies, held: &held, site: &first.site, settle: Duration::from_secs(3600) };
        let second = reload_changed(&cfg, &reuse).unwrap();
        assert_eq!(&memory(&second, "/page.html")[..], b"old");
        assert!(!second.bodies.contains_key(std::ffi::OsStr::new("/fresh.html")));
        assert_eq!(second.unsettled, 2);
        let settled = reload_changed(&cfg, &Reuse { settle: Duration::ZERO, ..reuse }).unwrap();
        assert_eq!((&memory(&settled, "/page.html")[..], settled.unsettled), (&b"new!"[..], 0));
    }

    #[test]
    fn a_file_whose_precompressed_sibling_changed_is_rendered_again() {
        let tmp = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(tmp.path()).unwrap();
        fs::write(root.join("app.js"), "plain").unwrap();
        fs::write(root.join("app.js.gz"), "gz one").unwrap();
        let cfg = ContentConfig { precompressed: true, ..dir_config(&root) };
        let first = load(&cfg).unwrap();
        let held = HashSet::new();
        let again = |prev: &Loaded| {
            reload_changed(
                &cfg,
                &Reuse { previous: &prev.bodies, held: &held, site: &prev.site, settle: Duration::ZERO },
            )
            .unwrap()
        };
        let built = |l: &Loaded| l.site.built_file("/app.js").unwrap();
        let same = again(&first);
        assert!(built(&same) == built(&first), "nothing changed");
        fs::write(root.join("app.js.gz"), "gz two, longer").unwrap();
        let second = again(&same);
        assert!(built(&second) != built(&same), "the .gz changed");
        fs::remove_file(root.join("app.js.gz")).unwrap();
        let third = again(&second);
        assert!(built(&third) != built(&second) && built(&third).codings().is_empty(), "the .gz went");
    }

    #[test]
    fn a_change_set_keeps_route_files_as_loaded() {
        let tmp = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(tmp.path()).unwrap();
        let route = root.join("route.txt");
        fs::write(&route, "loaded").unwrap();
        let cfg = ContentConfig { routes: vec![format!("/r=@{}", route.display())], ..dir_config(&root.join("site")) };
        fs::create_dir(root.join("site")).unwrap();
        let first = load(&cfg).unwrap();
        fs::write(&route, "edited").unwrap();
        let held = HashSet::new();
        let second = reload_changed(
            &cfg,
            &Reuse { previous: &first.bodies, held: &held, site: &first.site, settle: Duration::ZERO },
        )
        .unwrap();
        assert_eq!(&memory(&second, "@/r")[..], b"loaded");
        assert_eq!(&memory(&load(&cfg).unwrap(), "@/r")[..], b"edited", "SIGHUP reads it again");
    }

    #[test]
    fn files_get_a_freshness_default_unless_a_header_sets_cache_control() {
        assert!(sets_header(&["cache-control : max-age=5".to_string()], "Cache-Control"));
        assert!(!sets_header(&["X-Cache-Control: 1".to_string()], "Cache-Control"));
    }

    #[test]
    fn types_from_extensions() {
        assert_eq!(guess_type(Path::new("a.html")), "text/html; charset=utf-8");
        assert_eq!(guess_type(Path::new("a.png")), "image/png");
        assert_eq!(guess_type(Path::new("a.unknownext")), "application/octet-stream");
    }
}

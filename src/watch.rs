//! Serving what is on disk now: `--dir` watched through inotify (the `notify` crate),
//! changes applied as a new site, the same swap SIGHUP does.
//!
//! One watch per directory served (`Loaded::dirs`; not recursive, so hidden directories
//! and links out of the tree cost none), kept in step with the tree after every change
//! set. Events are debounced: a change set is applied once no event has come for
//! [`QUIET`], or [`MAX_WAIT`] after its first event when they never stop. Applying it
//! walks the tree again but reads only the files that changed ([`content::reload_changed`]).
//!
//! A file being written is never served as complete: a file written to
//! (`IN_MODIFY`, or created by an open) is *held* until its writer closes it
//! (`IN_CLOSE_WRITE`), is removed or renamed away; while held it keeps the version it
//! had (a new file is not served yet). A file replaced by a rename (write elsewhere,
//! `mv` into place) is complete when its name appears. A body read in memory is checked
//! again after the read, so a write that starts while duet reads it is caught too. A
//! writer silent for [`HOLD_LIMIT`] with the file still open is taken as done.
//!
//! At the inotify limits (`fs.inotify.max_user_watches`, `max_user_instances`) the
//! watcher says so in one line and stops: what is loaded stays served, SIGHUP reloads.

use crate::content::{self, ContentConfig, Loaded, LoadedFile, Reuse};
use duet_http::Site;
use notify::event::{AccessKind, AccessMode, CreateKind, EventKind, ModifyKind, RenameMode};
use notify::{ErrorKind, Event, INotifyWatcher, RecursiveMode, Watcher};
use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// A change set is applied once no event has come for this long: an editor's save, a
/// `cp -r` or a `git checkout` is one change set, not one per file.
pub const QUIET: Duration = Duration::from_millis(50);
/// ... or this long after its first event, while events keep coming (a build writing
/// for minutes is served as it goes; files still being written are held).
pub const MAX_WAIT: Duration = Duration::from_secs(1);
/// A file still open for writing with no event for this long is taken as complete.
pub const HOLD_LIMIT: Duration = Duration::from_secs(10);

/// Simulates `fs.inotify.max_user_watches` for the tests: with `N`, a watch past the N-th
/// fails as the kernel's `ENOSPC` does (setting the real limit needs root, and filling it
/// would break every other process of the user).
const TEST_MAX_WATCHES: &str = "DUET_TEST_MAX_WATCHES";

/// What both SIGHUP and the watcher reload from: the configuration, the site they
/// swap, and the bodies of the last load. One at a time (the lock).
pub struct Reloader {
    content: ContentConfig,
    site: Arc<Site>,
    bodies: HashMap<OsString, LoadedFile>,
    /// The URL paths of the directories served.
    dir_urls: Vec<String>,
    /// The watcher's event queue, to have it walk the tree after a SIGHUP (so it
    /// watches what SIGHUP loaded: a `--dir` symlink switched to another release).
    rescan: Option<mpsc::Sender<notify::Result<Event>>>,
}

impl Reloader {
    /// `site` serves what `bodies` and `dir_urls` (from the same [`Loaded`]) say.
    pub fn new(
        content: ContentConfig,
        site: Arc<Site>,
        bodies: HashMap<OsString, LoadedFile>,
        dir_urls: Vec<String>,
    ) -> Self {
        Reloader { content, site, bodies, dir_urls, rescan: None }
    }

    /// SIGHUP: everything read again, nothing held.
    pub fn reload_all(&mut self) {
        if self.content.is_default() {
            info!("SIGHUP: nothing to reload (no --route or --dir)");
            return;
        }
        match content::load(&self.content) {
            Ok(loaded) => {
                let summary = loaded.summary();
                self.bodies = loaded.bodies;
                self.dir_urls = loaded.dir_urls;
                self.site.replace(loaded.site);
                info!("reloaded {summary}");
                if let Some(tx) = &self.rescan {
                    let _ = tx.send(Ok(Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan)));
                }
            }
            Err(e) => warn!("reload failed, still serving the previous content: {e}"),
        }
    }

    /// A change set: the tree walked again, unchanged files reused, `held` files kept
    /// at their previous version. Swaps the site and logs one line when anything
    /// changed. Returns the directories now served, and how many files changed too
    /// recently to be taken (the change set is tried again).
    fn apply(&mut self, held: &HashSet<OsString>) -> Result<(Vec<PathBuf>, usize), String> {
        let reuse = Reuse { previous: &self.bodies, held, site: &self.site, settle: QUIET };
        let started = Instant::now();
        let loaded: Loaded = content::reload_changed(&self.content, &reuse)?;
        let changes = content::Changes::between((&self.bodies, &self.dir_urls), (&loaded.bodies, &loaded.dir_urls));
        // Nothing changed (events about files duet does not serve, or a walk after new
        // watches that found nothing new): the table stays, no log line.
        if !changes.is_empty() {
            let summary = loaded.summary();
            self.bodies = loaded.bodies;
            self.dir_urls = loaded.dir_urls;
            self.site.replace(loaded.site);
            info!(
                "watch: applied {} in {:.1} ms; serving {summary}",
                changes.describe(),
                started.elapsed().as_secs_f64() * 1e3
            );
        }
        Ok((loaded.dirs, loaded.unsettled))
    }
}

/// Why the watcher stopped watching.
fn limit_message(root: &Path, dirs: usize, e: &notify::Error) -> String {
    let sysctl = |name: &str| {
        std::fs::read_to_string(format!("/proc/sys/fs/inotify/{name}"))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|_| "?".into())
    };
    let what = match &e.kind {
        ErrorKind::MaxFilesWatch => format!(
            "the inotify watch limit is reached ({dirs} directories need {dirs} watches; \
             fs.inotify.max_user_watches = {}, shared by all of this user's processes)",
            std::env::var(TEST_MAX_WATCHES).unwrap_or_else(|_| sysctl("max_user_watches"))
        ),
        ErrorKind::Io(io) if io.raw_os_error() == Some(libc::EMFILE) => format!(
            "no inotify instance left (fs.inotify.max_user_instances = {}, or the open file limit)",
            sysctl("max_user_instances")
        ),
        _ => e.to_string(),
    };
    format!("watch: cannot watch {}: {what}; not watching: changes are served after SIGHUP", root.display())
}

/// Starts watching `dirs` (the root first) and applying changes, on a thread of its
/// own. At an inotify limit it logs one line and watches nothing (serving goes on).
pub fn spawn(reloader: Arc<Mutex<Reloader>>, dirs: Vec<PathBuf>) -> Result<(), String> {
    let Some(root) = dirs.first().cloned() else { return Ok(()) };
    let (tx, rx) = mpsc::channel();
    let rescan = tx.clone();
    let watcher = match INotifyWatcher::new(tx, notify::Config::default()) {
        Ok(w) => w,
        Err(e) => {
            warn!("{}", limit_message(&root, dirs.len(), &e));
            return Ok(());
        }
    };
    let mut watch = Watch { watcher, watched: HashSet::new(), max_watches: test_max_watches(), root };
    if let Err(e) = watch.sync(&dirs) {
        warn!("{}", limit_message(&watch.root, dirs.len(), &e));
        return Ok(());
    }
    info!("watching {} for changes ({})", watch.root.display(), content::count(dirs.len(), "directory"));
    reloader.lock().unwrap_or_else(|e| e.into_inner()).rescan = Some(rescan);
    std::thread::Builder::new()
        .name("duet-watch".into())
        .spawn(move || run(watch, rx, &reloader))
        .map_err(|e| format!("cannot start the watch thread: {e}"))?;
    Ok(())
}

fn test_max_watches() -> Option<usize> {
    std::env::var(TEST_MAX_WATCHES).ok()?.parse().ok()
}

struct Watch {
    watcher: INotifyWatcher,
    watched: HashSet<PathBuf>,
    max_watches: Option<usize>,
    root: PathBuf,
}

impl Watch {
    /// Watches exactly `dirs`. Returns whether a directory was added (files created in
    /// it before its watch was in place are found by walking the tree once more).
    fn sync(&mut self, dirs: &[PathBuf]) -> Result<bool, notify::Error> {
        if let Some(root) = dirs.first() {
            self.root.clone_from(root);
        }
        let wanted: HashSet<&PathBuf> = dirs.iter().collect();
        let gone: Vec<PathBuf> = self.watched.iter().filter(|d| !wanted.contains(d)).cloned().collect();
        for dir in gone {
            // A directory removed from disk has lost its watch already.
            let _ = self.watcher.unwatch(&dir);
            self.watched.remove(&dir);
        }
        let mut added = false;
        for dir in dirs {
            if self.watched.contains(dir) {
                continue;
            }
            if self.max_watches.is_some_and(|max| self.watched.len() >= max) {
                return Err(notify::Error::new(ErrorKind::MaxFilesWatch));
            }
            match self.watcher.watch(dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.watched.insert(dir.clone());
                    added = true;
                }
                Err(e) if matches!(e.kind, ErrorKind::MaxFilesWatch) => return Err(e),
                Err(e) if matches!(&e.kind, ErrorKind::Io(io) if io.raw_os_error() == Some(libc::EMFILE)) => {
                    return Err(e)
                }
                // Removed since the walk: the next change set sees it gone.
                Err(e) => tracing::debug!("watch: cannot watch {}: {e}", dir.display()),
            }
        }
        Ok(added)
    }
}

/// The change set being gathered.
#[derive(Default)]
struct Pending {
    /// When its first and its latest event came (None: nothing to apply).
    first: Option<Instant>,
    last: Option<Instant>,
    /// Files being written, and when each was last written to.
    writing: HashMap<PathBuf, Instant>,
}

impl Pending {
    fn touch(&mut self, now: Instant) {
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    /// When the change set is due, or the next held file times out.
    fn deadline(&self) -> Option<Instant> {
        let due = match (self.first, self.last) {
            (Some(first), Some(last)) => Some((last + QUIET).min(first + MAX_WAIT)),
            _ => None,
        };
        let hold = self.writing.values().map(|&t| t + HOLD_LIMIT).min();
        match (due, hold) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Takes in one event: a change to apply, and which files are being written.
    fn event(&mut self, event: Event, dotfiles: bool, now: Instant) {
        let hidden = |p: &Path| !dotfiles && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
        match event.kind {
            // duet's own reads (and anyone's) open and close files: not a change.
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => {
                for p in &event.paths {
                    self.writing.remove(p);
                }
            }
            EventKind::Access(_) => return,
            EventKind::Modify(ModifyKind::Data(_)) => {
                for p in &event.paths {
                    self.writing.insert(p.clone(), now);
                }
            }
            EventKind::Create(CreateKind::File) => {
                // Created by an open (one link, a regular file): its writer closes it
                // when done. A symlink, hard link or special file has no close to wait for.
                for p in &event.paths {
                    if std::fs::symlink_metadata(p).is_ok_and(|m| {
                        use std::os::unix::fs::MetadataExt;
                        m.file_type().is_file() && m.nlink() == 1
                    }) {
                        self.writing.insert(p.clone(), now);
                    }
                }
            }
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
                // A file renamed while open for writing is still being written.
                if let [from, to] = event.paths.as_slice() {
                    if self.writing.remove(from).is_some() {
                        self.writing.insert(to.clone(), now);
                    }
                }
            }
            EventKind::Modify(ModifyKind::Name(RenameMode::From)) | EventKind::Remove(_) => {
                for p in &event.paths {
                    self.writing.remove(p);
                }
            }
            _ => {}
        }
        if event.need_rescan() || event.paths.iter().any(|p| !hidden(p)) {
            self.touch(now);
        }
    }
}

fn run(mut watch: Watch, rx: Receiver<Result<Event, notify::Error>>, reloader: &Mutex<Reloader>) {
    let dotfiles = reloader.lock().unwrap_or_else(|e| e.into_inner()).content.dotfiles;
    let mut pending = Pending::default();
    // Walk once: files created between the load at start and the watches.
    pending.touch(Instant::now());
    loop {
        let received = match pending.deadline() {
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
        };
        let now = Instant::now();
        let received = match received {
            Ok(event) => Some(event),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        // Everything queued, so the holds are up to date before anything is applied.
        for event in received.into_iter().chain(std::iter::from_fn(|| rx.try_recv().ok())) {
            match event {
                Ok(event) => pending.event(event, dotfiles, now),
                Err(e) if matches!(e.kind, ErrorKind::MaxFilesWatch) => {
                    warn!("{}", limit_message(&watch.root, watch.watched.len() + 1, &e));
                    return;
                }
                Err(e) => {
                    warn!("watch: {e}");
                    pending.touch(now);
                }
            }
        }
        // Writers silent for too long are taken as done.
        let before = pending.writing.len();
        pending.writing.retain(|_, last| now < *last + HOLD_LIMIT);
        if pending.writing.len() != before {
            pending.touch(now);
        }
        let due = match (pending.first, pending.last) {
            (Some(first), Some(last)) => now >= last + QUIET || now >= first + MAX_WAIT,
            _ => false,
        };
        if !due {
            continue;
        }
        pending.first = None;
        pending.last = None;
        let held: HashSet<OsString> = pending.writing.keys().map(|p| p.as_os_str().to_owned()).collect();
        let applied = reloader.lock().unwrap_or_else(|e| e.into_inner()).apply(&held);
        match applied {
            Ok((dirs, unsettled)) => match watch.sync(&dirs) {
                // New directories: walk again for what was created before their watch;
                // files changed too recently: take them once settled.
                Ok(added) if added || unsettled > 0 => pending.touch(Instant::now()),
                Ok(_) => {}
                Err(e) => {
                    warn!("{}", limit_message(&watch.root, dirs.len(), &e));
                    return;
                }
            },
            Err(e) => warn!("watch: reload failed, still serving the previous content: {e}"),
        }
    }
}

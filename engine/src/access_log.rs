//! `--access-log`: where the lines go, and when each worker writes them.
//!
//! The connections of a worker append their lines to the worker's buffer in its
//! [`Context`] (duet-http formats them). The worker's [`AccessLogWriter`] writes that
//! buffer with one `write(2)` (the file is opened `O_APPEND`, so the workers' writes
//! never interleave within a write) at two points:
//!
//! - **before the loop waits for events** ([`AccessLogWriter::turn_end`]): once per
//!   loop turn that produced lines, never once per request. Under load a turn answers
//!   many requests, so the write is shared by all of them; an idle server has written
//!   everything before it sleeps, so no line waits for the next request.
//! - **when the worker stops** ([`AccessLogWriter::finish`]), graceful shutdown or not:
//!   no line of an answered request is lost.
//!
//! A write error is logged once and turns the log off for that worker (never a panic,
//! never a retry loop). [`AccessLog::reopen`] (on SIGHUP) opens the path again; each
//! worker switches to the new file at its next write, so a rotated log is let go of.

use duet_http::Context;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tracing::warn;

/// A buffer that grew past this (a turn with very many requests) is given back after
/// its write.
const KEEP_CAPACITY: usize = 1 << 20;

/// The access log every worker writes to: a file opened for appending, or standard
/// output.
#[derive(Debug)]
pub struct AccessLog {
    /// `None`: standard output (not reopened).
    path: Option<PathBuf>,
    file: Mutex<Arc<File>>,
    /// Bumped by every reopen; a worker compares it with the one of its file.
    generation: AtomicU64,
}

impl AccessLog {
    /// Opens `target` for appending (created with mode 0644 if missing), or standard
    /// output for `-`.
    pub fn open(target: &Path) -> io::Result<Arc<AccessLog>> {
        let (path, file) = if target == Path::new("-") {
            (None, File::from(io::stdout().as_fd().try_clone_to_owned()?))
        } else {
            (Some(target.to_path_buf()), open_append(target)?)
        };
        Ok(Arc::new(AccessLog { path, file: Mutex::new(Arc::new(file)), generation: AtomicU64::new(0) }))
    }

    /// Opens the path again (after a log rotation moved it); the workers switch at
    /// their next write. On error the current file stays in use. Standard output is
    /// left as is.
    pub fn reopen(&self) -> io::Result<()> {
        let Some(path) = &self.path else { return Ok(()) };
        let file = open_append(path)?;
        let mut current = self.file.lock().unwrap_or_else(|e| e.into_inner());
        *current = Arc::new(file);
        self.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// What the log is written to, for messages: the path, or `-`.
    pub fn target(&self) -> String {
        self.path.as_ref().map_or_else(|| "-".to_string(), |p| p.display().to_string())
    }

    fn current(&self) -> (Arc<File>, u64) {
        let file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        (Arc::clone(&file), self.generation.load(Ordering::Acquire))
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    File::options().append(true).create(true).open(path)
}

/// One worker's writer of its access log lines (a no-op when the log is off).
#[derive(Debug)]
pub struct AccessLogWriter {
    /// The log, the file this worker writes to and that file's generation.
    log: Option<(Arc<AccessLog>, Arc<File>, u64)>,
}

impl AccessLogWriter {
    /// A writer for `log` (`None`: off). Turns the log on in `ctx` when there is one.
    pub fn new(log: Option<Arc<AccessLog>>, ctx: &mut Context) -> AccessLogWriter {
        let log = log.map(|log| {
            let (file, generation) = log.current();
            (log, file, generation)
        });
        if log.is_some() {
            ctx.enable_access_log();
        }
        AccessLogWriter { log }
    }

    /// The loop is about to wait for events: writes the lines of this turn, if any.
    #[inline]
    pub fn turn_end(&mut self, ctx: &mut Context) {
        if self.log.is_some() {
            self.write(ctx);
        }
    }

    /// The worker stops: writes every line left.
    pub fn finish(&mut self, ctx: &mut Context) {
        self.turn_end(ctx);
    }

    fn write(&mut self, ctx: &mut Context) {
        let Some(lines) = ctx.access_log_lines() else { return };
        if lines.is_empty() {
            return;
        }
        let Some((log, file, generation)) = self.log.as_mut() else { return };
        if log.generation.load(Ordering::Relaxed) != *generation {
            (*file, *generation) = log.current();
        }
        let result = (&**file).write_all(lines);
        lines.clear();
        if lines.capacity() > KEEP_CAPACITY {
            *lines = Vec::new();
        }
        if let Err(e) = result {
            warn!("cannot write the access log {}: {e}; access logging is off for this worker", log.target());
            self.log = None;
            ctx.disable_access_log();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use duet_http::{Connection, Limits, Site};
    use std::time::{Instant, SystemTime};

    fn temp_path(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("duet-access-log-{}-{tag}", std::process::id()))
    }

    /// A context with the log on, and one connection that answered `n` requests.
    fn answered(writer_log: Option<Arc<AccessLog>>, n: usize) -> (Context, AccessLogWriter) {
        let mut ctx = Context::new(Arc::new(Site::hello()), Limits::default(), Instant::now(), SystemTime::now());
        let writer = AccessLogWriter::new(writer_log, &mut ctx);
        let mut conn = Connection::new(&ctx);
        for _ in 0..n {
            conn.handle_input(&mut ctx, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        }
        (ctx, writer)
    }

    #[test]
    fn a_turn_end_appends_the_lines_once_and_empties_the_buffer() {
        let path = temp_path("append");
        std::fs::write(&path, "before\n").unwrap();
        let log = AccessLog::open(&path).expect("open");
        let (mut ctx, mut writer) = answered(Some(log), 3);
        writer.turn_end(&mut ctx);
        assert_eq!(ctx.access_log_lines().map(|l| l.len()), Some(0));
        writer.finish(&mut ctx); // nothing left: writes nothing
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert_eq!(lines[0], "before", "appended, not truncated");
        assert!(lines[1..].iter().all(|l| l.contains("\"GET / HTTP/1.1\" 200 13 ")), "{text}");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_write_error_turns_the_log_off_for_the_worker() {
        // A file opened read-only: every write fails (EBADF).
        let path = temp_path("readonly");
        std::fs::write(&path, "").unwrap();
        let log = Arc::new(AccessLog {
            path: Some(path.clone()),
            file: Mutex::new(Arc::new(File::open(&path).unwrap())),
            generation: AtomicU64::new(0),
        });
        let (mut ctx, mut writer) = answered(Some(log), 1);
        writer.turn_end(&mut ctx);
        assert!(!ctx.access_log_enabled() && writer.log.is_none());
        writer.finish(&mut ctx); // off: nothing happens
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_reopen_sends_the_next_lines_to_the_new_file() {
        let path = temp_path("reopen");
        let rotated = temp_path("reopen.1");
        let _ = std::fs::remove_file(&path);
        let log = AccessLog::open(&path).expect("open");
        let (mut ctx, mut writer) = answered(Some(Arc::clone(&log)), 1);
        writer.turn_end(&mut ctx);
        std::fs::rename(&path, &rotated).unwrap();
        log.reopen().expect("reopen");
        let mut conn = Connection::new(&ctx);
        conn.handle_input(&mut ctx, b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n");
        writer.turn_end(&mut ctx);
        let old = std::fs::read_to_string(&rotated).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert!(old.contains("GET / HTTP") && !old.contains("/second"), "{old}");
        assert!(new.contains("GET /second HTTP") && new.lines().count() == 1, "{new}");
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(&rotated);
    }

    #[test]
    fn off_costs_nothing_and_writes_nothing() {
        let (mut ctx, mut writer) = answered(None, 1);
        assert!(!ctx.access_log_enabled());
        assert!(ctx.access_log_lines().is_none());
        writer.turn_end(&mut ctx);
        writer.finish(&mut ctx);
    }
}

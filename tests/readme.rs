//! Every shell example in the documentation (README.md, CONTRIBUTING.md and docs/*.md) runs
//! as written.
//!
//! Each ```sh block is run by `bash -e -o pipefail` in an empty temporary directory, with
//! the `duet` under test first on `PATH`, so a command that fails fails the block, and what
//! it writes to relative paths goes away with the directory; since readers may run them in
//! the clone, each name a block leaves there must be in .gitignore. A block that cannot run here (a
//! release build, minutes of benchmarks, a server in the foreground until Ctrl-C) says so in
//! the Markdown source with an HTML comment on the line before its fence,
//! `<!-- not run: REASON -->`, which readers do not see. Every other block runs, so a new
//! example that cannot run fails this test instead of escaping it. Failures name the file
//! and the line of the block's fence.
//!
//! The one change made to a block: its port 8080 becomes a free port picked for that block
//! (every block its own), so the test does not depend on 8080 being free on the machine and
//! no block waits for the previous block's server to let go of its port. Each block runs in
//! a process group of its own, killed when the block ends, fails or times out, so servers an
//! example starts never outlive it.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long one block may run. The runnable examples take a few seconds (the longest has a
/// 5 s load run); this only turns a hang into a failure on a busy machine.
const BLOCK_TIMEOUT: Duration = Duration::from_secs(90);

/// What the runnable examples call besides duet and coreutils; checked up front so a
/// missing one is one clear line rather than a failed block. A minimal Debian or Ubuntu
/// image has all of them but curl, which the README lists as a prerequisite.
const TOOLS: &[&str] = &["bash", "curl", "gzip", "cmp"];

/// Commands a runnable example may not call: a fresh machine does not have them, and duet's
/// own output does their job.
const NOT_ON_A_FRESH_MACHINE: &[&str] = &["jq"];

const MARKER_START: &str = "<!-- not run:";
const MARKER_END: &str = "-->";

/// One fenced shell block of a Markdown file.
#[derive(Debug)]
struct Block {
    /// Where its opening fence is: the file's path from the crate root, a colon, the line
    /// (1-based).
    at: String,
    text: String,
    /// The reason given by a `<!-- not run: ... -->` marker, if it has one.
    not_run: Option<String>,
}

/// The shell blocks of `markdown`, the text of the file `file`, with their markers. A marker
/// that is not on the line just before a shell block's fence, or that gives no reason, is an
/// error: it would otherwise exempt nothing, or exempt a block without saying why.
fn shell_blocks(file: &str, markdown: &str) -> Result<Vec<Block>, String> {
    let mut blocks = Vec::new();
    let mut lines = markdown.lines().enumerate().peekable();
    let mut pending: Option<(usize, String)> = None;
    while let Some((i, line)) = lines.next() {
        let trimmed = line.trim();
        if let Some(rest) = trimmed.strip_prefix(MARKER_START) {
            if let Some((at, _)) = pending.take() {
                return Err(format!("{file}:{}: a not-run marker with no shell block after it", at + 1));
            }
            let reason = rest.strip_suffix(MARKER_END).map(str::trim).unwrap_or_default();
            if reason.is_empty() {
                return Err(format!(
                    "{file}:{}: `{trimmed}` needs a reason and a closing `-->` on the same line",
                    i + 1
                ));
            }
            pending = Some((i, reason.to_string()));
            continue;
        }
        let Some(info) = trimmed.strip_prefix("```") else {
            if let Some((at, _)) = pending.take() {
                return Err(format!("{file}:{}: a not-run marker must be the line just before a ```sh fence", at + 1));
            }
            continue;
        };
        let marker = pending.take();
        let is_shell = matches!(info.trim(), "sh" | "bash" | "shell" | "console");
        if marker.is_some() && !is_shell {
            return Err(format!("{file}:{}: a not-run marker before a ```{info} block, which is never run", i + 1));
        }
        let mut text = String::new();
        let mut closed = false;
        for (_, body) in lines.by_ref() {
            if body.trim_start().starts_with("```") {
                closed = true;
                break;
            }
            text.push_str(body);
            text.push('\n');
        }
        if !closed {
            return Err(format!("{file}:{}: a code block that is never closed", i + 1));
        }
        if is_shell {
            blocks.push(Block { at: format!("{file}:{}", i + 1), text, not_run: marker.map(|(_, reason)| reason) });
        }
    }
    match pending {
        Some((at, _)) => Err(format!("{file}:{}: a not-run marker at the end of the file", at + 1)),
        None => Ok(blocks),
    }
}

/// The first command of `script` (continuation lines joined) that starts `duet serve`
/// without `--port`.
fn serve_without_port(script: &str) -> Option<String> {
    let joined = script.replace("\\\n", " ");
    joined.lines().map(str::trim).find(|l| l.contains("duet serve") && !l.contains("--port")).map(str::to_string)
}

/// A port nothing listens on now (the kernel's pick for port 0, let go at once).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind 127.0.0.1:0").port()
}

/// Kills a process group with SIGKILL when dropped: whatever a block left running goes,
/// also when the block failed or the test panicked.
struct GroupGuard(libc::pid_t);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        // SAFETY: kill takes a process group id (negated) and a signal; the group is the
        // one the block's bash leads, created for it. Failure (ESRCH, the group is gone)
        // is fine.
        unsafe { libc::kill(-self.0, libc::SIGKILL) };
    }
}

/// What a finished block did.
struct Outcome {
    /// `None` when it did not finish within [`BLOCK_TIMEOUT`].
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
}

/// Runs `script` with `bash -e -o pipefail` in `dir` with `bin_dir` first on `PATH`.
fn run_block(script: &str, dir: &Path, bin_dir: &Path) -> Outcome {
    // Output goes to files, not pipes: a server a block leaves behind would hold a pipe
    // open and keep a reader waiting.
    let out = dir.join("..").join("stdout.txt");
    let err = dir.join("..").join("stderr.txt");
    let path = std::env::join_paths(
        std::iter::once(bin_dir.to_path_buf())
            .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )
    .expect("a PATH");
    let child = Command::new("bash")
        .args(["-e", "-o", "pipefail", "-c", script])
        .current_dir(dir)
        .env("PATH", path)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("create stdout file"))
        .stderr(std::fs::File::create(&err).expect("create stderr file"))
        .process_group(0)
        .spawn()
        .expect("spawn bash");
    let _group = GroupGuard(child.id() as libc::pid_t);
    let (tx, rx) = mpsc::channel();
    let mut child = child;
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let status = rx.recv_timeout(BLOCK_TIMEOUT).ok().map(|r| r.expect("wait for bash"));
    drop(_group);
    let read = |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    Outcome { status, stdout: read(&out), stderr: read(&err) }
}

/// The last `n` lines of `s`, for a failure message.
fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The documentation files whose examples run, as paths from the crate root: README.md,
/// CONTRIBUTING.md, then docs/*.md in name order (not the results.md files that `duet compare
/// --out` writes into docs/'s subdirectories).
fn documentation_files(root: &Path) -> Vec<String> {
    let mut docs: Vec<String> = std::fs::read_dir(root.join("docs"))
        .expect("read docs/")
        .map(|entry| entry.expect("a docs/ entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".md"))
        .map(|name| format!("docs/{name}"))
        .collect();
    docs.sort();
    let mut files = vec!["README.md".to_string(), "CONTRIBUTING.md".to_string()];
    files.extend(docs);
    files
}

/// The names a .gitignore of plain names ignores at the top of the clone: `/NAME`,
/// `/NAME/` and `NAME` (no globs, no negations: .gitignore has none).
fn gitignored_names(gitignore: &str) -> Vec<String> {
    gitignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_start_matches('/').trim_end_matches('/').to_string())
        .collect()
}

/// The entries of `dir` (where a block ran) that none of `ignored` covers, sorted.
fn unignored_entries(dir: &Path, ignored: &[String]) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read the block's directory")
        .map(|entry| entry.expect("an entry").file_name().to_string_lossy().into_owned())
        .filter(|name| !ignored.contains(name))
        .collect();
    names.sort();
    names
}

/// The first word of `script` that names a command in [`NOT_ON_A_FRESH_MACHINE`].
fn fresh_machine_lacks(script: &str) -> Option<&'static str> {
    let words: Vec<&str> = script.split(|c: char| !c.is_ascii_alphanumeric()).collect();
    NOT_ON_A_FRESH_MACHINE.iter().copied().find(|tool| words.contains(tool))
}

#[test]
fn doc_markers_parse_and_need_a_reason_and_servers_name_their_port() {
    let ok = "text\n<!-- not run: forever -->\n```sh\nduet serve\n```\n```sh\necho hi\n```\n```text\nnot shell\n```\n";
    let blocks = shell_blocks("docs/x.md", ok).expect("parses");
    assert_eq!(blocks.len(), 2);
    assert_eq!(blocks[0].not_run.as_deref(), Some("forever"));
    assert_eq!((blocks[0].at.as_str(), blocks[0].text.as_str()), ("docs/x.md:3", "duet serve\n"));
    assert_eq!((blocks[1].at.as_str(), blocks[1].not_run.as_deref()), ("docs/x.md:6", None));
    assert_eq!(serve_without_port("duet serve \\\n  --port 8080 &\n"), None);
    assert_eq!(serve_without_port("duet load -c1 x\nduet serve --dir . &\n").as_deref(), Some("duet serve --dir . &"));
    assert_eq!(fresh_machine_lacks("duet load --json x | jq .requests\n"), Some("jq"));
    assert_eq!(fresh_machine_lacks("curl -s x | gzip -d\n"), None);
    let ignored = gitignored_names("/target\n# examples\n/public/\nfeed.xml\n\n");
    assert_eq!(ignored, ["target", "public", "feed.xml"]);
    let dir = tempfile::tempdir().unwrap();
    for name in ["public", "feed.xml", "stray.txt", "left-over"] {
        std::fs::write(dir.path().join(name), "").unwrap();
    }
    assert_eq!(unignored_entries(dir.path(), &ignored), ["left-over", "stray.txt"]);
    for bad in [
        "<!-- not run: -->\n```sh\nx\n```\n",
        "<!-- not run: why -->\n\n```sh\nx\n```\n",
        "<!-- not run: why -->\n```text\nx\n```\n",
        "<!-- not run: why\n```sh\nx\n```\n",
        "```sh\nx\n",
        "<!-- not run: why -->\n",
    ] {
        let err = shell_blocks("docs/x.md", bad).expect_err(bad);
        assert!(err.starts_with("docs/x.md:"), "{err} names no file and line");
    }
}

#[test]
fn every_documented_example_runs_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut blocks = Vec::new();
    for file in documentation_files(root) {
        let text = std::fs::read_to_string(root.join(&file)).unwrap_or_else(|e| panic!("read {file}: {e}"));
        blocks.extend(shell_blocks(&file, &text).unwrap_or_else(|e| panic!("{e}")));
    }
    let missing: Vec<&str> = TOOLS
        .iter()
        .copied()
        .filter(|tool| {
            !Command::new("bash")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    assert!(
        missing.is_empty(),
        "the documented examples need {} on PATH (apt-get install {})",
        missing.join(", "),
        missing.join(" ")
    );
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_duet")).parent().expect("the binary's directory");
    let ignored = gitignored_names(&std::fs::read_to_string(root.join(".gitignore")).expect("read .gitignore"));
    let mut failures = Vec::new();
    let mut ran = Vec::new();
    for block in &blocks {
        // Even blocks that are not run must at least be shell a reader can paste.
        let syntax =
            Command::new("bash").args(["-n", "-c", &block.text]).stderr(Stdio::piped()).output().expect("bash -n");
        if !syntax.status.success() {
            failures.push(format!("{}: not valid shell: {}", block.at, String::from_utf8_lossy(&syntax.stderr)));
            continue;
        }
        if block.not_run.is_some() {
            continue;
        }
        if let Some(line) = serve_without_port(&block.text) {
            failures.push(format!(
                "{}: `{line}` listens on the default port: write `--port 8080` so this test can move it to a free one",
                block.at
            ));
            continue;
        }
        if block.text.split(|c: char| !c.is_ascii_alphanumeric()).any(|word| word == "sleep") {
            failures.push(format!(
                "{}: a sleep is a guess at how long the machine takes: wait for the port \
                 (`curl -s --retry 5 --retry-connrefused ...`)",
                block.at
            ));
            continue;
        }
        if let Some(tool) = fresh_machine_lacks(&block.text) {
            failures.push(format!(
                "{}: calls {tool}, which a fresh machine does not have: use duet's own output \
                 (the text report, `grep`, `--latency`)",
                block.at
            ));
            continue;
        }
        ran.push(block.at.as_str());
        let script = block.text.replace("8080", &free_port().to_string());
        let tmp = tempfile::tempdir().expect("a temporary directory");
        let work = tmp.path().join("work");
        std::fs::create_dir(&work).expect("create the work directory");
        let outcome = run_block(&script, &work, bin_dir);
        let verdict = match outcome.status {
            Some(status) if status.success() => {
                // Run in the clone, as readers may, what it leaves must not show in `git status`.
                let unignored = unignored_entries(&work, &ignored);
                if !unignored.is_empty() {
                    failures.push(format!(
                        "{}: the example leaves {} behind, which .gitignore misses (add /NAME)",
                        block.at,
                        unignored.join(", ")
                    ));
                }
                continue;
            }
            Some(status) => format!("exited with {status}"),
            None => format!(
                "did not finish within {BLOCK_TIMEOUT:?}: a block that runs long or until stopped needs \
                 `<!-- not run: REASON -->` on the line before its fence"
            ),
        };
        failures.push(format!(
            "{}: the example {verdict}\n--- script ---\n{script}--- stdout (tail) ---\n{}\n--- stderr (tail) ---\n{}",
            block.at,
            tail(&outcome.stdout, 20),
            tail(&outcome.stderr, 20)
        ));
    }
    // Shown with --nocapture, and under a failure: which blocks ran.
    println!("ran {} of {} shell blocks: {}", ran.len(), blocks.len(), ran.join(", "));
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // A parser that lost the blocks would pass vacuously.
    for file in ["README.md", "docs/serving.md", "docs/load.md"] {
        assert!(
            ran.iter().any(|at| at.starts_with(&format!("{file}:"))),
            "no block of {file} ran; ran: {}",
            ran.join(", ")
        );
    }
    assert!(ran.len() >= 6, "only {} blocks ran: {}", ran.len(), ran.join(", "));
}

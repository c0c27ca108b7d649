//! What the subcommands print on standard output.

use std::io::Write;

/// Writes `text` to standard output. A closed pipe (`duet load ... | head -3`) is the
/// reader's choice, not an error: the rest is dropped quietly. Any other failure is a
/// one-line error.
pub fn print(text: &str) -> Result<(), String> {
    print_bytes(text.as_bytes())
}

/// [`print()`] for bytes (a man page).
pub fn print_bytes(bytes: &[u8]) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(format!("cannot write to standard output: {e}")),
    }
}

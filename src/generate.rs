//! `duet generate`: the man page and shell completions, made from the same clap
//! definitions as `--help` ([`crate::cli::command`]), as `rg --generate` does.

use clap::{Args, ValueEnum};
use clap_complete::Shell;
use std::io::Write;
use std::process::ExitCode;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// The man page, roff for man(1): `duet generate man > duet.1; man ./duet.1`.
    Man,
    /// Completions for bash, e.g. into ~/.local/share/bash-completion/completions/duet.
    CompleteBash,
    /// Completions for zsh, as a file `_duet` in a directory of $fpath.
    CompleteZsh,
    /// Completions for fish, e.g. into ~/.config/fish/completions/duet.fish.
    CompleteFish,
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// What to write to standard output.
    #[arg(value_enum)]
    pub kind: Kind,
}

pub fn generate(args: GenerateArgs) -> ExitCode {
    let mut out = Vec::new();
    let written = match args.kind {
        Kind::Man => man(&mut out),
        Kind::CompleteBash => complete(Shell::Bash, &mut out),
        Kind::CompleteZsh => complete(Shell::Zsh, &mut out),
        Kind::CompleteFish => complete(Shell::Fish, &mut out),
    };
    // A closed pipe (`duet generate man | head`) is the reader's choice, not an error.
    match written.and_then(|()| std::io::stdout().lock().write_all(&out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("duet: error: cannot write to standard output: {e}");
            ExitCode::FAILURE
        }
    }
}

fn complete(shell: Shell, out: &mut Vec<u8>) -> std::io::Result<()> {
    clap_complete::generate(shell, &mut crate::cli::command(), "duet", out);
    Ok(())
}

/// One page for the whole program: duet's own sections, then a section per subcommand
/// with its synopsis, description and options, each help group a subsection.
fn man(out: &mut Vec<u8>) -> std::io::Result<()> {
    let mut cmd = crate::cli::command();
    // Sets each subcommand's name in usage lines to `duet SUBCOMMAND`.
    cmd.build();
    let page = clap_mangen::Man::new(cmd.clone());
    page.render_title(out)?;
    page.render_name_section(out)?;
    page.render_synopsis_section(out)?;
    page.render_description_section(out)?;
    page.render_options_section(out)?;
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = sub.get_bin_name().unwrap_or(sub.get_name()).to_uppercase();
        writeln!(out, ".SH \"{name}\"")?;
        let page = clap_mangen::Man::new(sub.clone());
        for render in [
            clap_mangen::Man::render_synopsis_section,
            clap_mangen::Man::render_description_section,
            clap_mangen::Man::render_options_section,
        ] {
            let mut section = Vec::new();
            render(&page, &mut section)?;
            // Sections of the subcommand's own page become subsections of its section here.
            let text = String::from_utf8_lossy(&section).replace("\n.SH ", "\n.SS ");
            let text = text.strip_prefix(".SH ").map_or(text.clone(), |rest| format!(".SS {rest}"));
            out.extend_from_slice(text.as_bytes());
        }
    }
    page.render_version_section(out)
}

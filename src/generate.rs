//! `duet generate`: the man page and shell completions, made from the same clap
//! definitions as `--help` (the command main passes in), as `rg --generate` does.

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

/// Writes what `args` asks for, made from `cmd` (duet's whole command line).
pub fn generate(args: GenerateArgs, cmd: clap::Command) -> ExitCode {
    let mut out = Vec::new();
    let written = match args.kind {
        Kind::Man => man(cmd, &mut out),
        Kind::CompleteBash => complete(cmd, Shell::Bash, &mut out),
        Kind::CompleteZsh => complete(cmd, Shell::Zsh, &mut out),
        Kind::CompleteFish => complete(cmd, Shell::Fish, &mut out),
    };
    match written.map_err(|e| e.to_string()).and_then(|()| crate::output::print_bytes(&out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("duet: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn complete(mut cmd: clap::Command, shell: Shell, out: &mut Vec<u8>) -> std::io::Result<()> {
    clap_complete::generate(shell, &mut cmd, "duet", out);
    Ok(())
}

/// One page for the whole program: duet's own sections, then a section per subcommand
/// with its synopsis, description and options, each help group a subsection.
fn man(mut cmd: clap::Command, out: &mut Vec<u8>) -> std::io::Result<()> {
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

//! Draws the charts of `duet compare --out DIR` again from DIR/results.json, for each DIR
//! given: after a change to how charts are drawn, the committed ones in docs/ follow it
//! without new measurements (the figures are those the run recorded).
//!
//! `cargo run -p duet-loadtest --example charts -- docs/results docs/ladder ...`

use duet_loadtest::compare::Results;
use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let dirs: Vec<String> = std::env::args().skip(1).collect();
    if dirs.is_empty() {
        eprintln!("usage: charts DIR... (each DIR holds a results.json of duet compare --out)");
        return ExitCode::from(2);
    }
    for dir in &dirs {
        let file = Path::new(dir).join("results.json");
        let drawn = std::fs::read_to_string(&file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))
            .and_then(|text| Results::from_json(&file.display().to_string(), &text))
            .and_then(|results| results.write_charts(Path::new(dir)));
        match drawn {
            Ok(paths) => {
                for path in paths {
                    println!("{}", path.display());
                }
            }
            Err(e) => {
                eprintln!("charts: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

//! The `atomrl` command line: parses arguments, runs one sub-command, prints errors as one line.

use clap::Parser;

fn main() {
    let cli = atomrl::cli::Cli::parse();
    atomrl::backend::cpu::join_thread_pool();
    if let Err(err) = atomrl::cli::run(cli) {
        // `{:#}` prints the whole context chain on one line: "loading model: reading x: ...".
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

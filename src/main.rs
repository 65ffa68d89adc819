//! The `agentlab` binary: parse the command line, hand over to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = agentlab::cli::Cli::parse();
    agentlab::app::main(cli)
}

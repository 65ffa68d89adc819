//! The `agentlab` binary: parse the command line, hand over to the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = agentlab::cli::Cli::parse_args();
    agentlab::cli::main(cli)
}

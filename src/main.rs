use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = tidings::cli::Cli::parse();
    match tidings::cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line, with the cause chain, as scripts expect.
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

//! `pssctl`: parses arguments and runs [`pssctl::execute`]; errors are one line
//! on stderr and a non-zero exit.

use clap::Parser;
use pssctl::{execute, Cli};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = Cli::parse();
    let mut out = std::io::stdout();
    if let Err(e) = execute(cli, &mut out).await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

//! `pssctl`: parses arguments and runs [`pss_controlplane::cli::execute`]; errors are one line
//! on stderr and a non-zero exit.

use clap::Parser;
use pss_controlplane::cli::{execute, Cli};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = Cli::parse();
    let mut out = std::io::stdout();
    if let Err(e) = execute(cli, &mut out).await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

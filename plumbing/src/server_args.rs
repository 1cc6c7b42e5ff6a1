//! The flags every PSS server binary shares (the shared token and the log format), and the
//! first steps of each one's `main`: logging, the token, the listener.

use std::path::PathBuf;

/// `--token`/`PSS_TOKEN`, `--token-file`/`PSS_TOKEN_FILE` and `--log-format`, flattened into
/// each server's clap `Args`.
#[derive(clap::Args, Debug, Clone)]
pub struct ServerArgs {
    /// Shared auth token (at least 16 bytes): the seed's credential, an operator's with TLS;
    /// required with --insecure. Prefer --token-file or the PSS_TOKEN
    /// environment variable: a value given here is visible to every user in `ps`.
    #[arg(long, env = "PSS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the shared auth token (its trailing newline is ignored).
    #[arg(long, env = "PSS_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

impl ServerArgs {
    /// Sets up logging, then loads and checks the token: the start of every server's `main`.
    pub fn start(&self) -> Result<String, String> {
        crate::logging::init(&self.log_format);
        crate::token::load(self.token.clone(), self.token_file.as_deref())
    }

    /// Like [`ServerArgs::start`] where the token is optional (TLS: certificates are the
    /// credential); a token that is given must still be a good one.
    pub fn start_optional(&self) -> Result<Option<String>, String> {
        crate::logging::init(&self.log_format);
        if self.token.as_deref().is_none_or(str::is_empty) && self.token_file.is_none() {
            return Ok(None);
        }
        crate::token::load(self.token.clone(), self.token_file.as_deref()).map(Some)
    }
}

/// Binds the TCP listener of a server for a listen address as users write it (`:50051`); the
/// error names the address and the reason.
pub async fn bind(listen: &str) -> Result<tokio::net::TcpListener, String> {
    let addr = crate::addr::parse_listen(listen)?;
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("binding {addr}: {e}"))
}

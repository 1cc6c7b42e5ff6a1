//! The client configuration file pssctl reads (and `pss-controller` writes for the local
//! operator on first start): the controller address(es), the CA, and a credential (a
//! certificate and key, or the seed's token). YAML, `0600`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A client configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Controller addresses (`host:port`), tried in order.
    #[serde(default)]
    pub controllers: Vec<String>,
    /// The cluster CA, PEM.
    #[serde(default)]
    pub ca: String,
    /// The name the controller's certificate carries (default `pss-controller`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// This user's certificate, PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// Its private key, PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Or the seed's shared token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl ClientConfig {
    pub fn load(path: &Path) -> Result<ClientConfig> {
        let text = crate::files::read_text(path)?;
        serde_saphyr::from_str(&text)
            .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::files::private_dir(dir)?;
        }
        let text = serde_saphyr::to_string(self)
            .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
        crate::files::write_private(path, &text)
    }

    /// The file without its secrets (`pssctl config view`).
    pub fn redacted(&self) -> ClientConfig {
        let hide = |s: &Option<String>| s.as_ref().map(|_| "REDACTED".to_string());
        ClientConfig {
            key: hide(&self.key),
            token: hide(&self.token),
            ..self.clone()
        }
    }
}

/// The per-user default path: `$XDG_CONFIG_HOME/pss/config.yaml`, else
/// `$HOME/.config/pss/config.yaml`.
pub fn default_path() -> Option<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|x| !x.is_empty()) {
        return Some(PathBuf::from(x).join("pss/config.yaml"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".config/pss/config.yaml"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_round_trip_and_view_hides_secrets() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("sub/config.yaml");
        let c = ClientConfig {
            controllers: vec!["127.0.0.1:50051".into()],
            ca: "-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n".into(),
            certificate: Some("CERT".into()),
            key: Some("SECRET KEY".into()),
            token: None,
            server_name: None,
        };
        c.save(&path).unwrap();
        assert_eq!(ClientConfig::load(&path).unwrap(), c);
        let view = serde_saphyr::to_string(&c.redacted()).unwrap();
        assert!(
            !view.contains("SECRET KEY") && view.contains("REDACTED"),
            "{view}"
        );
    }
}

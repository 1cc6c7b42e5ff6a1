//! Files that hold secrets: directories `0700`, keys `0600`, written whole (temporary file,
//! then rename) so a crash never leaves half a key; and the controller's PKI directory.
//!
//! `<data-dir>/pki/`: `ca.crt`, `ca.key`, `controller.crt` (leaf, then the CA), `controller.key`.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::ca::Ca;
use crate::identity::{Identity, Role};
use crate::tls::LiveCert;
use crate::{Error, Result};

fn file_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::File {
        path: path.display().to_string(),
        source,
    }
}

/// Creates `dir` (and parents) and makes it `0700`.
pub fn private_dir(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(file_err(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(file_err(dir))
}

/// Writes `contents` to `path` with mode `0600`, atomically.
pub fn write_private(path: &Path, contents: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(file_err(&tmp))?;
    f.write_all(contents.as_bytes()).map_err(file_err(&tmp))?;
    f.sync_all().map_err(file_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(file_err(path))
}

/// Reads a small text file (certificates, keys, tokens: at most 64 KiB).
pub fn read_text(path: &Path) -> Result<String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(file_err(path))?;
    let mut s = String::new();
    f.take(64 * 1024)
        .read_to_string(&mut s)
        .map_err(file_err(path))?;
    Ok(s)
}

/// This machine's host name (a proxy's default name), lowercased; `localhost` when unknown.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_ascii_lowercase())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The default state directory of a PSS process (`agent`, `proxy`): `/var/lib/pss/<what>` as
/// root, else `$XDG_STATE_HOME/pss/<what>` or `~/.local/state/pss/<what>`.
pub fn default_state_dir(what: &str) -> PathBuf {
    let root = std::env::var("USER").is_ok_and(|u| u == "root")
        || std::env::var("HOME").is_ok_and(|h| h == "/root");
    if root {
        return PathBuf::from("/var/lib/pss").join(what);
    }
    if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("pss").join(what);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".local/state/pss").join(what)
}

/// Lifetime of the controller's own certificate; it is issued again at start when less than
/// a third of it is left.
pub const CONTROLLER_CERT_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// The controller's PKI: its CA and its certificate.
pub struct ControllerPki {
    pub dir: PathBuf,
    pub ca: Ca,
    /// The controller's certificate (chain: leaf, CA) and key: served to clients and presented
    /// when dialing agents.
    pub cert: Arc<LiveCert>,
}

impl ControllerPki {
    /// Loads the PKI of `dir`, creating the CA on first start, and the controller certificate
    /// (with `sans` beside `pss-controller`) when missing or near its end. Blocking.
    pub fn load_or_create(dir: &Path, sans: &[String]) -> Result<ControllerPki> {
        private_dir(dir)?;
        let (ca_crt, ca_key) = (dir.join("ca.crt"), dir.join("ca.key"));
        let ca = if ca_crt.exists() {
            Ca::from_pem(&read_text(&ca_crt)?, &read_text(&ca_key)?)?
        } else {
            let ca = Ca::generate()?;
            write_private(&ca_key, ca.key_pem())?;
            write_private(&ca_crt, ca.cert_pem())?;
            tracing::info!(dir = %dir.display(), digest = %hex::encode(ca.digest()), "created the cluster CA");
            ca
        };
        let (crt, key) = (dir.join("controller.crt"), dir.join("controller.key"));
        let fresh = crt.exists()
            && read_text(&crt)
                .ok()
                .and_then(|pem| crate::pem::first_cert_der(&pem).ok())
                .and_then(|der| crate::peer::identity_of(&der).ok())
                .is_some_and(|p| {
                    let left = p.not_after_ms - pss_plumbing::clock::now_ms();
                    left > (CONTROLLER_CERT_TTL.as_millis() / 3) as i64
                });
        if !fresh {
            let me = Identity::new(Role::Controller, "controller")?;
            let (issued, key_pem) = ca.issue_with_key(&me, CONTROLLER_CERT_TTL, sans)?;
            write_private(&key, &key_pem)?;
            write_private(&crt, &format!("{}{}", issued.cert_pem, ca.cert_pem()))?;
        }
        let cert = LiveCert::from_pem(&read_text(&crt)?, &read_text(&key)?)?;
        Ok(ControllerPki {
            dir: dir.to_path_buf(),
            ca,
            cert,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pki_is_created_once_with_private_modes_and_reloaded() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pki");
        let first = ControllerPki::load_or_create(&dir, &["localhost".into()]).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("ca.key")), 0o600);
        assert_eq!(mode(&dir.join("controller.key")), 0o600);
        let leaf = first.cert.leaf_der();
        let again = ControllerPki::load_or_create(&dir, &[]).unwrap();
        assert_eq!(again.ca.digest(), first.ca.digest());
        assert_eq!(again.cert.leaf_der(), leaf, "a fresh certificate is kept");
    }
}

//! Where pssctl connects and with what: the flags (`--controller`, `--token`, `--ca`,
//! `--insecure`) over the configuration file (`--config`, `PSS_CONFIG`, or the per-user
//! default `~/.config/pss/config.yaml`, which `pss-controller` writes for the local root
//! operator on first start). [`resolve`] is pure over what was read, and tested.
//!
//! Several controllers (`--controller a:50051,b:50051`, or the file's `controllers` list) are
//! tried in order: a command runs on the first that accepts the connection.

use pss_security::config_file::ClientConfig;

use crate::CliError;

/// The address when neither a flag nor a configuration gives one.
pub const DEFAULT_CONTROLLER: &str = "localhost:50051";

/// How to reach the controller.
#[derive(Debug, Clone, PartialEq)]
pub struct Connection {
    /// Controller addresses, tried in order (at least one).
    pub addresses: Vec<String>,
    /// The token sent as `Bearer` (the seed's credential), if any.
    pub token: Option<String>,
    /// TLS: the CA, the controller's certificate name, and this user's certificate and key.
    /// `None`: plaintext (`--insecure`).
    pub tls: Option<Tls>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tls {
    pub ca_pem: String,
    pub server_name: String,
    pub cert: Option<(String, String)>,
}

/// What the flags say (already read from files where they name files).
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub controller: Option<String>,
    pub token: Option<String>,
    pub ca_pem: Option<String>,
    pub insecure: bool,
}

/// Flags win over the file; a token given as a flag is used instead of the file's certificate.
pub fn resolve(flags: Flags, file: Option<&ClientConfig>) -> Result<Connection, CliError> {
    let addresses = match (&flags.controller, file.map(|f| &f.controllers)) {
        (Some(list), _) => pss_plumbing::controllers::parse_list(list)
            .map_err(|e| CliError::Usage(format!("--controller: {e}")))?,
        (None, Some(list)) if !list.is_empty() => {
            let list: Vec<String> = list.iter().map(|a| a.trim().to_string()).collect();
            pss_plumbing::controllers::check_list(&list).map_err(|e| {
                CliError::Usage(format!("`controllers` of the configuration file: {e}"))
            })?;
            list
        }
        _ => vec![DEFAULT_CONTROLLER.to_string()],
    };
    let file_token = file.and_then(|f| f.token.clone());
    if flags.insecure {
        let token = flags.token.or(file_token).ok_or_else(|| {
            CliError::Usage("--insecure needs the shared token (--token-file or PSS_TOKEN)".into())
        })?;
        return Ok(Connection {
            addresses,
            token: Some(token),
            tls: None,
        });
    }
    let ca_pem = flags
        .ca_pem
        .or_else(|| file.map(|f| f.ca.clone()).filter(|c| !c.trim().is_empty()))
        .ok_or_else(|| {
            CliError::Usage(
                "no CA to verify the controller with: pass --ca <data-dir>/pki/ca.crt or \
                 --config FILE (pss-controller writes ~/.config/pss/config.yaml for root on \
                 first start), or --insecure against an --insecure controller"
                    .into(),
            )
        })?;
    let server_name = file
        .and_then(|f| f.server_name.clone())
        .unwrap_or_else(|| "pss-controller".into());
    let (token, cert) = match flags.token {
        Some(t) => (Some(t), None),
        None => match file {
            Some(ClientConfig {
                certificate: Some(c),
                key: Some(k),
                ..
            }) => (None, Some((c.clone(), k.clone()))),
            _ => (file_token, None),
        },
    };
    if token.is_none() && cert.is_none() {
        return Err(CliError::Usage(
            "no credential: a configuration with a certificate (--config), or the shared token \
             (--token-file or PSS_TOKEN)"
                .into(),
        ));
    }
    Ok(Connection {
        addresses,
        token,
        tls: Some(Tls {
            ca_pem,
            server_name,
            cert,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> ClientConfig {
        ClientConfig {
            controllers: vec!["ctl:1".into()],
            ca: "CA".into(),
            certificate: Some("C".into()),
            key: Some("K".into()),
            ..Default::default()
        }
    }

    #[test]
    fn the_file_gives_address_ca_and_certificate() {
        let c = resolve(Flags::default(), Some(&file())).unwrap();
        assert_eq!(c.addresses, ["ctl:1"]);
        assert_eq!(c.token, None);
        let tls = c.tls.unwrap();
        assert_eq!(tls.ca_pem, "CA");
        assert_eq!(tls.cert, Some(("C".into(), "K".into())));
        assert_eq!(tls.server_name, "pss-controller");
    }

    #[test]
    fn flags_win_and_a_token_flag_replaces_the_certificate() {
        let flags = Flags {
            controller: Some("other:2".into()),
            token: Some("t".repeat(16)),
            ca_pem: Some("CA2".into()),
            insecure: false,
        };
        let c = resolve(flags, Some(&file())).unwrap();
        assert_eq!(c.addresses, ["other:2"]);
        assert_eq!(c.token.as_deref(), Some("tttttttttttttttt"));
        let tls = c.tls.unwrap();
        assert_eq!((tls.ca_pem.as_str(), tls.cert), ("CA2", None));
    }

    #[test]
    fn without_ca_or_credential_the_error_says_what_to_pass() {
        let e = resolve(Flags::default(), None).unwrap_err().to_string();
        assert!(e.contains("--ca") && e.contains("--insecure"), "{e}");
        let only_ca = Flags {
            ca_pem: Some("CA".into()),
            ..Default::default()
        };
        let e = resolve(only_ca, None).unwrap_err().to_string();
        assert!(e.contains("no credential"), "{e}");
        let insecure = Flags {
            insecure: true,
            ..Default::default()
        };
        assert!(resolve(insecure, None)
            .unwrap_err()
            .to_string()
            .contains("token"));
        let c = resolve(
            Flags {
                insecure: true,
                token: Some("x".into()),
                ..Default::default()
            },
            None,
        )
        .unwrap();
        assert_eq!(
            (c.addresses, c.tls),
            (vec![DEFAULT_CONTROLLER.to_string()], None)
        );
    }

    #[test]
    fn every_controller_of_the_flag_or_the_file_is_used_in_order() {
        let mut f = file();
        f.controllers = vec!["ctl:1".into(), " ctl:2 ".into(), "ctl:3".into()];
        let c = resolve(Flags::default(), Some(&f)).unwrap();
        assert_eq!(c.addresses, ["ctl:1", "ctl:2", "ctl:3"]);
        let flags = Flags {
            controller: Some("a:1, b:2".into()),
            ..Default::default()
        };
        let c = resolve(flags, Some(&f)).unwrap();
        assert_eq!(c.addresses, ["a:1", "b:2"], "the flag wins over the file");
    }

    #[test]
    fn bad_controller_lists_are_usage_errors_naming_where_they_came_from() {
        let bad = |list: &str| {
            let flags = Flags {
                controller: Some(list.into()),
                ..Default::default()
            };
            resolve(flags, Some(&file())).unwrap_err().to_string()
        };
        for (list, says) in [
            ("a:1,,b:2", "empty"),
            ("a:1,a:1", "twice"),
            ("a", "no port"),
            ("", "empty"),
        ] {
            let e = bad(list);
            assert!(
                e.starts_with("--controller: ") && e.contains(says),
                "{list}: {e}"
            );
        }
        let many: Vec<String> = (1..=17).map(|i| format!("h{i}:1")).collect();
        assert!(bad(&many.join(",")).contains("17 addresses"));
        let mut f = file();
        f.controllers = vec!["a:1".into(), "a:1".into()];
        let e = resolve(Flags::default(), Some(&f)).unwrap_err().to_string();
        assert!(
            e.contains("configuration file") && e.contains("twice"),
            "{e}"
        );
    }
}

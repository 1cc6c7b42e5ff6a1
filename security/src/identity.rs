//! Who a certificate names: a [`Role`] and a name, written in the certificate as the URI
//! subject alternative name `spiffe://pss/<role>/<name>` (and as its common name). Pure: no
//! I/O, no clock; parsing is total (never panics) and round-trips (proptest below).

use std::fmt;
use std::str::FromStr;

/// Scheme and trust domain of every identity URI.
pub const URI_PREFIX: &str = "spiffe://pss/";
/// Longest name an identity may carry (a DNS-1123 label: node names are).
pub const MAX_NAME_BYTES: usize = 63;

/// What a credential may do (see [`crate::policy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// The controller itself: its serving certificate, and its client certificate when it
    /// dials agents back.
    Controller,
    /// A person or script with pssctl: everything.
    Operator,
    /// A node's agent: register, heartbeat and report for its own node only.
    Agent,
    /// A proxy: endpoint watches and read-only calls.
    Proxy,
}

impl Role {
    /// Every role, for tables and tests.
    pub const ALL: [Role; 4] = [Role::Controller, Role::Operator, Role::Agent, Role::Proxy];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Controller => "controller",
            Role::Operator => "operator",
            Role::Agent => "agent",
            Role::Proxy => "proxy",
        }
    }

    /// Roles a join token may be made for (never the controller's).
    pub fn joinable(self) -> bool {
        self != Role::Controller
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "role {:?}: expected agent, proxy or operator",
                    crate::shorten(s)
                )
            })
    }
}

/// A role and a name: what a certificate asserts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub role: Role,
    pub name: String,
}

impl Identity {
    /// An identity after checking `name` (see [`check_name`]).
    pub fn new(role: Role, name: &str) -> Result<Identity, String> {
        check_name(name)?;
        Ok(Identity {
            role,
            name: name.to_string(),
        })
    }

    /// `spiffe://pss/<role>/<name>`.
    pub fn uri(&self) -> String {
        format!("{URI_PREFIX}{}/{}", self.role, self.name)
    }

    /// The identity a URI names, if it is a well-formed PSS identity URI.
    pub fn from_uri(uri: &str) -> Option<Identity> {
        let rest = uri.strip_prefix(URI_PREFIX)?;
        let (role, name) = rest.split_once('/')?;
        Identity::new(role.parse().ok()?, name).ok()
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.role, self.name)
    }
}

/// A name is a DNS-1123 label: 1 to 63 of `a-z 0-9 -`, starting and ending alphanumeric.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "name {:?}: a DNS-1123 label is required (1-{MAX_NAME_BYTES} of a-z, 0-9 and -, \
             starting and ending with a letter or digit)",
            crate::shorten(name)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn identities_read_back_from_their_uri() {
        let id = Identity::new(Role::Agent, "node-a").unwrap();
        assert_eq!(id.uri(), "spiffe://pss/agent/node-a");
        assert_eq!(Identity::from_uri(&id.uri()), Some(id));
        assert_eq!(Identity::from_uri("spiffe://pss/agent/Node_A"), None);
        assert_eq!(Identity::from_uri("spiffe://other/agent/a"), None);
        assert_eq!(Identity::from_uri("spiffe://pss/root/a"), None);
        assert_eq!(Identity::from_uri("spiffe://pss/agent/a/b"), None);
        assert!(check_name(&"a".repeat(64)).unwrap_err().contains("1-63"));
        assert!("admin"
            .parse::<Role>()
            .unwrap_err()
            .contains("agent, proxy"));
        assert!(!Role::Controller.joinable());
    }

    proptest! {
        #[test]
        fn uri_parsing_never_panics_and_round_trips(s in ".{0,100}", name in "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", r in 0usize..4) {
            let _ = Identity::from_uri(&s);
            let id = Identity::new(Role::ALL[r], &name).unwrap();
            prop_assert_eq!(Identity::from_uri(&id.uri()), Some(id));
        }
    }
}

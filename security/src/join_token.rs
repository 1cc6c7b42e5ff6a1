//! Join tokens, Swarm-style: `PSS1-<role>-<ca>-<id>-<secret>`, where `<ca>` is the SHA-256
//! of the cluster CA certificate (DER, 64 hex digits) so the joiner can verify the controller
//! before it sends anything, `<id>` (16 hex digits) names the token in `pssctl token list` and
//! `revoke`, and `<secret>` (64 hex digits, 256 random bits) is what proves the holder may
//! join. The controller keeps only the SHA-256 of the secret.
//!
//! Pure: formatting, parsing (bounded, total, errors naming the field) and the secret's
//! digest; randomness comes in as arguments.

use std::fmt;
use std::str::FromStr;

use crate::identity::Role;

/// The version prefix.
pub const PREFIX: &str = "PSS1";
/// Longest text accepted as a token before any parsing.
pub const MAX_TOKEN_BYTES: usize = 256;

/// A parsed join token.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// The role the certificate it buys will have.
    pub role: Role,
    /// SHA-256 of the CA certificate (DER) the joiner must find at the controller.
    pub ca_digest: [u8; 32],
    /// Public id of the token.
    pub id: [u8; 8],
    /// The secret.
    pub secret: [u8; 32],
}

impl fmt::Debug for JoinToken {
    /// Everything but the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("role", &self.role)
            .field("ca_digest", &hex::encode(self.ca_digest))
            .field("id", &self.id_hex())
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX}-{}-{}-{}-{}",
            self.role,
            hex::encode(self.ca_digest),
            hex::encode(self.id),
            hex::encode(self.secret)
        )
    }
}

impl JoinToken {
    /// The token's id as shown by `pssctl token list`.
    pub fn id_hex(&self) -> String {
        hex::encode(self.id)
    }

    /// SHA-256 of the secret: what the controller stores and compares.
    pub fn secret_digest(&self) -> [u8; 32] {
        crate::sha256(&self.secret)
    }
}

/// Why a text is not a join token; each names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("join token: longer than {MAX_TOKEN_BYTES} bytes")]
    TooLong,
    #[error("join token: expected {PREFIX}-<role>-<ca>-<id>-<secret>")]
    Shape,
    #[error("join token: role: {0}")]
    Role(String),
    #[error("join token: {field}: expected {digits} hex digits")]
    Hex { field: &'static str, digits: usize },
}

fn hex_field<const N: usize>(field: &'static str, s: &str) -> Result<[u8; N], TokenError> {
    let bad = || TokenError::Hex {
        field,
        digits: N * 2,
    };
    if s.len() != N * 2 {
        return Err(bad());
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).map_err(|_| bad())?;
    Ok(out)
}

impl FromStr for JoinToken {
    type Err = TokenError;
    fn from_str(s: &str) -> Result<JoinToken, TokenError> {
        let s = s.trim();
        if s.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLong);
        }
        let parts: Vec<&str> = s.split('-').collect();
        let [prefix, role, ca, id, secret] = parts[..] else {
            return Err(TokenError::Shape);
        };
        if prefix != PREFIX {
            return Err(TokenError::Shape);
        }
        let role: Role = role.parse().map_err(TokenError::Role)?;
        if !role.joinable() {
            return Err(TokenError::Role("controller tokens do not exist".into()));
        }
        Ok(JoinToken {
            role,
            ca_digest: hex_field("ca", ca)?,
            id: hex_field("id", id)?,
            secret: hex_field("secret", secret)?,
        })
    }
}

/// Is `s` a token id (16 hex digits)?
pub fn parse_id(s: &str) -> Result<String, TokenError> {
    let s = s.trim();
    if let Ok(t) = s.parse::<JoinToken>() {
        return Ok(t.id_hex());
    }
    hex_field::<8>("id", s).map(hex::encode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn token() -> JoinToken {
        JoinToken {
            role: Role::Agent,
            ca_digest: [0xab; 32],
            id: [1, 2, 3, 4, 5, 6, 7, 8],
            secret: [7; 32],
        }
    }

    #[test]
    fn tokens_print_and_parse_back() {
        let t = token();
        let text = t.to_string();
        assert!(text.starts_with("PSS1-agent-abab"), "{text}");
        assert_eq!(text.parse::<JoinToken>().unwrap(), t);
        assert_eq!(parse_id(&text).unwrap(), "0102030405060708");
        assert_eq!(parse_id("0102030405060708").unwrap(), "0102030405060708");
        assert!(!format!("{t:?}").contains(&hex::encode([7u8; 32])));
    }

    #[test]
    fn bad_tokens_are_refused_naming_the_field() {
        let good = token().to_string();
        assert_eq!(
            "x".repeat(300).parse::<JoinToken>(),
            Err(TokenError::TooLong)
        );
        assert_eq!("PSS1-agent".parse::<JoinToken>(), Err(TokenError::Shape));
        let e = good
            .replacen("agent", "root", 1)
            .parse::<JoinToken>()
            .unwrap_err();
        assert!(e.to_string().contains("role"), "{e}");
        let e = good
            .replacen("agent", "controller", 1)
            .parse::<JoinToken>()
            .unwrap_err();
        assert!(matches!(e, TokenError::Role(_)));
        let short = &good[..good.len() - 1];
        assert!(short
            .parse::<JoinToken>()
            .unwrap_err()
            .to_string()
            .contains("secret"));
        let e = good
            .replacen("abab", "zzzz", 1)
            .parse::<JoinToken>()
            .unwrap_err();
        assert!(e.to_string().contains("ca"), "{e}");
    }

    proptest! {
        #[test]
        fn parsing_is_total_and_round_trips(s in ".{0,300}", ca in any::<[u8; 32]>(), id in any::<[u8; 8]>(), secret in any::<[u8; 32]>(), r in 1usize..4) {
            let _ = s.parse::<JoinToken>();
            let t = JoinToken { role: Role::ALL[r], ca_digest: ca, id, secret };
            prop_assert_eq!(t.to_string().parse::<JoinToken>(), Ok(t.clone()));
            prop_assert!(t.to_string().len() <= MAX_TOKEN_BYTES);
        }
    }
}

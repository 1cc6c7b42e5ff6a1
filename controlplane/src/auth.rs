//! Server side of the shared-token scheme: every gRPC server (controller and agent) wraps its
//! services with [`TokenCheck`], which compares `authorization: Bearer <token>` in constant time
//! and answers `Unauthenticated` otherwise.

use std::sync::Arc;

use subtle::ConstantTimeEq;
use tonic::service::Interceptor;
use tonic::{Request, Status};

pub use pss_proto::auth::{BearerToken, AUTHORIZATION};

/// Interceptor that admits only requests carrying the shared token.
#[derive(Clone)]
pub struct TokenCheck {
    /// The expected header value, `Bearer <token>`, as bytes.
    expected: Arc<[u8]>,
}

impl TokenCheck {
    /// A check for `token`, which must not be empty.
    pub fn new(token: &str) -> Self {
        assert!(!token.is_empty(), "the shared token must not be empty");
        Self {
            expected: format!("Bearer {token}").into_bytes().into(),
        }
    }

    /// True when `header` is exactly the expected value (constant time in the value's bytes).
    pub fn admits(&self, header: Option<&[u8]>) -> bool {
        match header {
            Some(h) => bool::from(h.ct_eq(&self.expected)),
            None => false,
        }
    }
}

impl Interceptor for TokenCheck {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let header = req.metadata().get(AUTHORIZATION).map(|v| v.as_bytes());
        if header.is_none() {
            return Err(Status::unauthenticated(
                "missing token (authorization metadata)",
            ));
        }
        if self.admits(header) {
            Ok(req)
        } else {
            Err(Status::unauthenticated("invalid token"))
        }
    }
}

/// The shared token a server binary was started with; refuses to go on without one.
pub fn require_token(token: Option<String>) -> crate::Result<String> {
    match token {
        Some(t) if !t.is_empty() => Ok(t),
        _ => Err(crate::Error::Config(
            "a shared token is required: pass --token or set PSS_TOKEN".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_refuse_to_start_without_a_token() {
        assert!(require_token(None)
            .unwrap_err()
            .to_string()
            .contains("--token or set PSS_TOKEN"));
        assert!(require_token(Some(String::new())).is_err());
        assert_eq!(require_token(Some("t".into())).unwrap(), "t");
    }

    #[test]
    fn admits_only_the_exact_token() {
        let c = TokenCheck::new("s3cret");
        assert!(c.admits(Some(b"Bearer s3cret")));
        assert!(!c.admits(Some(b"Bearer s3cre")));
        assert!(!c.admits(Some(b"Bearer s3cret ")));
        assert!(!c.admits(Some(b"s3cret")));
        assert!(!c.admits(None));
    }

    #[test]
    fn interceptor_refuses_missing_and_wrong_tokens() {
        let mut c = TokenCheck::new("t");
        let missing = c.call(Request::new(())).unwrap_err();
        assert_eq!(missing.code(), tonic::Code::Unauthenticated);
        let mut wrong = Request::new(());
        wrong
            .metadata_mut()
            .insert(AUTHORIZATION, "Bearer x".parse().unwrap());
        assert_eq!(
            c.call(wrong).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        let mut good = Request::new(());
        good.metadata_mut()
            .insert(AUTHORIZATION, "Bearer t".parse().unwrap());
        assert!(c.call(good).is_ok());
    }
}

//! The shared-token scheme: every gRPC call carries `authorization: Bearer <token>`
//! ([`BearerToken`], client side); every server (controller and agent) wraps its services with
//! [`TokenCheck`], which compares the header in constant time and answers `Unauthenticated`
//! otherwise.

use std::sync::Arc;

use subtle::ConstantTimeEq;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// Metadata key that carries the token.
pub const AUTHORIZATION: &str = "authorization";

/// A tonic interceptor that attaches the shared token to every outgoing request.
#[derive(Clone)]
pub struct BearerToken {
    /// Pre-built header value so each call only clones it.
    value: Option<MetadataValue<Ascii>>,
}

impl BearerToken {
    /// Builds the interceptor. An empty token sends no header (the server will refuse the call,
    /// which is what a missing token must produce). Fails if the token is not valid ASCII
    /// header text.
    pub fn new(token: &str) -> Result<Self, Status> {
        if token.is_empty() {
            return Ok(Self { value: None });
        }
        let value = format!("Bearer {token}").parse().map_err(|_| {
            Status::invalid_argument("token contains characters not allowed in a header")
        })?;
        Ok(Self { value: Some(value) })
    }
}

impl Interceptor for BearerToken {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.value {
            req.metadata_mut().insert(AUTHORIZATION, v.clone());
        }
        Ok(req)
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

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

//! Client side of the shared-token scheme: every gRPC call carries
//! `authorization: Bearer <token>`. Servers check it in constant time (see the controller's
//! `auth` module).

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

//! gRPC clients for dialing agents back (RunPod, StopPod, PodLogs), one lazily connected
//! channel per node and address.
//!
//! With TLS the controller presents its own certificate and accepts only a certificate from
//! the cluster CA naming `agent/<node>` for the node that registered the address: a process
//! squatting on an address gets a refused handshake, and no request byte. With `--insecure`
//! each call carries the shared token, as in the seed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pss_proto::auth::BearerToken;
use pss_proto::v1::agent_client::AgentClient;
use pss_security::tls::{client_config, Dialer, Expect, LiveCert};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::{Error, Result};

/// A client for one agent.
pub(crate) type Client = AgentClient<InterceptedService<Channel, BearerToken>>;

/// Channels to agents, keyed by node and address; channels reconnect by themselves.
pub(crate) struct AgentPool {
    /// Token interceptor cloned into every client (sends nothing with TLS).
    token: BearerToken,
    /// The CA and the controller's certificate (`None`: plaintext).
    tls: Option<(String, Arc<LiveCert>)>,
    channels: Mutex<HashMap<(String, String), Channel>>,
}

impl AgentPool {
    pub fn new(token: &str, tls: Option<(String, Arc<LiveCert>)>) -> Result<Self> {
        let token = if tls.is_some() { "" } else { token };
        Ok(AgentPool {
            token: BearerToken::new(token)?,
            tls,
            channels: Mutex::new(HashMap::new()),
        })
    }

    /// A client for the agent of `node` at `address` (`host:port`).
    pub fn client(&self, node: &str, address: &str) -> Result<Client> {
        let mut channels = self.channels.lock().expect("agent pool poisoned");
        let key = (node.to_string(), address.to_string());
        let channel = match channels.get(&key) {
            Some(c) => c.clone(),
            None => {
                let dialer = match &self.tls {
                    Some((ca_pem, cert)) => Dialer::tls(
                        client_config(
                            Expect::Agent {
                                ca_pem: ca_pem.clone(),
                                node: node.to_string(),
                            },
                            Some(cert.clone()),
                        )
                        .map_err(|e| Error::Invalid(format!("agent {node}: {e}")))?,
                    ),
                    None => Dialer::plaintext(),
                };
                let endpoint = dialer
                    .endpoint(address)
                    .map_err(|e| Error::Invalid(format!("agent address {address:?}: {e}")))?
                    .connect_timeout(Duration::from_secs(3))
                    .timeout(Duration::from_secs(120))
                    .tcp_nodelay(true);
                let c = dialer.lazy(endpoint);
                channels.insert(key, c.clone());
                c
            }
        };
        Ok(AgentClient::with_interceptor(channel, self.token.clone()))
    }
}

//! gRPC clients for dialing agents back (RunPod, StopPod, PodLogs), one lazily connected
//! channel per agent address, each call carrying the shared token.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use pss_proto::auth::BearerToken;
use pss_proto::v1::agent_client::AgentClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::{Error, Result};

/// A client for one agent.
pub(crate) type Client = AgentClient<InterceptedService<Channel, BearerToken>>;

/// Channels to agents, keyed by address; channels reconnect by themselves.
pub(crate) struct AgentPool {
    /// Token interceptor cloned into every client.
    token: BearerToken,
    channels: Mutex<HashMap<String, Channel>>,
}

impl AgentPool {
    pub fn new(token: &str) -> Result<Self> {
        Ok(AgentPool {
            token: BearerToken::new(token)?,
            channels: Mutex::new(HashMap::new()),
        })
    }

    /// A client for the agent at `address` (`host:port`).
    pub fn client(&self, address: &str) -> Result<Client> {
        let mut channels = self.channels.lock().expect("agent pool poisoned");
        let channel = match channels.get(address) {
            Some(c) => c.clone(),
            None => {
                let endpoint = Endpoint::from_shared(pss_plumbing::addr::dial_uri(address))
                    .map_err(|e| Error::Invalid(format!("agent address {address:?}: {e}")))?
                    .connect_timeout(Duration::from_secs(3))
                    .timeout(Duration::from_secs(120))
                    .tcp_nodelay(true);
                let c = endpoint.connect_lazy();
                channels.insert(address.to_string(), c.clone());
                c
            }
        };
        Ok(AgentClient::with_interceptor(channel, self.token.clone()))
    }
}

//! How the driver process reaches each core: over QUIC ([`CoreClient`]), or, for a home core in
//! the same process, through that core server's in-process link ([`LocalLink`]: the same verify
//! queue and group commit, no network hop). The runner's loop is the same for both.

use std::sync::Arc;
use std::time::Duration;

use sleepyseal_core::protocol::{Request, Response};
use sleepyseal_core::AuthorityIndex;
use sleepyseal_net::server::{LocalLink, LocalLinkError, OwnHeader};
use sleepyseal_net::{ClientError, Clients, CoreClient};
use tokio::sync::watch;

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// Over QUIC.
    #[error(transparent)]
    Quic(#[from] ClientError),
    /// On the in-process link.
    #[error(transparent)]
    Local(#[from] LocalLinkError),
    /// No response in time on the in-process link.
    #[error("no response within {0:?}")]
    Timeout(Duration),
}

/// How one core is reached.
#[derive(Clone)]
pub enum Link {
    /// Over QUIC.
    Quic(Arc<CoreClient>),
    /// In the same process.
    Local(LocalLink),
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Link::Quic(client) => write!(f, "QUIC to core {}", client.index()),
            Link::Local(_) => write!(f, "in-process link"),
        }
    }
}

impl Link {
    /// Sends `request` and waits at most `timeout` for the response.
    pub async fn request(
        &self,
        request: Request,
        timeout: Duration,
    ) -> Result<Response, LinkError> {
        match self {
            Link::Quic(client) => Ok(client.request(&request, timeout).await?),
            Link::Local(link) => tokio::time::timeout(timeout, link.request(request))
                .await
                .map_err(|_| LinkError::Timeout(timeout))?
                .map_err(LinkError::from),
        }
    }
}

/// How every core of a committee is reached, in index order.
#[derive(Clone, Debug)]
pub struct Links {
    links: Vec<Link>,
    /// The core reached in process, if any.
    local: Option<AuthorityIndex>,
}

impl Links {
    /// Every core over QUIC.
    pub fn quic(clients: &Clients) -> Links {
        Links {
            links: clients.all().iter().cloned().map(Link::Quic).collect(),
            local: None,
        }
    }

    /// Core `home` through `link` (in this process), every other core over QUIC.
    pub fn with_local(clients: &Clients, home: AuthorityIndex, link: LocalLink) -> Links {
        let mut links = Links::quic(clients);
        if let Some(slot) = links.links.get_mut(home.as_usize()) {
            *slot = Link::Local(link);
            links.local = Some(home);
        }
        links
    }

    /// How core `index` is reached.
    pub fn link(&self, index: AuthorityIndex) -> &Link {
        &self.links[index.as_usize()]
    }

    /// The core reached in process and the own headers it builds, if any.
    pub fn local_headers(&self) -> Option<(AuthorityIndex, watch::Receiver<Option<OwnHeader>>)> {
        let home = self.local?;
        match &self.links[home.as_usize()] {
            Link::Local(link) => Some((home, link.own_headers())),
            Link::Quic(_) => None,
        }
    }
}

//! The peer table: which nodes this node knows, which it is connected to, and the
//! translation from ractor_cluster's session numbers to node names.
//!
//! It is fed by ractor_cluster's session callbacks and read by address resolution; it makes
//! no I/O of its own, so its rules are tested directly.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::NodeEvent;

/// One TCP session with a peer, as ractor_cluster reports it.
#[derive(Debug, Clone)]
struct Session {
    /// The socket address of the other end of this TCP connection.
    peer_addr: String,
    /// The peer's node name, once its handshake told us.
    name: Option<String>,
    /// The address the peer advertises for new connections.
    advertised: Option<SocketAddr>,
    authenticated: bool,
    ready: bool,
    /// The peer connected to us (not we to it).
    incoming: bool,
}

/// Known peers and live sessions.
#[derive(Debug, Default)]
pub(crate) struct Peers {
    /// Node name → the address to connect to it on.
    known: HashMap<String, SocketAddr>,
    /// ractor_cluster session number → session.
    sessions: HashMap<u64, Session>,
    /// Peers that said they are stopping: their going is no failure.
    leaving: std::collections::HashSet<String>,
}

/// Splits ractor_cluster's `name@host` into troupe's node name.
pub(crate) fn node_name(full: &str) -> &str {
    full.split_once('@').map_or(full, |(name, _)| name)
}

impl Peers {
    /// A peer said it is stopping.
    pub(crate) fn leaving(&mut self, name: &str) {
        self.leaving.insert(name.to_string());
    }

    /// Whether a peer that went down had said it was stopping (and forgets that it had).
    pub(crate) fn left(&mut self, name: &str) -> bool {
        self.leaving.remove(name)
    }

    pub(crate) fn add_known(&mut self, name: &str, addr: SocketAddr) {
        self.known.insert(name.to_string(), addr);
    }

    pub(crate) fn known_addr(&self, name: &str) -> Option<SocketAddr> {
        self.known.get(name).copied()
    }

    /// Known peers with no ready session.
    pub(crate) fn unconnected(&self) -> Vec<(String, SocketAddr)> {
        self.known
            .iter()
            .filter(|(name, _)| !self.is_connected(name))
            .map(|(n, a)| (n.clone(), *a))
            .collect()
    }

    pub(crate) fn is_connected(&self, name: &str) -> bool {
        self.sessions
            .values()
            .any(|s| s.ready && s.name.as_deref() == Some(name))
    }

    /// The peer with a ready session to `addr`, either the socket it connected on or the
    /// address it advertises.
    pub(crate) fn connected_at(&self, addr: SocketAddr) -> Option<String> {
        let text = addr.to_string();
        self.sessions
            .values()
            .find(|s| s.ready && (s.peer_addr == text || s.advertised == Some(addr)))
            .and_then(|s| s.name.clone())
    }

    /// The name of the peer behind a ractor_cluster session number.
    pub(crate) fn name_of_session(&self, session: u64) -> Option<String> {
        self.sessions.get(&session).and_then(|s| s.name.clone())
    }

    /// Names of the peers with a ready session.
    pub(crate) fn connected(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .sessions
            .values()
            .filter(|s| s.ready)
            .filter_map(|s| s.name.clone())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    pub(crate) fn opened(&mut self, session: u64, peer_addr: String, incoming: bool) {
        self.sessions.insert(
            session,
            Session {
                peer_addr,
                name: None,
                advertised: None,
                authenticated: false,
                ready: false,
                incoming,
            },
        );
    }

    /// Whether a session is still open and not yet authenticated.
    pub(crate) fn handshaking(&self, session: u64) -> bool {
        self.sessions
            .get(&session)
            .is_some_and(|s| !s.authenticated && !s.ready)
    }

    /// How many incoming sessions are open and not yet authenticated.
    pub(crate) fn incoming_handshaking(&self) -> usize {
        self.sessions
            .values()
            .filter(|s| s.incoming && !s.authenticated && !s.ready)
            .count()
    }

    pub(crate) fn authenticated(&mut self, session: u64, full_name: Option<&str>) {
        if let Some(s) = self.sessions.get_mut(&session) {
            s.authenticated = true;
            if let Some(full) = full_name {
                s.name = Some(node_name(full).to_string());
            }
        }
    }

    /// A session finished its state exchange: the peer is up, unless another session to it
    /// already was.
    pub(crate) fn ready(
        &mut self,
        session: u64,
        full_name: Option<&str>,
        advertised: Option<&str>,
    ) -> Option<NodeEvent> {
        let name = node_name(full_name?).to_string();
        let was_connected = self.is_connected(&name);
        // Back again: a later going is news again.
        self.leaving.remove(&name);
        let advertised = advertised.and_then(|a| a.parse::<SocketAddr>().ok());
        let s = self.sessions.get_mut(&session)?;
        s.ready = true;
        s.authenticated = true;
        s.name = Some(name.clone());
        s.advertised = advertised;
        let peer_addr = s.peer_addr.clone();
        if let Some(addr) = advertised {
            self.known.insert(name.clone(), addr);
        }
        (!was_connected).then_some(NodeEvent::Up {
            node: name,
            addr: peer_addr,
        })
    }

    /// A session closed. Returns the event it means: the peer went down (its last ready
    /// session closed), or a handshake failed.
    pub(crate) fn closed(&mut self, session: u64, full_name: Option<&str>) -> Option<NodeEvent> {
        let s = self.sessions.remove(&session)?;
        let name = s
            .name
            .clone()
            .or_else(|| full_name.map(|f| node_name(f).to_string()));
        if s.ready {
            let name = name?;
            return (!self.is_connected(&name)).then_some(NodeEvent::Down {
                node: name,
                addr: s.peer_addr,
            });
        }
        if s.authenticated {
            return None;
        }
        // A session that lost a simultaneous-connect election is closed unauthenticated too;
        // it is no failure when the peer is reachable through the winner.
        if let Some(n) = &name
            && self
                .sessions
                .values()
                .any(|o| o.authenticated && o.name.as_deref() == Some(n))
        {
            return None;
        }
        Some(NodeEvent::HandshakeFailed {
            node: name,
            addr: s.peer_addr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn up_once_and_down_only_when_the_last_session_closes() {
        let mut p = Peers::default();
        p.opened(1, "127.0.0.2:4000".into(), false);
        p.opened(2, "127.0.0.2:5000".into(), false);
        let up = p.ready(1, Some("b@127.0.0.2"), Some("127.0.0.2:4000"));
        assert!(matches!(up, Some(NodeEvent::Up { ref node, .. }) if node == "b"));
        assert!(p.ready(2, Some("b@127.0.0.2"), None).is_none());
        assert!(p.closed(1, None).is_none());
        assert!(matches!(p.closed(2, None), Some(NodeEvent::Down { .. })));
        assert_eq!(p.known_addr("b"), Some("127.0.0.2:4000".parse().unwrap()));
        assert_eq!(p.unconnected().len(), 1);
    }

    #[test]
    fn a_peer_that_said_it_leaves_has_left_once_and_is_news_again_after_it_returns() {
        let mut p = Peers::default();
        p.opened(1, "127.0.0.2:4000".into(), false);
        p.ready(1, Some("b@127.0.0.2"), None);
        p.leaving("b");
        assert!(matches!(p.closed(1, None), Some(NodeEvent::Down { .. })));
        assert!(p.left("b"));
        assert!(!p.left("b"), "forgotten once told");
        // It comes back: a later going, unannounced, is a failure again.
        p.leaving("b");
        p.opened(2, "127.0.0.2:4000".into(), false);
        p.ready(2, Some("b@127.0.0.2"), None);
        assert!(matches!(p.closed(2, None), Some(NodeEvent::Down { .. })));
        assert!(!p.left("b"));
    }

    #[test]
    fn a_session_closed_in_its_handshake_is_a_failed_handshake() {
        let mut p = Peers::default();
        p.opened(1, "127.0.0.2:4000".into(), false);
        let ev = p.closed(1, Some("b@127.0.0.2"));
        assert!(
            matches!(ev, Some(NodeEvent::HandshakeFailed { node: Some(ref n), .. }) if n == "b")
        );
    }

    #[test]
    fn an_election_loser_is_no_failure() {
        let mut p = Peers::default();
        p.opened(1, "x".into(), false);
        p.opened(2, "y".into(), false);
        p.authenticated(1, Some("b@h"));
        assert!(p.closed(2, Some("b@h")).is_none());
    }

    #[test]
    fn only_incoming_sessions_in_their_handshake_count_against_the_bound() {
        let mut p = Peers::default();
        p.opened(1, "x".into(), true);
        p.opened(2, "y".into(), true);
        p.opened(3, "z".into(), false);
        assert_eq!(p.incoming_handshaking(), 2);
        assert!(p.handshaking(1));
        p.authenticated(1, Some("b@h"));
        assert!(!p.handshaking(1));
        assert_eq!(p.incoming_handshaking(), 1);
        p.closed(2, None);
        assert!(!p.handshaking(2));
        assert_eq!(p.incoming_handshaking(), 0);
    }
}

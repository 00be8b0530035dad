//! The DRF sorter: who should be offered resources next.
//!
//! Clients are paths in a tree (`eng`, `eng/ml`): roles, and inside a role its frameworks.
//! A client's dominant share is the largest fraction it holds of any resource kind of the
//! cluster's total, divided by its weight. An inner node's allocation is the sum of its
//! subtree's, so siblings are compared as wholes. [`Sorter::sort`] orders siblings by
//! share, then by how many allocations they received, then by name, and returns the active
//! clients depth first. A path that is both a client and a parent (role `a` with a child
//! role `a/b`) is sorted as a virtual child `.` of itself, as in Mesos.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::protocol::{AgentId, Kind, Resources};

/// The name of the virtual child that stands for an inner node's own client.
const SELF: &str = ".";

#[derive(Debug, Clone, Default)]
struct Node {
    /// Whether this node is itself a client.
    client: bool,
    /// Whether the client takes part in sorting.
    active: bool,
    /// Its own allocation (without its children's).
    own: Resources,
    /// How many allocations it received itself.
    own_count: u64,
    /// Its subtree's allocation, itself included.
    subtree: Resources,
    /// How many allocations its subtree received. As in Mesos, it never goes down: not on
    /// giving back, not when a client below is removed.
    subtree_count: u64,
    children: BTreeMap<String, Node>,
}

/// Where a client (or a subtree) stands when siblings are ordered.
#[derive(Debug, Clone, PartialEq)]
pub struct Standing<'a> {
    /// Its weighted dominant share.
    pub share: f64,
    /// How many allocations it received (never decreasing).
    pub allocations: u64,
    /// Its name among its siblings.
    pub name: &'a str,
}

/// The policy that orders siblings: who is offered resources first. The sorter applies it
/// at every level of the tree (roles, sub-roles, frameworks within a role), so swapping it
/// swaps the allocator's fairness policy.
pub trait SortPolicy: Send + Sync + std::fmt::Debug {
    /// Whether `a` comes before `b`.
    fn order(&self, a: &Standing<'_>, b: &Standing<'_>) -> Ordering;
}

/// Dominant Resource Fairness: the lowest weighted dominant share first, then the fewest
/// allocations, then the name (Mesos' DRF sorter).
#[derive(Debug, Clone, Copy, Default)]
pub struct Drf;

impl SortPolicy for Drf {
    fn order(&self, a: &Standing<'_>, b: &Standing<'_>) -> Ordering {
        a.share
            .total_cmp(&b.share)
            .then(a.allocations.cmp(&b.allocations))
            .then_with(|| a.name.cmp(b.name))
    }
}

/// The sorter over a tree of clients, DRF unless given another [`SortPolicy`].
#[derive(Debug, Clone)]
pub struct Sorter {
    root: Node,
    weights: HashMap<String, f64>,
    agents: BTreeMap<AgentId, Resources>,
    /// The sum of `agents`, worked out when first asked after a change: every share divides
    /// by it, and a sort asks for every client's share.
    total: std::sync::OnceLock<Resources>,
    policy: Arc<dyn SortPolicy>,
}

impl Default for Sorter {
    fn default() -> Self {
        Sorter::with_policy(Arc::new(Drf))
    }
}

fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

impl Sorter {
    /// An empty DRF sorter.
    pub fn new() -> Sorter {
        Sorter::default()
    }

    /// An empty sorter ordering by `policy`.
    pub fn with_policy(policy: Arc<dyn SortPolicy>) -> Sorter {
        Sorter {
            root: Node::default(),
            weights: HashMap::new(),
            agents: BTreeMap::new(),
            total: std::sync::OnceLock::new(),
            policy,
        }
    }

    /// Its policy.
    pub fn policy(&self) -> Arc<dyn SortPolicy> {
        self.policy.clone()
    }

    fn node_mut(&mut self, path: &str) -> Option<&mut Node> {
        let mut node = &mut self.root;
        for seg in segments(path) {
            node = node.children.get_mut(seg)?;
        }
        Some(node)
    }

    fn node(&self, path: &str) -> Option<&Node> {
        let mut node = &self.root;
        for seg in segments(path) {
            node = node.children.get(seg)?;
        }
        Some(node)
    }

    /// Adds a client (inactive until [`Sorter::activate`]), creating the inner nodes of its
    /// path.
    pub fn add(&mut self, path: &str) {
        let mut node = &mut self.root;
        for seg in segments(path) {
            node = node.children.entry(seg.to_string()).or_default();
        }
        node.client = true;
    }

    /// Applies `f` to every node from the root down to `path` (the root excluded), if the
    /// path exists.
    fn along(&mut self, path: &str, mut f: impl FnMut(&mut Node, bool)) {
        if self.node(path).is_none() {
            return;
        }
        let segs: Vec<&str> = segments(path).collect();
        let mut node = &mut self.root;
        for (i, seg) in segs.iter().enumerate() {
            node = node.children.get_mut(*seg).expect("checked above");
            f(node, i + 1 == segs.len());
        }
    }

    /// Removes a client, and the inner nodes left without clients. Its allocation leaves
    /// its ancestors' totals; their allocation counts stay.
    pub fn remove(&mut self, path: &str) {
        let own = self.node(path).map_or(Resources::ZERO, |n| n.own);
        self.along(path, |node, last| {
            node.subtree = node.subtree.minus(own);
            if last {
                node.client = false;
                node.active = false;
                node.own = Resources::ZERO;
                node.own_count = 0;
            }
        });
        fn prune(node: &mut Node) -> bool {
            node.children.retain(|_, c| !prune(c));
            !node.client && node.children.is_empty()
        }
        prune(&mut self.root);
    }

    /// Whether `path` is a client.
    pub fn contains(&self, path: &str) -> bool {
        self.node(path).is_some_and(|n| n.client)
    }

    /// Lets a client take part in sorting.
    pub fn activate(&mut self, path: &str) {
        if let Some(node) = self.node_mut(path).filter(|n| n.client) {
            node.active = true;
        }
    }

    /// Keeps a client out of sorting (its allocation still counts for its parents).
    pub fn deactivate(&mut self, path: &str) {
        if let Some(node) = self.node_mut(path) {
            node.active = false;
        }
    }

    /// Sets the weight of a path (a role); shares under it are divided by it. Default 1.
    pub fn update_weight(&mut self, path: &str, weight: f64) {
        if weight.is_finite() && weight > 0.0 {
            self.weights
                .insert(segments(path).collect::<Vec<_>>().join("/"), weight);
        }
    }

    /// Adds an agent's resources to the cluster total (or replaces them).
    pub fn add_agent(&mut self, agent: AgentId, total: Resources) {
        self.agents.insert(agent, total);
        self.total = std::sync::OnceLock::new();
    }

    /// Takes an agent's resources out of the total.
    pub fn remove_agent(&mut self, agent: &AgentId) {
        self.agents.remove(agent);
        self.total = std::sync::OnceLock::new();
    }

    /// The cluster total.
    pub fn total(&self) -> Resources {
        *self.total.get_or_init(|| {
            self.agents
                .values()
                .fold(Resources::ZERO, |t, r| t.plus(*r))
        })
    }

    /// Records resources given to a client: its allocation and its allocation count grow,
    /// and its ancestors'.
    pub fn allocated(&mut self, path: &str, resources: Resources) {
        self.along(path, |node, last| {
            node.subtree = node.subtree.plus(resources);
            node.subtree_count += 1;
            if last {
                node.own = node.own.plus(resources);
                node.own_count += 1;
            }
        });
    }

    /// Records resources a client gave back (its allocation count stays).
    pub fn unallocated(&mut self, path: &str, resources: Resources) {
        self.along(path, |node, last| {
            node.subtree = node.subtree.minus(resources);
            if last {
                node.own = node.own.minus(resources);
            }
        });
    }

    /// Replaces `old` by `new` in a client's allocation (resources converted in place); the
    /// allocation count stays.
    pub fn update(&mut self, path: &str, old: Resources, new: Resources) {
        self.along(path, |node, last| {
            node.subtree = node.subtree.minus(old).plus(new);
            if last {
                node.own = node.own.minus(old).plus(new);
            }
        });
    }

    /// What a client (with its subtree) holds.
    pub fn allocation(&self, path: &str) -> Resources {
        self.node(path).map_or(Resources::ZERO, |n| n.subtree)
    }

    /// How many clients there are, active or not.
    pub fn count(&self) -> usize {
        fn count(node: &Node) -> usize {
            usize::from(node.client) + node.children.values().map(count).sum::<usize>()
        }
        count(&self.root)
    }

    fn weight(&self, path: &str) -> f64 {
        self.weights.get(path).copied().unwrap_or(1.0)
    }

    /// The dominant share of an allocation, against the cluster total. Kinds the cluster
    /// has none of do not count.
    pub fn dominant_share(&self, allocation: &Resources) -> f64 {
        let total = self.total();
        Kind::ALL
            .iter()
            .filter(|k| total.get(**k) > 0.0)
            .map(|k| allocation.get(*k) / total.get(*k))
            .fold(0.0, f64::max)
    }

    /// A client's (or inner node's) weighted dominant share, its whole subtree included.
    pub fn share(&self, path: &str) -> f64 {
        self.dominant_share(&self.allocation(path)) / self.weight(path)
    }

    /// The active clients, in the order they should be offered resources.
    pub fn sort(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.sort_node(&self.root, "", &mut out);
        out
    }

    fn sort_node(&self, node: &Node, path: &str, out: &mut Vec<String>) {
        // (share, count, name, path, is the node's own client)
        let mut entries: Vec<(f64, u64, String, String, bool)> = Vec::new();
        if node.client && !path.is_empty() && !node.children.is_empty() {
            // The virtual leaf's weight is always 1; the path's weight is the subtree's.
            let share = self.dominant_share(&node.own);
            entries.push((share, node.own_count, SELF.into(), path.to_string(), true));
        }
        for (name, child) in &node.children {
            let child_path = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}/{name}")
            };
            let share = self.dominant_share(&child.subtree) / self.weight(&child_path);
            entries.push((share, child.subtree_count, name.clone(), child_path, false));
        }
        entries.sort_by(|a, b| {
            let standing = |e: &(f64, u64, String, String, bool)| Standing {
                share: e.0,
                allocations: e.1,
                name: "",
            };
            self.policy.order(
                &Standing {
                    name: &a.2,
                    ..standing(a)
                },
                &Standing {
                    name: &b.2,
                    ..standing(b)
                },
            )
        });
        for (_, _, _, child_path, own) in entries {
            if own {
                if node.active {
                    out.push(child_path);
                }
                continue;
            }
            let Some(child) = node
                .children
                .get(child_path.rsplit('/').next().unwrap_or(""))
            else {
                continue;
            };
            if child.children.is_empty() {
                if child.client && child.active {
                    out.push(child_path);
                }
            } else {
                self.sort_node(child, &child_path, out);
            }
        }
    }
}

#[cfg(test)]
mod tests;

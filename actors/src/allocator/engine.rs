//! The offer cycle: which framework is offered which agent's free resources, by DRF between
//! roles and then between the frameworks of a role; decline filters, suppress and revive;
//! resources coming back; agents leaving; and, for a framework that got nothing, why.
//!
//! It is pure: time is an input (`now`, the time since some fixed start), and every method
//! returns what changed.
//!
//! A cycle has two stages. First, roles below their quota guarantee are offered what they
//! still lack, by DRF among them. Then everyone is offered the rest by DRF, less what unmet
//! guarantees still need (held back, as Mesos does, so that a guaranteed role gets its
//! share as soon as it asks). Static reservations go only to their role and its sub-roles;
//! quota limits cap a role with its sub-roles. Offer timeouts come next.

use std::collections::BTreeMap;
use std::time::Duration;

use super::Sorter;
use crate::protocol::{AgentId, FrameworkId, Resources};

/// The default time a declined offer's resources are not offered to the same framework
/// again (Mesos' `refuse_seconds`).
pub const DEFAULT_REFUSE: Duration = Duration::from_secs(5);

/// The least worth offering, as in Mesos: at least 0.01 cpus or 32 MiB of memory. Smaller
/// crumbs (what tasks leave of an agent) are not offered, so frameworks are not flooded with
/// offers nobody can use.
pub fn allocatable(resources: &Resources) -> bool {
    resources.cpus >= 0.01 || resources.mem_mib >= 32.0
}

/// An offer: an agent's resources, to a framework.
#[derive(Debug, Clone, PartialEq)]
pub struct Offer {
    /// To whom.
    pub framework: FrameworkId,
    /// Where.
    pub agent: AgentId,
    /// What.
    pub resources: Resources,
    /// The role they are reserved for, if they are.
    pub reservation: Option<String>,
}

/// Why a framework was not offered anything (the answer of [`Engine::explain`]).
#[derive(Debug, Clone, PartialEq)]
pub enum NotOffered {
    /// The framework is not known.
    UnknownFramework,
    /// It is not active (disconnected or deactivated).
    Inactive,
    /// It suppressed offers.
    Suppressed,
    /// There is no agent.
    NoAgents,
    /// Every agent's resources are in use or offered to others.
    NothingFree,
    /// What is free is reserved for other roles.
    AllReserved {
        /// The roles it is reserved for.
        roles: Vec<String>,
    },
    /// What is free is held back for the quota guarantees of other roles.
    HeldForGuarantees,
    /// Its role holds all its quota limit allows.
    QuotaLimitReached {
        /// The role (or the ancestor) whose limit is reached.
        role: String,
        /// The limit.
        limit: Resources,
    },
    /// It declined this agent's resources and the filter holds until `until`.
    Filtered {
        /// The agent.
        agent: AgentId,
        /// When the filter expires.
        until: Duration,
    },
}

#[derive(Debug, Clone)]
struct Agent {
    total: Resources,
    /// Its resources by pool: `None` unreserved, `Some(role)` reserved for a role (and its
    /// sub-roles).
    pools: BTreeMap<Option<String>, Pool>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Pool {
    total: Resources,
    /// Offered or used.
    allocated: Resources,
}

impl Pool {
    fn free(&self) -> Resources {
        self.total.minus(self.allocated)
    }
}

/// Whether a framework of `role` may use resources reserved for `reserved`.
fn may_use(role: &str, reserved: &str) -> bool {
    role == reserved || role.starts_with(&format!("{reserved}/"))
}

#[derive(Debug, Clone)]
struct Framework {
    role: String,
    active: bool,
    suppressed: bool,
    /// Per agent, what this framework refused there and until when.
    filters: BTreeMap<AgentId, Vec<Refusal>>,
}

/// Resources a framework refused (declined, or left unused in a launch), as in Mesos'
/// `RefusedOfferFilter`: until `until`, an offer of no more than them from the same pool
/// is not made to it again. More (a task on the agent ended meanwhile) is offered at once:
/// a framework that left 0 cpus and 4 GiB unused still hears of the next free cpu.
#[derive(Debug, Clone, PartialEq)]
struct Refusal {
    pool: Option<String>,
    resources: Resources,
    until: Duration,
}

impl Refusal {
    /// Whether offering `amount` of `pool` at `now` is what was refused.
    fn covers(&self, pool: &Option<String>, amount: &Resources, now: Duration) -> bool {
        now < self.until && &self.pool == pool && self.resources.contains(amount)
    }
}

/// The allocation engine.
#[derive(Debug, Clone, Default)]
pub struct Engine {
    agents: BTreeMap<AgentId, Agent>,
    frameworks: BTreeMap<FrameworkId, Framework>,
    roles: Sorter,
    /// Per role, its frameworks.
    within: BTreeMap<String, Sorter>,
    /// Quota limits: the most a role (with its sub-roles) may hold.
    limits: BTreeMap<String, Resources>,
    /// Quota guarantees: what a role is offered before anyone else, and what is held back
    /// for it while it has less.
    guarantees: BTreeMap<String, Resources>,
    /// What each framework holds (offered or used) on each agent, by pool.
    held: BTreeMap<(AgentId, FrameworkId, Option<String>), Resources>,
    /// The allocation interval: no filter is shorter (a decline lasts at least one cycle).
    interval: Duration,
}

/// The two stages of a cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Roles below their guarantee, up to it.
    Guarantees,
    /// Everyone, leaving what unmet guarantees still need.
    All,
}

impl Engine {
    /// An engine with nothing in it, allocating by DRF.
    pub fn new() -> Engine {
        Engine::default()
    }

    /// An engine with nothing in it, ordering roles and frameworks by `policy` instead of
    /// DRF (quotas, reservations and filters apply the same).
    pub fn with_policy(policy: std::sync::Arc<dyn super::sorter::SortPolicy>) -> Engine {
        Engine {
            roles: Sorter::with_policy(policy),
            ..Engine::default()
        }
    }

    /// Sets the allocation interval (the time between cycles): a decline filter lasts at
    /// least this long, so that it holds for at least one cycle.
    pub fn set_allocation_interval(&mut self, interval: Duration) {
        self.interval = interval;
    }

    /// Sets a role's weight: its share counts divided by it. Default 1.
    pub fn update_weight(&mut self, role: &str, weight: f64) {
        self.roles.update_weight(role, weight);
    }

    /// Forgets every framework's filters on an agent (its attributes changed, so what was
    /// declined may now be wanted).
    pub fn remove_filters(&mut self, agent: &AgentId) {
        for fw in self.frameworks.values_mut() {
            fw.filters.remove(agent);
        }
    }

    /// Records resources a framework already uses on an agent (tasks found running when an
    /// agent registers, or after a master failover).
    pub fn track_used(
        &mut self,
        framework: &FrameworkId,
        agent: &AgentId,
        resources: Resources,
        reservation: Option<&str>,
    ) {
        let pool = reservation.map(str::to_string);
        let Some(role) = self.frameworks.get(framework).map(|f| f.role.clone()) else {
            return;
        };
        if let Some(p) = self
            .agents
            .get_mut(agent)
            .and_then(|a| a.pools.get_mut(&pool))
        {
            p.allocated = p.allocated.plus(resources);
        } else {
            return;
        }
        self.charge(framework, &role, agent, &pool, resources);
    }

    fn charge(
        &mut self,
        framework: &FrameworkId,
        role: &str,
        agent: &AgentId,
        pool: &Option<String>,
        resources: Resources,
    ) {
        self.roles.allocated(role, resources);
        if let Some(sorter) = self.within.get_mut(role) {
            sorter.allocated(&framework.0, resources);
        }
        let held = self
            .held
            .entry((agent.clone(), framework.clone(), pool.clone()))
            .or_default();
        *held = held.plus(resources);
    }

    /// An agent joins with its resources.
    pub fn add_agent(&mut self, agent: AgentId, total: Resources) {
        self.roles.add_agent(agent.clone(), total);
        for sorter in self.within.values_mut() {
            sorter.add_agent(agent.clone(), total);
        }
        let mut pools = BTreeMap::new();
        pools.insert(
            None,
            Pool {
                total,
                allocated: Resources::ZERO,
            },
        );
        self.agents.insert(agent, Agent { total, pools });
    }

    /// Reserves part of an agent's unreserved resources for `role` (a static reservation):
    /// they are offered only to frameworks of that role or its sub-roles. Returns whether
    /// the agent had them free.
    pub fn reserve(&mut self, agent: &AgentId, role: &str, resources: Resources) -> bool {
        let Some(a) = self.agents.get_mut(agent) else {
            return false;
        };
        let unreserved = a.pools.entry(None).or_default();
        if !unreserved.free().contains(&resources) {
            return false;
        }
        unreserved.total = unreserved.total.minus(resources);
        let pool = a.pools.entry(Some(role.to_string())).or_default();
        pool.total = pool.total.plus(resources);
        true
    }

    /// An agent leaves: its resources leave the pool, and what frameworks held of it
    /// (offers and tasks, which the caller rescinds and marks) is taken back from their
    /// shares.
    pub fn remove_agent(&mut self, agent: &AgentId) {
        let held: Vec<(FrameworkId, Resources)> = self
            .held
            .iter()
            .filter(|((a, _, _), _)| a == agent)
            .map(|((_, f, _), r)| (f.clone(), *r))
            .collect();
        for (framework, resources) in held {
            self.unallocate(&framework, resources);
        }
        self.held.retain(|(a, _, _), _| a != agent);
        self.agents.remove(agent);
        self.roles.remove_agent(agent);
        for sorter in self.within.values_mut() {
            sorter.remove_agent(agent);
        }
        for fw in self.frameworks.values_mut() {
            fw.filters.remove(agent);
        }
    }

    /// A framework subscribes in a role (a path such as `eng/ml`); it is active.
    pub fn add_framework(&mut self, framework: FrameworkId, role: &str) {
        if !self.roles.contains(role) {
            self.roles.add(role);
            self.roles.activate(role);
        }
        let policy = self.roles.policy();
        let sorter = self.within.entry(role.to_string()).or_insert_with(|| {
            let mut s = Sorter::with_policy(policy);
            for (id, a) in &self.agents {
                s.add_agent(id.clone(), a.total);
            }
            s
        });
        sorter.add(&framework.0);
        sorter.activate(&framework.0);
        self.frameworks.insert(
            framework,
            Framework {
                role: role.to_string(),
                active: true,
                suppressed: false,
                filters: BTreeMap::new(),
            },
        );
    }

    /// A framework leaves: what it held goes back to the pools.
    pub fn remove_framework(&mut self, framework: &FrameworkId) {
        let held: Vec<(AgentId, Option<String>, Resources)> = self
            .held
            .iter()
            .filter(|((_, f, _), _)| f == framework)
            .map(|((a, _, p), r)| (a.clone(), p.clone(), *r))
            .collect();
        for (agent, pool, resources) in held {
            self.recover(framework, &agent, resources, pool.as_deref());
        }
        if let Some(fw) = self.frameworks.remove(framework) {
            if let Some(sorter) = self.within.get_mut(&fw.role) {
                sorter.remove(&framework.0);
            }
        }
    }

    /// Offers go to it again (reconnected).
    pub fn activate(&mut self, framework: &FrameworkId) {
        if let Some(fw) = self.frameworks.get_mut(framework) {
            fw.active = true;
        }
    }

    /// No offers to it until it is activated (disconnected); its filters are forgotten,
    /// as Mesos does.
    pub fn deactivate(&mut self, framework: &FrameworkId) {
        if let Some(fw) = self.frameworks.get_mut(framework) {
            fw.active = false;
            fw.filters.clear();
        }
    }

    /// Sets a role's quota limit: it (with its sub-roles) is never offered more than this
    /// in all. `None` removes the limit.
    pub fn set_quota_limit(&mut self, role: &str, limit: Option<Resources>) {
        match limit {
            Some(l) => self.limits.insert(role.to_string(), l),
            None => self.limits.remove(role),
        };
    }

    /// Sets a role's quota guarantee: it is offered up to this before any other role, and
    /// while it holds less, that much of the cluster's free resources is held back for it.
    /// `None` removes the guarantee.
    pub fn set_quota_guarantee(&mut self, role: &str, guarantee: Option<Resources>) {
        match guarantee {
            Some(g) => self.guarantees.insert(role.to_string(), g),
            None => self.guarantees.remove(role),
        };
    }

    /// What `role` still lacks of its guarantee.
    fn unmet(&self, role: &str) -> Resources {
        self.guarantees
            .get(role)
            .map_or(Resources::ZERO, |g| g.minus(self.roles.allocation(role)))
    }

    /// What the unreserved pools can give to anyone without eating into what unmet
    /// guarantees still need.
    fn spare(&self) -> Resources {
        self.spare_of(self.unreserved_free())
    }

    /// What the unreserved pools of every agent have free.
    fn unreserved_free(&self) -> Resources {
        self.agents.values().fold(Resources::ZERO, |t, a| {
            t.plus(a.pools.get(&None).map_or(Resources::ZERO, Pool::free))
        })
    }

    /// [`Engine::spare`] given what the unreserved pools have free: a cycle keeps that sum
    /// as it goes rather than adding up every agent for every offer.
    fn spare_of(&self, unreserved_free: Resources) -> Resources {
        let needed = self
            .guarantees
            .keys()
            .fold(Resources::ZERO, |t, role| t.plus(self.unmet(role)));
        unreserved_free.minus(needed)
    }

    /// What `role` may still be offered under its own and its ancestors' limits (`None`:
    /// unlimited), and the role whose limit binds when nothing is left.
    fn headroom(&self, role: &str) -> (Option<Resources>, Option<String>) {
        let mut room: Option<Resources> = None;
        let mut binding = None;
        let parts: Vec<&str> = role.split('/').collect();
        for n in 1..=parts.len() {
            let path = parts[..n].join("/");
            if let Some(limit) = self.limits.get(&path) {
                let left = limit.minus(self.roles.allocation(&path));
                if left.is_empty() {
                    binding.get_or_insert(path.clone());
                }
                room = Some(room.map_or(left, |r| r.min(left)));
            }
        }
        (room, binding)
    }

    /// It wants no offers for now.
    pub fn suppress(&mut self, framework: &FrameworkId) {
        if let Some(fw) = self.frameworks.get_mut(framework) {
            fw.suppressed = true;
        }
    }

    /// It wants offers again: suppression ends and its filters are cleared.
    pub fn revive(&mut self, framework: &FrameworkId) {
        if let Some(fw) = self.frameworks.get_mut(framework) {
            fw.suppressed = false;
            fw.filters.clear();
        }
    }

    /// It declined an offer, or left part of it unused: the resources come back, and no
    /// more than them (from the same pool of the same agent) is offered to it again before
    /// `now + refuse` (at least one allocation interval). A zero `refuse` filters nothing.
    pub fn decline(&mut self, offer: &Offer, refuse: Duration, now: Duration) {
        let (framework, agent) = (&offer.framework, &offer.agent);
        self.recover(
            framework,
            agent,
            offer.resources,
            offer.reservation.as_deref(),
        );
        if let Some(fw) = self.frameworks.get_mut(framework) {
            if !refuse.is_zero() {
                let refusal = Refusal {
                    pool: offer.reservation.clone(),
                    resources: offer.resources,
                    until: now + refuse.max(self.interval),
                };
                let refused = fw.filters.entry(agent.clone()).or_default();
                // One it outlasts and covers says nothing more: the list stays as short as
                // the distinct refusals.
                refused.retain(|r| {
                    !(r.pool == refusal.pool
                        && refusal.resources.contains(&r.resources)
                        && refusal.until >= r.until)
                });
                refused.push(refusal);
            }
        }
    }

    /// Resources a framework held on an agent come back (an offer unused, a task ended),
    /// to their pool: unreserved, or reserved for `reservation`.
    pub fn recover(
        &mut self,
        framework: &FrameworkId,
        agent: &AgentId,
        resources: Resources,
        reservation: Option<&str>,
    ) {
        if let Some(pool) = self
            .agents
            .get_mut(agent)
            .and_then(|a| a.pools.get_mut(&reservation.map(str::to_string)))
        {
            pool.allocated = pool.allocated.minus(resources);
        }
        let key = (
            agent.clone(),
            framework.clone(),
            reservation.map(str::to_string),
        );
        if let Some(held) = self.held.get_mut(&key) {
            *held = held.minus(resources);
            if held.is_empty() {
                self.held.remove(&key);
            }
        }
        self.unallocate(framework, resources);
    }

    fn unallocate(&mut self, framework: &FrameworkId, resources: Resources) {
        if let Some(fw) = self.frameworks.get(framework) {
            self.roles.unallocated(&fw.role, resources);
            if let Some(sorter) = self.within.get_mut(&fw.role) {
                sorter.unallocated(&framework.0, resources);
            }
        }
    }

    /// Whether `framework` is to be offered `amount` of `pool` on `agent` at `now`: it is
    /// active, not suppressed, and refused no such offer lately.
    fn wants(
        &self,
        framework: &FrameworkId,
        agent: &AgentId,
        pool: &Option<String>,
        amount: &Resources,
        now: Duration,
    ) -> bool {
        self.frameworks.get(framework).is_some_and(|fw| {
            fw.active
                && !fw.suppressed
                && fw
                    .filters
                    .get(agent)
                    .is_none_or(|refused| !refused.iter().any(|r| r.covers(pool, amount, now)))
        })
    }

    /// One allocation cycle. Each agent's free resources go to the framework that DRF puts
    /// first among those that want them (roles first, then frameworks within the role):
    /// all of them, or as much as its role's quota limit leaves room for, the rest going
    /// on to the next in line.
    pub fn allocate(&mut self, now: Duration) -> Vec<Offer> {
        for fw in self.frameworks.values_mut() {
            fw.filters.retain(|_, refused| {
                refused.retain(|r| now < r.until);
                !refused.is_empty()
            });
        }
        let mut offers = Vec::new();
        let agents: Vec<AgentId> = self.agents.keys().cloned().collect();
        let mut unreserved_free = self.unreserved_free();
        for stage in [Stage::Guarantees, Stage::All] {
            for agent in &agents {
                let pools: Vec<Option<String>> = self.agents[agent].pools.keys().cloned().collect();
                // Reserved pools first: only their roles may have them.
                let (reserved, unreserved): (Vec<_>, Vec<_>) =
                    pools.into_iter().partition(Option::is_some);
                for pool in reserved.into_iter().chain(unreserved) {
                    self.allocate_pool(agent, pool, stage, now, &mut unreserved_free, &mut offers);
                }
            }
        }
        offers
    }

    /// Offers one pool of one agent, in DRF order, until it is used up or nobody takes
    /// more.
    fn allocate_pool(
        &mut self,
        agent: &AgentId,
        pool: Option<String>,
        stage: Stage,
        now: Duration,
        unreserved_free: &mut Resources,
        offers: &mut Vec<Offer>,
    ) {
        let mut offered_here: Vec<FrameworkId> = Vec::new();
        loop {
            let free = self.agents[agent].pools[&pool].free();
            if !allocatable(&free) {
                return;
            }
            let chosen = self.roles.sort().into_iter().find_map(|role| {
                if pool.as_deref().is_some_and(|r| !may_use(&role, r)) {
                    return None;
                }
                let mut amount = match self.headroom(&role).0 {
                    Some(room) => free.min(room),
                    None => free,
                };
                match stage {
                    Stage::Guarantees => amount = amount.min(self.unmet(&role)),
                    // Reserved resources are the role's own; unreserved ones are shared,
                    // less what unmet guarantees need.
                    Stage::All if pool.is_none() => {
                        amount = amount.min(self.spare_of(*unreserved_free))
                    }
                    Stage::All => {}
                }
                if !allocatable(&amount) {
                    return None;
                }
                self.within.get(&role).and_then(|sorter| {
                    sorter
                        .sort()
                        .into_iter()
                        .map(FrameworkId)
                        .find(|fw| {
                            !offered_here.contains(fw) && self.wants(fw, agent, &pool, &amount, now)
                        })
                        .map(|fw| (fw, role.clone(), amount))
                })
            });
            let Some((framework, role, amount)) = chosen else {
                return;
            };
            self.charge(&framework, &role, agent, &pool, amount);
            if pool.is_none() {
                *unreserved_free = unreserved_free.minus(amount);
            }
            if let Some(p) = self
                .agents
                .get_mut(agent)
                .and_then(|a| a.pools.get_mut(&pool))
            {
                p.allocated = p.allocated.plus(amount);
            }
            offered_here.push(framework.clone());
            offers.push(Offer {
                framework,
                agent: agent.clone(),
                resources: amount,
                reservation: pool.clone(),
            });
        }
    }

    /// Why `framework` would get nothing in a cycle at `now`; empty when it would get an
    /// offer, or when others were simply first.
    pub fn explain(&self, framework: &FrameworkId, now: Duration) -> Vec<NotOffered> {
        let Some(fw) = self.frameworks.get(framework) else {
            return vec![NotOffered::UnknownFramework];
        };
        if !fw.active {
            return vec![NotOffered::Inactive];
        }
        if fw.suppressed {
            return vec![NotOffered::Suppressed];
        }
        if self.agents.is_empty() {
            return vec![NotOffered::NoAgents];
        }
        if let (Some(_), Some(role)) = self.headroom(&fw.role) {
            let limit = self.limits.get(&role).copied().unwrap_or_default();
            return vec![NotOffered::QuotaLimitReached { role, limit }];
        }
        let mut why = Vec::new();
        let mut any_free = false;
        let mut reserved_for_others = std::collections::BTreeSet::new();
        for (id, a) in &self.agents {
            for (pool, p) in &a.pools {
                if let Some(role) = pool.as_deref().filter(|r| !may_use(&fw.role, r)) {
                    if allocatable(&p.free()) {
                        reserved_for_others.insert(role.to_string());
                    }
                }
            }
            let usable: Vec<(&Option<String>, Resources)> = a
                .pools
                .iter()
                .filter(|(pool, _)| pool.as_deref().is_none_or(|r| may_use(&fw.role, r)))
                .map(|(pool, p)| (pool, p.free()))
                .filter(|(_, free)| !free.is_empty())
                .collect();
            if usable.is_empty() {
                continue;
            }
            any_free = true;
            // Filtered when what every usable pool has free was refused; offered again
            // when the last refusal that covers it ends.
            let refused = fw.filters.get(id).map(Vec::as_slice).unwrap_or_default();
            let covering = |(pool, free): &(&Option<String>, Resources)| {
                refused
                    .iter()
                    .filter(|r| r.covers(pool, free, now))
                    .map(|r| r.until)
                    .max()
            };
            let until: Option<Vec<Duration>> = usable.iter().map(covering).collect();
            if let Some(until) = until.and_then(|u| u.into_iter().min()) {
                why.push(NotOffered::Filtered {
                    agent: id.clone(),
                    until,
                });
            }
        }
        if !any_free && !reserved_for_others.is_empty() {
            why.push(NotOffered::AllReserved {
                roles: reserved_for_others.into_iter().collect(),
            });
        } else if !any_free {
            why.push(NotOffered::NothingFree);
        } else if why.is_empty() && self.unmet(&fw.role).is_empty() && self.spare().is_empty() {
            why.push(NotOffered::HeldForGuarantees);
        }
        why
    }

    /// A framework's weighted dominant share within its role.
    pub fn share(&self, framework: &FrameworkId) -> f64 {
        self.frameworks
            .get(framework)
            .and_then(|fw| self.within.get(&fw.role))
            .map_or(0.0, |s| s.share(&framework.0))
    }
}

#[cfg(test)]
mod mesos;

#[cfg(test)]
mod tests;

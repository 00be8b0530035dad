//! A framework for tests: it launches queued tasks on the offers it gets (or hands the
//! offers to the test), and records every status the driver gives it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use troupe_actors::framework::{Driver, Scheduler};
use troupe_actors::protocol::{OfferInfo, Resources, TaskId, TaskInfo, TaskStatus};

/// What a test framework tells the test.
#[derive(Debug, Clone)]
pub enum Seen {
    /// A status.
    Status(TaskStatus),
    /// Offers (only when the test launches by itself).
    Offers(Vec<OfferInfo>),
    /// An offer was rescinded.
    Rescinded(troupe_actors::protocol::OfferId),
    /// An agent was lost.
    AgentLost(troupe_actors::protocol::AgentId),
}

/// The test framework.
#[derive(Debug)]
pub struct TestFramework {
    queue: Arc<Mutex<VecDeque<TaskInfo>>>,
    manual: bool,
    seen: mpsc::UnboundedSender<Seen>,
}

impl TestFramework {
    /// A framework that launches `tasks` as offers allow.
    pub fn auto(tasks: Vec<TaskInfo>) -> (TestFramework, mpsc::UnboundedReceiver<Seen>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let fw = TestFramework {
            queue: Arc::new(Mutex::new(tasks.into())),
            manual: false,
            seen: tx,
        };
        (fw, rx)
    }

    /// A framework that hands its offers to the test.
    pub fn manual() -> (TestFramework, mpsc::UnboundedReceiver<Seen>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let fw = TestFramework {
            queue: Arc::default(),
            manual: true,
            seen: tx,
        };
        (fw, rx)
    }
}

impl Scheduler for TestFramework {
    fn offers(&mut self, driver: &Driver, offers: Vec<OfferInfo>) {
        if self.manual {
            let _ = self.seen.send(Seen::Offers(offers));
            return;
        }
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        for offer in offers {
            let mut left = offer.resources;
            let mut launch = Vec::new();
            while let Some(task) = queue.front() {
                if !left.contains(&task.resources) {
                    break;
                }
                left = left.minus(task.resources);
                launch.extend(queue.pop_front());
            }
            if launch.is_empty() {
                driver.decline(&[offer.id], Duration::from_millis(200));
            } else {
                driver.launch(&[offer.id], launch);
            }
        }
    }

    fn status(&mut self, _driver: &Driver, status: &TaskStatus) {
        let _ = self.seen.send(Seen::Status(status.clone()));
    }

    fn rescinded(&mut self, _driver: &Driver, offer: &troupe_actors::protocol::OfferId) {
        let _ = self.seen.send(Seen::Rescinded(offer.clone()));
    }

    fn agent_lost(&mut self, _driver: &Driver, agent: &troupe_actors::protocol::AgentId) {
        let _ = self.seen.send(Seen::AgentLost(agent.clone()));
    }
}

/// A task running `sh -c script` with small resources.
pub fn sh_task(id: &str, script: &str) -> TaskInfo {
    TaskInfo {
        id: TaskId(id.to_string()),
        name: id.to_string(),
        command: troupe_os::ProcessSpec::new(["sh", "-c", script]),
        resources: Resources::new(0.05, 16.0),
    }
}

//! Finding a sibling in a supervision tree: an actor started by a supervisor finds the
//! siblings started before it through that supervisor, once the supervisor is idle (not
//! while it is still starting the asker, which would wait on itself).

use ractor::ActorCell;
use troupe_runtime::SupervisorRef;

/// The running child `id` of the supervisor `parent`, if any.
pub(crate) async fn sibling(parent: &ActorCell, id: &str) -> Option<ActorCell> {
    let parent = SupervisorRef::from_cell(parent.clone())?;
    parent
        .which_children()
        .await
        .ok()?
        .into_iter()
        .find(|c| c.id == id)
        .and_then(|c| c.actor)
}

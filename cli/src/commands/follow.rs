//! Following a task's output: the agent streams its log files (live while the task runs)
//! to a receiver of this command, which writes them to this process's stdout and stderr.

use std::io::Write;
use std::time::Duration;

use ractor::ActorRef;
use tokio::sync::mpsc;
use troupe_actors::client::AgentClient;
use troupe_actors::protocol::{TaskId, TaskLocation};
use troupe_os::actor::{LogMsg, Stream};

use super::Failure;
use super::client::{Client, Forward};

/// A task's streams being followed.
pub(crate) struct Follower {
    task: TaskId,
    agent: AgentClient,
    to: String,
    actor: ActorRef<LogMsg>,
    rx: mpsc::UnboundedReceiver<LogMsg>,
    /// Per stream: the next offset wanted, and whether it ended.
    streams: Vec<(Stream, u64, bool)>,
    /// Why a stream is not there at all (its sandbox was removed), if one is not.
    pub(crate) gone: Option<String>,
}

fn index(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

impl Follower {
    /// Asks the task's agent for `streams`, from the start, live when `follow`.
    pub(crate) async fn start(
        client: &Client,
        location: &TaskLocation,
        streams: &[Stream],
        follow: bool,
    ) -> Result<Follower, Failure> {
        let agent = location.agent.as_ref().ok_or_else(|| {
            Failure::from(format!(
                "task {} never reached an agent, so it has no output ({})",
                location.task.id, location.task.status.state
            ))
        })?;
        let agent = client.agent(agent);
        let to = client.local_path(&format!("logs-{}", location.task.id));
        let (actor, rx) = Forward::<LogMsg>::start(&to).await?;
        let mut follower = Follower {
            task: location.task.id.clone(),
            agent,
            to,
            actor,
            rx,
            streams: streams.iter().map(|s| (*s, 0, false)).collect(),
            gone: None,
        };
        follower.request(follow).await?;
        Ok(follower)
    }

    async fn request(&mut self, follow: bool) -> Result<(), Failure> {
        for (stream, from, ended) in &self.streams {
            if *ended {
                continue;
            }
            self.agent
                .stream_log(&self.task, *stream, *from, follow, &self.to)
                .await
                .map_err(super::client::client_failure)?;
        }
        Ok(())
    }

    /// Whether every stream ended.
    pub(crate) fn done(&self) -> bool {
        self.streams.iter().all(|(_, _, ended)| *ended)
    }

    /// Writes what arrives within `wait`; returns whether anything arrived.
    pub(crate) async fn pump(&mut self, wait: Duration) -> bool {
        let Ok(Some(msg)) = tokio::time::timeout(wait, self.rx.recv()).await else {
            return false;
        };
        self.write(msg);
        while let Ok(msg) = self.rx.try_recv() {
            self.write(msg);
        }
        true
    }

    fn write(&mut self, msg: LogMsg) {
        match msg {
            LogMsg::Chunk { stream, chunk, .. } => {
                let Some(entry) = self.streams.iter_mut().find(|(s, _, _)| *s == stream) else {
                    return;
                };
                let end = chunk.offset + chunk.bytes.len() as u64;
                if end <= entry.1 {
                    return;
                }
                let skip = entry.1.saturating_sub(chunk.offset) as usize;
                let bytes = &chunk.bytes[skip.min(chunk.bytes.len())..];
                entry.1 = end;
                // Asked for one stream (`troupe logs --stderr`), it is this command's output
                // and goes to stdout, for `> file` and `| grep`; both (`troupe run`) go
                // where the task wrote them.
                let to_stdout = index(stream) == 0 || self.streams.len() == 1;
                let _ = match to_stdout {
                    true => {
                        let mut out = std::io::stdout().lock();
                        out.write_all(bytes).and_then(|_| out.flush())
                    }
                    false => {
                        let mut err = std::io::stderr().lock();
                        err.write_all(bytes).and_then(|_| err.flush())
                    }
                };
            }
            LogMsg::End { stream, .. } => {
                if let Some(entry) = self.streams.iter_mut().find(|(s, _, _)| *s == stream) {
                    entry.2 = true;
                }
            }
            LogMsg::Gone { stream, why, .. } => {
                if let Some(entry) = self.streams.iter_mut().find(|(s, _, _)| *s == stream) {
                    entry.2 = true;
                }
                self.gone = Some(why);
            }
        }
    }

    /// After the task ended: takes what is left. If the live stream ended without saying so
    /// (the process was gone before the agent could subscribe), reads the rest from the
    /// files once.
    pub(crate) async fn finish(&mut self) -> Result<(), Failure> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while !self.done() && tokio::time::Instant::now() < deadline {
            self.pump(Duration::from_millis(100)).await;
        }
        if !self.done() {
            self.request(false).await?;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while !self.done() && tokio::time::Instant::now() < deadline {
                self.pump(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// Stops the receiver.
    pub(crate) fn close(self) {
        self.actor.stop(None);
    }
}

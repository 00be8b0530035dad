//! The text form of messages: how an operator at the REPL (`send PATH MSG`, `call PATH MSG`)
//! talks to an actor whose messages are Rust types.
//!
//! A message type opts in by implementing [`TextProtocol`]: it turns a line of words into a
//! message, and for a call also into a future of the answer as text. The crate that owns the
//! type registers it once per process with [`serve`]; from then on the node's inspector
//! accepts text for any local actor of that type, whatever its path, and checks the actor's
//! message type before delivering, so a line can never reach an actor as the wrong type.
//!
//! Every text protocol understands `help`, answered by the runtime from
//! [`TextProtocol::COMMANDS`].

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ractor::{ActorCell, ActorRef, Message};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::Reply;
use crate::lifecycle::BoxFuture;

/// How long a call in text form may wait for its answer.
const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// What a line of text became.
pub enum Parsed<M> {
    /// A message to cast; nothing comes back.
    Cast(M),
    /// A message to deliver, and the future of its answer as text.
    Call(M, BoxFuture<Result<String, String>>),
}

impl<M> Parsed<M> {
    /// A call: `make` builds the message around a reply port, and `show` writes its answer
    /// as text.
    pub fn call<T>(
        make: impl FnOnce(Reply<T>) -> M,
        show: impl FnOnce(T) -> Result<String, String> + Send + 'static,
    ) -> Parsed<M>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
    {
        let (reply, answer) = Reply::channel();
        let message = make(reply);
        Parsed::Call(
            message,
            Box::pin(async move {
                match answer.recv().await {
                    Ok(value) => show(value),
                    Err(e) => Err(format!("no answer: {e}")),
                }
            }),
        )
    }
}

/// A message type that operators can write as text.
pub trait TextProtocol: Message + Sized {
    /// Every command it understands: `(usage, what it does)`, such as
    /// `("signal SIG", "sends SIG to the process")`.
    const COMMANDS: &'static [(&'static str, &'static str)];

    /// Parses `words` (the command and its arguments). `call` says whether the operator waits
    /// for an answer; a command that has one may answer a cast by discarding it.
    fn parse(words: &[&str], call: bool) -> Result<Parsed<Self>, String>;
}

/// Parses words for one actor and delivers the message.
type Deliver = dyn Fn(ActorCell, &[&str], bool) -> Result<Delivered, String> + Send + Sync;

/// The text form of one message type, with the type erased.
struct Endpoint {
    commands: &'static [(&'static str, &'static str)],
    deliver: Box<Deliver>,
}

/// What delivering a line did.
pub enum Delivered {
    /// The message was cast.
    Sent,
    /// The message was delivered; its answer comes.
    Answer(BoxFuture<Result<String, String>>),
}

static ENDPOINTS: Mutex<Option<HashMap<TypeId, Arc<Endpoint>>>> = Mutex::new(None);

/// Makes every actor of message type `M` in this process accept text. Idempotent.
pub fn serve<M: TextProtocol>() {
    let endpoint = Endpoint {
        commands: M::COMMANDS,
        deliver: Box::new(|cell, words, call| {
            let actor: ActorRef<M> = cell.into();
            match M::parse(words, call)? {
                Parsed::Cast(message) => {
                    actor
                        .cast(message)
                        .map_err(|e| format!("cannot deliver: {e}"))?;
                    Ok(Delivered::Sent)
                }
                Parsed::Call(message, answer) => {
                    actor
                        .cast(message)
                        .map_err(|e| format!("cannot deliver: {e}"))?;
                    // A `send` does not wait: the answer, when one comes, is dropped.
                    Ok(if call {
                        Delivered::Answer(answer)
                    } else {
                        Delivered::Sent
                    })
                }
            }
        }),
    };
    ENDPOINTS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_or_insert_with(HashMap::new)
        .entry(TypeId::of::<M>())
        .or_insert_with(|| Arc::new(endpoint));
}

fn endpoint_of(cell: &ActorCell) -> Option<Arc<Endpoint>> {
    let endpoints = ENDPOINTS.lock().unwrap_or_else(|p| p.into_inner());
    let endpoints = endpoints.as_ref()?;
    // ractor knows an actor's message type only by asking "is it this one?".
    endpoints
        .iter()
        .find(|(type_id, _)| cell.get_type_id() == **type_id)
        .map(|(_, e)| e.clone())
}

/// Whether `cell` accepts text, and if so its commands.
pub fn commands_of(cell: &ActorCell) -> Option<&'static [(&'static str, &'static str)]> {
    endpoint_of(cell).map(|e| e.commands)
}

/// Delivers `line` to `cell` in its text form: `Ok(None)` once a cast is delivered,
/// `Ok(Some(answer))` for a call. `help` lists the commands.
pub async fn deliver(cell: ActorCell, line: &str, call: bool) -> Result<Option<String>, String> {
    let Some(endpoint) = endpoint_of(&cell) else {
        return Err("this actor does not accept messages in text form".into());
    };
    let words = split_words(line)?;
    match words.first().map(String::as_str) {
        None => return Err("no message: try `help`".into()),
        Some("help") => return Ok(Some(help(endpoint.commands))),
        Some(_) => {}
    }
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    match (endpoint.deliver)(cell, &words, call)? {
        Delivered::Sent => Ok(None),
        Delivered::Answer(answer) => match tokio::time::timeout(ANSWER_TIMEOUT, answer).await {
            Ok(answer) => answer.map(Some),
            Err(_) => Err(format!("no answer in {ANSWER_TIMEOUT:?}")),
        },
    }
}

/// The help text of a list of commands.
pub fn help(commands: &[(&str, &str)]) -> String {
    let width = commands.iter().map(|(u, _)| u.len()).max().unwrap_or(0);
    commands
        .iter()
        .map(|(usage, what)| format!("{usage:width$}  {what}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Splits a line into words as a shell would for simple quoting: whitespace separates,
/// `'...'` and `"..."` group, and `\` escapes the next character.
pub fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') | (None, '\\') => match chars.next() {
                Some(next) => {
                    word.push(next);
                    in_word = true;
                }
                None => return Err("the line ends with a lone `\\`".into()),
            },
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if let Some(q) = quote {
        return Err(format!("unclosed {q}"));
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::split_words;

    #[test]
    fn words_split_like_a_shell() {
        assert_eq!(
            split_words(r#"send task/a 'hello world' "x\"y" a\ b"#).unwrap(),
            vec!["send", "task/a", "hello world", "x\"y", "a b"]
        );
        assert_eq!(split_words("  ").unwrap(), Vec::<String>::new());
        assert_eq!(split_words("''").unwrap(), vec![""]);
        assert!(split_words("'open").is_err());
        assert!(split_words("trailing\\").is_err());
    }
}

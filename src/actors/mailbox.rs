//! How a request reaches an actor and its answer comes back: bounded mailboxes, one reply
//! channel per request, and the mailbox-depth gauge every actor kind reports.

use super::error::ActorError;
use super::persister::Unavailable;
use tokio::sync::oneshot;

/// How many messages wait in one actor's mailbox before senders are refused.
pub const MAILBOX_CAPACITY: usize = 4096;

/// Where an actor sends its answer.
pub type Reply<T, E> = oneshot::Sender<Result<T, ActorError<E>>>;

/// An actor kind, as metrics name it.
pub trait Named {
    const KIND: &'static str;
}

/// A message left the mailbox: the handler calls this first (pairs with [`ask`]).
pub fn received<A: Named>() {
    metrics::gauge!("boxoffice_mailbox_depth", "actor" => A::KIND).decrement(1.0);
}

/// Sends a message built around a reply channel and waits for the answer. A full mailbox or a
/// stopped actor answers at once with `Unavailable::Busy`.
pub async fn ask<A, M, T, E>(
    addr: &actix::Addr<A>,
    make: impl FnOnce(Reply<T, E>) -> M,
) -> Result<T, ActorError<E>>
where
    A: actix::Actor<Context = actix::Context<A>> + actix::Handler<M> + Named,
    M: actix::Message<Result = ()> + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    addr.try_send(make(tx))
        .map_err(|_| ActorError::Unavailable(Unavailable::Busy))?;
    metrics::gauge!("boxoffice_mailbox_depth", "actor" => A::KIND).increment(1.0);
    // A dropped reply means the actor stopped before answering: nothing was submitted.
    rx.await
        .unwrap_or(Err(ActorError::Unavailable(Unavailable::Busy)))
}

/// Answers `reply` with "unavailable": the request was not acted on.
pub fn refuse_unavailable<T, E>(reply: Reply<T, E>, why: Unavailable) {
    let _ = reply.send(Err(ActorError::Unavailable(why)));
}

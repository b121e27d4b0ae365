//! The body deadline: a request body not complete within `--body-timeout-secs` of its head
//! ends in a 408 envelope and a closed connection, so a client trickling bytes holds no
//! handler, and no connection, for longer than that. (actix's `client_request_timeout`
//! covers the head; nothing in actix covers the body.)

use super::ApiError;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::web::Bytes;
use actix_web::{HttpMessage, ResponseError};
use futures_util::Stream;
use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// The time `--body-timeout-secs` gives a body, as app data.
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeout(pub Duration);

/// Puts the deadline on every request that has a body; answers 408 when the handler's read of
/// it failed because the deadline passed.
pub async fn body_deadline(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let timeout = req.app_data::<BodyTimeout>().map(|t| t.0);
    let (Some(timeout), true) = (timeout, has_body(&req)) else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    };
    let expired = Rc::new(Cell::new(false));
    let payload = Deadline {
        inner: req.take_payload(),
        sleep: Box::pin(tokio::time::sleep_until(Instant::now() + timeout)),
        expired: expired.clone(),
        finished: false,
    };
    let payload: Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>> = Box::pin(payload);
    req.set_payload(Payload::from(payload));
    let response = next.call(req).await?;
    if !expired.get() {
        return Ok(response.map_into_left_body());
    }
    // Whatever the handler made of the failed read (a 400 "could not read"), the cause is
    // the deadline.
    tracing::debug!("request body not complete in time");
    let (request, _) = response.into_parts();
    let answer = ApiError::RequestTimeout.error_response();
    Ok(ServiceResponse::new(request, answer).map_into_right_body())
}

/// A body announced by `Content-Length` (not 0) or `Transfer-Encoding`. Requests without one
/// (every poll) skip the deadline and its two allocations.
fn has_body(req: &ServiceRequest) -> bool {
    let headers = req.headers();
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return true;
    }
    headers
        .get(header::CONTENT_LENGTH)
        .is_some_and(|length| length.as_bytes() != b"0")
}

/// The request body, failing with a timed-out read once its deadline passes.
struct Deadline {
    inner: Payload,
    sleep: Pin<Box<Sleep>>,
    expired: Rc<Cell<bool>>,
    /// The whole body arrived: the deadline no longer matters.
    finished: bool,
}

impl Stream for Deadline {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.finished || self.expired.get() {
            return Poll::Ready(None);
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            self.expired.set(true);
            let late = std::io::Error::new(std::io::ErrorKind::TimedOut, "request body too slow");
            return Poll::Ready(Some(Err(PayloadError::Io(late))));
        }
        let next = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(None) = next {
            self.finished = true;
        }
        next
    }
}

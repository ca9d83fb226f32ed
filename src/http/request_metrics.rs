//! Middleware recording every request in the ledger's metrics: count and latency by method,
//! matched route (the pattern, `/transactions/{id}`, never the raw path; `unmatched` for
//! unknown paths) and status, and refused transaction requests by reason.

use crate::http::error::ApiError;
use crate::http::route_pattern::route_pattern;
use actix_web::body::MessageBody;
use actix_web::dev::{forward_ready, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::{Method, StatusCode};
use coffer_actors::metrics::{reason_label, Metrics};
use futures_util::future::{ready, LocalBoxFuture, Ready};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

/// Routes whose 4xx (and 503) answers are refused transactions.
const TRANSACTION_WRITES: &[&str] = &[
    "/transactions",
    "/transactions/bulk",
    "/transactions/inflight/{id}",
    "/transactions/inflight/bulk/commit",
    "/transactions/inflight/bulk/void",
    "/refund-transaction/{id}",
];

pub struct RequestMetrics {
    metrics: Arc<Metrics>,
}

impl RequestMetrics {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S, B> Transform<S, ServiceRequest> for RequestMetrics
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Transform = RequestMetricsService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(RequestMetricsService {
            service: Rc::new(service),
            metrics: self.metrics.clone(),
        }))
    }
}

pub struct RequestMetricsService<S> {
    service: Rc<S>,
    metrics: Arc<Metrics>,
}

impl<S, B> Service<ServiceRequest> for RequestMetricsService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, request: ServiceRequest) -> Self::Future {
        let started = Instant::now();
        let method = method_label(request.method());
        let service = self.service.clone();
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let result = service.call(request).await;
            let (route, status, error) = match &result {
                Ok(response) => (
                    route_pattern(response.request()),
                    response.status(),
                    response.response().error(),
                ),
                Err(error) => (None, error.as_response_error().status_code(), Some(error)),
            };
            let route = route.unwrap_or("unmatched");
            metrics.observe_request(method, route, status.as_u16(), started.elapsed());
            if let Some(reason) = refusal_reason(method, route, status, error) {
                metrics.observe_rejection(reason);
            }
            result
        })
    }
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The reason a transaction request was refused, if it was one.
fn refusal_reason(
    method: &str,
    route: &str,
    status: StatusCode,
    error: Option<&actix_web::Error>,
) -> Option<&'static str> {
    let refused = status.is_client_error() || status == StatusCode::SERVICE_UNAVAILABLE;
    if !refused || !matches!(method, "POST" | "PUT") || !TRANSACTION_WRITES.contains(&route) {
        return None;
    }
    Some(match error?.as_error::<ApiError>()? {
        ApiError::Ledger(error) => reason_label(error),
        ApiError::Malformed(_) => "malformed_request",
        ApiError::PayloadTooLarge(_) => "payload_too_large",
        ApiError::BadQuery(_) => "bad_request",
        ApiError::RateLimited => "rate_limited",
        ApiError::Access(_) => "unauthorized",
        ApiError::RouteNotFound(_) | ApiError::Search(_) => return None,
    })
}

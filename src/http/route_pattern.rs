//! The pattern of the route that served a request (`/balances/{id}/at`), as metrics and
//! traces name it.
//!
//! Each route carries its pattern as resource app data (`routes::configure`), so naming a
//! routed request is a lookup. `HttpRequest::match_pattern` would match the path against the
//! route table a second time, regular expressions included, once per caller.

use actix_web::HttpRequest;

#[derive(Clone, Copy, Debug)]
pub struct RoutePattern(pub &'static str);

/// The pattern of the route that took `request`; `None` when none did (the 404).
pub fn route_pattern(request: &HttpRequest) -> Option<&'static str> {
    request.app_data::<RoutePattern>().map(|pattern| pattern.0)
}

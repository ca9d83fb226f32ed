//! Blnk's per-client rate limit (`rate_limit.requests_per_second`, `burst`): a token bucket
//! per client IP (`governor`), 429 `GEN_RATE_LIMITED` past it. The client is the peer, or,
//! when the peer is one of `coffer.trusted_proxies`, the last address of `X-Forwarded-For`
//! that is not a trusted proxy (a client can write anything at the left of that header;
//! only what our own proxies appended is believed).

use super::error::ApiError;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, ResponseError};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

/// The limiter and who may name the client.
pub struct ClientLimits {
    limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
    trusted_proxies: Vec<ipnet::IpNet>,
}

impl ClientLimits {
    /// `rate`: requests a second and burst; `None`: no limit.
    pub fn new(rate: Option<(u32, u32)>, trusted_proxies: Vec<ipnet::IpNet>) -> Self {
        let limiter = rate.map(|(per_second, burst)| {
            let per_second = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
            let burst = NonZeroU32::new(burst).unwrap_or(per_second);
            RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst))
        });
        Self {
            limiter,
            trusted_proxies,
        }
    }

    pub fn is_limited(&self) -> bool {
        self.limiter.is_some()
    }

    fn is_trusted(&self, address: IpAddr) -> bool {
        self.trusted_proxies
            .iter()
            .any(|net| net.contains(&address))
    }

    /// The client's address: the peer, unless a trusted proxy speaks for it.
    pub fn client_of(&self, peer: Option<IpAddr>, forwarded_for: Option<&str>) -> Option<IpAddr> {
        let peer = peer?;
        let Some(forwarded_for) = forwarded_for.filter(|_| self.is_trusted(peer)) else {
            return Some(peer);
        };
        let mut client = peer;
        for hop in forwarded_for.rsplit(',') {
            let Ok(address) = hop.trim().parse::<IpAddr>() else {
                // Garbage: nothing left of it can be believed.
                break;
            };
            client = address;
            if !self.is_trusted(address) {
                break;
            }
        }
        Some(client)
    }

    /// Forgets clients whose buckets are full again (bounded memory under many clients).
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// Starts forgetting idle clients every `interval` on the current actix system.
    pub fn start_cleanup(self: &Arc<Self>, interval: Duration) {
        if !self.is_limited() {
            return;
        }
        let weak = Arc::downgrade(self);
        actix::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(limits) = weak.upgrade() else { return };
                limits.forget_idle();
            }
        });
    }
}

pub async fn limit(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let limits = request
        .app_data::<web::Data<ClientLimits>>()
        .expect("the client limits are app data")
        .clone();
    if let Some(limiter) = &limits.limiter {
        let forwarded_for = request
            .headers()
            .get("X-Forwarded-For")
            .and_then(|v| v.to_str().ok());
        let peer = request.peer_addr().map(|a| a.ip());
        if let Some(client) = limits.client_of(peer, forwarded_for) {
            if limiter.check_key(&client).is_err() {
                let response = ApiError::RateLimited.error_response();
                return Ok(request.into_response(response).map_into_boxed_body());
            }
        }
    }
    Ok(next.call(request).await?.map_into_boxed_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(trusted: &[&str]) -> ClientLimits {
        ClientLimits::new(
            Some((1, 2)),
            trusted.iter().map(|t| t.parse().unwrap()).collect(),
        )
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let limits = limits(&["10.0.0.0/8"]);
        let header = Some("6.6.6.6, 1.2.3.4");
        assert_eq!(
            limits.client_of(Some(ip("8.8.8.8")), header),
            Some(ip("8.8.8.8"))
        );
        assert_eq!(
            limits.client_of(Some(ip("10.0.0.5")), header),
            Some(ip("1.2.3.4"))
        );
        assert_eq!(
            limits.client_of(Some(ip("10.0.0.5")), Some("1.2.3.4, 10.0.0.7")),
            Some(ip("1.2.3.4"))
        );
        assert_eq!(
            limits.client_of(Some(ip("10.0.0.5")), Some("junk, 10.0.0.7")),
            Some(ip("10.0.0.7"))
        );
        assert_eq!(
            limits.client_of(Some(ip("10.0.0.5")), None),
            Some(ip("10.0.0.5"))
        );
    }

    #[test]
    fn a_client_past_its_burst_is_limited_and_others_are_not() {
        let limits = limits(&[]);
        let limiter = limits.limiter.as_ref().unwrap();
        let (a, b) = (ip("1.1.1.1"), ip("2.2.2.2"));
        assert!(limiter.check_key(&a).is_ok());
        assert!(limiter.check_key(&a).is_ok());
        assert!(limiter.check_key(&a).is_err());
        assert!(limiter.check_key(&b).is_ok());
        limits.forget_idle();
    }
}

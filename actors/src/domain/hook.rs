//! Transaction hooks' pure rules (Blnk 1.9): the hook types, a hook as a client describes it
//! (checked, with Blnk's defaults applied), and the URL policy.
//!
//! The URL policy: a hook URL is `http` or `https`, and its host must not be (or resolve to)
//! an address inside the deployment's own network: loopback, link-local, private (RFC 1918,
//! unique-local, shared CGNAT space), unspecified, multicast, broadcast or reserved ranges,
//! in IPv4 and IPv6 (an IPv4 address inside IPv6, mapped, compatible or NAT64, is judged as
//! the IPv4 address it carries). Without it, whoever may create a hook could make the
//! ledger POST every transaction to its metadata service or its database port (SSRF; the
//! reason Blnk made hooks master-only). The check runs when a hook is created or replaced
//! ([`check_url`]) and again on every delivery against the addresses the host resolves to
//! then ([`address_allowed`]), so a name that resolves to a public address at creation and
//! to a private one later (DNS rebinding) is still refused.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The longest name and URL a hook may have.
pub const NAME_CHARS_MAX: usize = 256;
pub const URL_CHARS_MAX: usize = 2048;
/// Blnk's defaults: a timeout of 0 or less is 30 s, a negative retry count is 3.
pub const TIMEOUT_S_DEFAULT: u32 = 30;
pub const RETRY_COUNT_DEFAULT: u32 = 3;
/// Limits Blnk does not state: retries at most 10 (its documented range), a call at most
/// five minutes (a dispatcher waits for its slowest call).
pub const RETRY_COUNT_MAX: u32 = 10;
pub const TIMEOUT_S_MAX: u32 = 300;

/// When a hook is called: with a transaction's first event, or with its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HookType {
    PreTransaction,
    PostTransaction,
}

impl HookType {
    pub fn as_str(self) -> &'static str {
        match self {
            HookType::PreTransaction => "PRE_TRANSACTION",
            HookType::PostTransaction => "POST_TRANSACTION",
        }
    }

    /// Blnk's spelling, exactly (it compares case-sensitively).
    pub fn parse(text: &str) -> Option<HookType> {
        match text {
            "PRE_TRANSACTION" => Some(HookType::PreTransaction),
            "POST_TRANSACTION" => Some(HookType::PostTransaction),
            _ => None,
        }
    }
}

/// A hook as a client describes it (`POST /hooks`, `PUT /hooks/:id`), checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookSpec {
    pub name: String,
    pub url: String,
    pub hook_type: HookType,
    pub active: bool,
    pub timeout_s: u32,
    pub retry_count: u32,
}

/// A stored hook, as the API serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    /// `hook_<uuid>`.
    pub id: String,
    pub spec: HookSpec,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// The last call's time (`None`: never called).
    pub last_run: Option<chrono::DateTime<chrono::Utc>>,
    /// Whether the last call succeeded.
    pub last_success: bool,
}

/// A body's fields as given (absent: `None`); numbers already read as integers.
#[derive(Debug, Clone, Default)]
pub struct HookInput<'a> {
    pub name: Option<&'a str>,
    pub url: Option<&'a str>,
    pub hook_type: Option<&'a str>,
    pub active: Option<bool>,
    pub timeout: Option<i64>,
    pub retry_count: Option<i64>,
}

impl HookSpec {
    /// Checks `input` (every problem, in field order; `private_allowed`: the URL policy is
    /// off) and applies Blnk's defaults. The URL's host is checked as written here; a name
    /// is resolved by the caller ([`url_host`]).
    pub fn parse(input: &HookInput<'_>, private_allowed: bool) -> Result<HookSpec, Vec<String>> {
        let mut problems = Vec::new();
        let name = input.name.unwrap_or_default().trim().to_owned();
        if name.chars().count() > NAME_CHARS_MAX {
            problems.push(format!("name: longer than {NAME_CHARS_MAX} characters"));
        }
        let url = input.url.unwrap_or_default().trim().to_owned();
        if url.is_empty() {
            problems.push("url: cannot be blank".to_owned());
        } else if let Err(problem) = check_url(&url, private_allowed) {
            problems.push(format!("url: {problem}"));
        }
        let hook_type = match input.hook_type {
            None | Some("") => {
                problems.push("type: cannot be blank".to_owned());
                None
            }
            Some(text) => HookType::parse(text).or_else(|| {
                problems.push("type: must be PRE_TRANSACTION or POST_TRANSACTION".to_owned());
                None
            }),
        };
        let timeout_s = match input.timeout.unwrap_or(0) {
            seconds if seconds <= 0 => TIMEOUT_S_DEFAULT,
            seconds => u32::try_from(seconds)
                .ok()
                .filter(|s| *s <= TIMEOUT_S_MAX)
                .unwrap_or_else(|| {
                    problems.push(format!("timeout: at most {TIMEOUT_S_MAX} seconds"));
                    TIMEOUT_S_DEFAULT
                }),
        };
        let retry_count = match input.retry_count.unwrap_or(0) {
            count if count < 0 => RETRY_COUNT_DEFAULT,
            count => u32::try_from(count)
                .ok()
                .filter(|c| *c <= RETRY_COUNT_MAX)
                .unwrap_or_else(|| {
                    problems.push(format!("retry_count: at most {RETRY_COUNT_MAX}"));
                    RETRY_COUNT_DEFAULT
                }),
        };
        match hook_type {
            Some(hook_type) if problems.is_empty() => Ok(HookSpec {
                name,
                url,
                hook_type,
                active: input.active.unwrap_or(false),
                timeout_s,
                retry_count,
            }),
            _ => Err(problems),
        }
    }
}

/// Why a URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlRefusal {
    #[error("must be an http or https URL")]
    NotHttp,
    #[error("longer than {URL_CHARS_MAX} characters")]
    TooLong,
    #[error("must not carry credentials")]
    Credentials,
    #[error("host {0} is not allowed: it is inside a private, loopback, link-local or reserved range (set coffer.allow_private_hook_urls to allow it)")]
    PrivateHost(String),
    #[error("host {0} does not resolve")]
    Unresolvable(String),
}

/// The host of a hook URL: an address, or a name to resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlHost {
    Address(IpAddr),
    Name(String),
}

/// Parses a hook URL: http(s), no user info, not too long; its host and port.
pub fn url_host(text: &str) -> Result<(UrlHost, u16), UrlRefusal> {
    if text.chars().count() > URL_CHARS_MAX {
        return Err(UrlRefusal::TooLong);
    }
    let url = url::Url::parse(text).map_err(|_| UrlRefusal::NotHttp)?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(UrlRefusal::NotHttp);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlRefusal::Credentials);
    }
    let port = url.port_or_known_default().ok_or(UrlRefusal::NotHttp)?;
    let host = match url.host().ok_or(UrlRefusal::NotHttp)? {
        url::Host::Ipv4(address) => UrlHost::Address(IpAddr::V4(address)),
        url::Host::Ipv6(address) => UrlHost::Address(IpAddr::V6(address)),
        url::Host::Domain(name) => UrlHost::Name(name.trim_end_matches('.').to_lowercase()),
    };
    Ok((host, port))
}

/// Checks a hook URL as written: its shape, and (unless `private_allowed`) an address host
/// or a name that is local by definition (`localhost`, `*.localhost`).
pub fn check_url(text: &str, private_allowed: bool) -> Result<(), UrlRefusal> {
    let (host, _) = url_host(text)?;
    if private_allowed {
        return Ok(());
    }
    match host {
        UrlHost::Address(address) if !address_allowed(address) => {
            Err(UrlRefusal::PrivateHost(address.to_string()))
        }
        UrlHost::Name(name) if name == "localhost" || name.ends_with(".localhost") => {
            Err(UrlRefusal::PrivateHost(name))
        }
        _ => Ok(()),
    }
}

/// Whether a hook may be called at `address`: a public unicast address.
pub fn address_allowed(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => v4_allowed(v4),
        IpAddr::V6(v6) => v6_allowed(v6),
    }
}

fn v4_allowed(address: Ipv4Addr) -> bool {
    let [a, b, c, _] = address.octets();
    let refused = address.is_unspecified()
        || a == 0 // "this network"
        || address.is_loopback()
        || address.is_private()
        || address.is_link_local()
        || address.is_multicast()
        || address.is_broadcast()
        || address.is_documentation()
        || (a == 100 && (64..128).contains(&b)) // shared (CGNAT) space
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240; // reserved
    !refused
}

fn v6_allowed(address: Ipv6Addr) -> bool {
    if let Some(v4) = embedded_v4(address) {
        return v4_allowed(v4);
    }
    let first = address.segments()[0];
    let refused = address.is_unspecified()
        || address.is_loopback()
        || address.is_multicast()
        || address.is_unique_local()
        || address.is_unicast_link_local()
        || (first & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (first == 0x2001 && address.segments()[1] == 0x0db8) // documentation
        || (first & 0xe000) != 0x2000; // outside global unicast 2000::/3
    !refused
}

/// The IPv4 address an IPv6 address carries: mapped (`::ffff:a.b.c.d`), compatible
/// (`::a.b.c.d`, deprecated) or NAT64 (`64:ff9b::a.b.c.d`).
fn embedded_v4(address: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = address.to_ipv4_mapped() {
        return Some(v4);
    }
    let segments = address.segments();
    let low = |s: [u16; 8]| Ipv4Addr::from((u32::from(s[6]) << 16) | u32::from(s[7]));
    if segments[..6] == [0, 0, 0, 0, 0, 0] && !address.is_loopback() && !address.is_unspecified() {
        return Some(low(segments));
    }
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(low(segments));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(url: &'a str, hook_type: &'a str) -> HookInput<'a> {
        HookInput {
            name: Some("audit"),
            url: Some(url),
            hook_type: Some(hook_type),
            active: Some(true),
            timeout: None,
            retry_count: None,
        }
    }

    #[test]
    fn blnks_defaults_apply_to_a_missing_or_non_positive_timeout_and_a_negative_retry_count() {
        let mut given = input("https://hooks.example.com/in", "PRE_TRANSACTION");
        let spec = HookSpec::parse(&given, false).unwrap();
        assert_eq!(
            (spec.timeout_s, spec.retry_count),
            (30, 0),
            "retry_count 0 is kept"
        );
        given.timeout = Some(-5);
        given.retry_count = Some(-1);
        let spec = HookSpec::parse(&given, false).unwrap();
        assert_eq!((spec.timeout_s, spec.retry_count), (30, 3));
        given.timeout = Some(7);
        given.retry_count = Some(10);
        let spec = HookSpec::parse(&given, false).unwrap();
        assert_eq!((spec.timeout_s, spec.retry_count), (7, 10));
        assert_eq!(spec.hook_type, HookType::PreTransaction);
    }

    #[test]
    fn every_problem_is_reported_in_field_order() {
        let given = HookInput {
            url: Some("ftp://x"),
            hook_type: Some("pre_transaction"),
            retry_count: Some(11),
            timeout: Some(301),
            ..HookInput::default()
        };
        assert_eq!(
            HookSpec::parse(&given, false).unwrap_err(),
            [
                "url: must be an http or https URL",
                "type: must be PRE_TRANSACTION or POST_TRANSACTION",
                "timeout: at most 300 seconds",
                "retry_count: at most 10",
            ]
        );
        let blank = HookSpec::parse(&HookInput::default(), false).unwrap_err();
        assert_eq!(blank, ["url: cannot be blank", "type: cannot be blank"]);
    }

    #[test]
    fn private_loopback_link_local_and_reserved_hosts_are_refused_in_v4_and_v6() {
        for url in [
            "http://127.0.0.1:8080/x",
            "http://10.1.2.3/",
            "http://172.16.0.1/",
            "http://192.168.1.1/",
            "http://169.254.169.254/latest/meta-data",
            "http://0.0.0.0/",
            "http://100.64.0.1/",
            "http://224.0.0.1/",
            "http://255.255.255.255/",
            "http://[::1]/",
            "http://[::]/",
            "http://[fe80::1]/",
            "http://[fd00::1]/",
            "http://[ff02::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:10.0.0.1]/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://localhost:3000/",
            "http://api.localhost/",
            "http://2130706433/", // 127.0.0.1 as one number: the URL parser normalizes it
        ] {
            assert!(
                matches!(check_url(url, false), Err(UrlRefusal::PrivateHost(_))),
                "{url} must be refused"
            );
            assert_eq!(check_url(url, true), Ok(()), "{url} with the policy off");
        }
        for url in [
            "https://hooks.example.com/in",
            "http://8.8.8.8/",
            "http://[2606:4700::1111]/",
            "http://[::ffff:8.8.8.8]/",
        ] {
            assert_eq!(check_url(url, false), Ok(()), "{url} is public");
        }
    }

    #[test]
    fn only_http_urls_without_credentials_are_taken() {
        assert_eq!(
            check_url("file:///etc/passwd", true),
            Err(UrlRefusal::NotHttp)
        );
        assert_eq!(check_url("not a url", true), Err(UrlRefusal::NotHttp));
        assert_eq!(
            check_url("https://user:pw@example.com/", true),
            Err(UrlRefusal::Credentials)
        );
        let long = format!("https://example.com/{}", "a".repeat(URL_CHARS_MAX));
        assert_eq!(check_url(&long, true), Err(UrlRefusal::TooLong));
        assert_eq!(
            url_host("https://Example.COM./x").unwrap(),
            (UrlHost::Name("example.com".into()), 443)
        );
    }
}

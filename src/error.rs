//! The request-path error enums and the one place that maps them to a status code, an
//! `error` code, a metric reason and a `WWW-Authenticate` challenge (design §7).
//!
//! Client-facing descriptions are fixed strings chosen here: they never echo request data,
//! and never a token.

use std::borrow::Cow;

use http::StatusCode;

use crate::authz::path::PathError;
use crate::identity::IdentityError;

/// Everything that ends a request before (or instead of) an upstream response.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("bad request path: {0}")]
    Path(#[from] PathError),
    #[error("bad request: {0}")]
    Request(#[from] RequestError),
    #[error("authentication failed: {0}")]
    Auth(#[from] AuthError),
    #[error("access denied: {0}")]
    Denied(#[from] DenyReason),
    #[error("identity refused: {0}")]
    Identity(#[from] IdentityError),
    /// Missing permissions; carries the `scope` value of the challenge (from config only).
    #[error("insufficient scope")]
    InsufficientScope(String),
    #[error("upstream failure: {0}")]
    Upstream(#[from] UpstreamError),
}

/// Malformed requests (400 `invalid_request`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("more than one Authorization header")]
    DuplicateAuthorization,
    #[error("tokens in more than one place")]
    TokenInTwoPlaces,
    #[error("ambiguous message framing")]
    AmbiguousFraming,
}

/// Authentication failures (401).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no token")]
    MissingToken,
    #[error("malformed Authorization header")]
    MalformedAuthorization,
    #[error("token too large")]
    TokenTooLarge,
    #[error("malformed token")]
    Malformed,
    #[error("algorithm not accepted")]
    UnsupportedAlgorithm,
    #[error("critical header")]
    CriticalHeader,
    #[error("token type not accepted")]
    WrongType,
    #[error("issuer not accepted")]
    UnknownIssuer,
    #[error("signing key not found")]
    UnknownKey,
    #[error("bad signature")]
    BadSignature,
    #[error("expired")]
    Expired,
    #[error("not yet valid")]
    NotYetValid,
    #[error("audience not accepted")]
    WrongAudience,
    #[error("required claim missing")]
    MissingClaim,
    #[error("claim with a wrong type")]
    InvalidClaim,
    #[error("lifetime too long")]
    LifetimeTooLong,
    #[error("provider keys unavailable")]
    KeysUnavailable,
}

/// Authorization refusals (403).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DenyReason {
    #[error("no route matches and unmatched = \"deny\"")]
    NoRoute,
    #[error("the route does not accept tokens from this provider")]
    ProviderNotAllowed,
}

/// Upstream failures (502 / 504).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect")]
    Connect,
    #[error("timed out")]
    Timeout,
    #[error("protocol error")]
    Protocol,
}

/// The bounded label set of `tollgate_requests_total{decision,reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    // allow
    Public,
    Anonymous,
    Authenticated,
    // deny
    BadPath,
    BadRequest,
    MissingToken,
    InvalidToken,
    UnknownIssuer,
    UnknownKey,
    BadSignature,
    Expired,
    NoRoute,
    ProviderNotAllowed,
    UnknownAccount,
    AccountDisabled,
    DomainNotAllowed,
    InsufficientScope,
    // error
    KeysUnavailable,
    UpstreamConnect,
    UpstreamTimeout,
    UpstreamProtocol,
}

// === impl Reason ===

impl Reason {
    pub const ALL: [Reason; 21] = [
        Reason::Public,
        Reason::Anonymous,
        Reason::Authenticated,
        Reason::BadPath,
        Reason::BadRequest,
        Reason::MissingToken,
        Reason::InvalidToken,
        Reason::UnknownIssuer,
        Reason::UnknownKey,
        Reason::BadSignature,
        Reason::Expired,
        Reason::NoRoute,
        Reason::ProviderNotAllowed,
        Reason::UnknownAccount,
        Reason::AccountDisabled,
        Reason::DomainNotAllowed,
        Reason::InsufficientScope,
        Reason::KeysUnavailable,
        Reason::UpstreamConnect,
        Reason::UpstreamTimeout,
        Reason::UpstreamProtocol,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Public => "public",
            Reason::Anonymous => "anonymous",
            Reason::Authenticated => "authenticated",
            Reason::BadPath => "bad_path",
            Reason::BadRequest => "bad_request",
            Reason::MissingToken => "missing_token",
            Reason::InvalidToken => "invalid_token",
            Reason::UnknownIssuer => "unknown_issuer",
            Reason::UnknownKey => "unknown_key",
            Reason::BadSignature => "bad_signature",
            Reason::Expired => "expired",
            Reason::NoRoute => "no_route",
            Reason::ProviderNotAllowed => "provider_not_allowed",
            Reason::UnknownAccount => "unknown_account",
            Reason::AccountDisabled => "account_disabled",
            Reason::DomainNotAllowed => "domain_not_allowed",
            Reason::InsufficientScope => "insufficient_scope",
            Reason::KeysUnavailable => "keys_unavailable",
            Reason::UpstreamConnect => "upstream_connect",
            Reason::UpstreamTimeout => "upstream_timeout",
            Reason::UpstreamProtocol => "upstream_protocol",
        }
    }

    /// `allow`, `deny` (the client's request was refused) or `error` (we or the upstream failed).
    pub fn decision(self) -> &'static str {
        match self {
            Reason::Public | Reason::Anonymous | Reason::Authenticated => "allow",
            Reason::BadPath
            | Reason::BadRequest
            | Reason::MissingToken
            | Reason::InvalidToken
            | Reason::UnknownIssuer
            | Reason::UnknownKey
            | Reason::BadSignature
            | Reason::Expired
            | Reason::NoRoute
            | Reason::ProviderNotAllowed
            | Reason::UnknownAccount
            | Reason::AccountDisabled
            | Reason::DomainNotAllowed
            | Reason::InsufficientScope => "deny",
            Reason::KeysUnavailable
            | Reason::UpstreamConnect
            | Reason::UpstreamTimeout
            | Reason::UpstreamProtocol => "error",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// How an error is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: StatusCode,
    /// The `error` field of the JSON body.
    pub error: &'static str,
    pub description: &'static str,
    pub reason: Reason,
    pub www_authenticate: Option<Cow<'static, str>>,
    /// `Retry-After` seconds, for 503.
    pub retry_after: Option<&'static str>,
}

const CHALLENGE: &str = "Bearer realm=\"tollgate\"";

/// The `invalid_token` challenge with a fixed description.
macro_rules! challenge {
    ($d:literal) => {
        concat!(
            "Bearer realm=\"tollgate\", error=\"invalid_token\", error_description=\"",
            $d,
            "\""
        )
    };
}

// === impl ProxyError ===

impl ProxyError {
    /// The one mapping from error to response (no wildcard arms: a new variant must be
    /// classified here before it compiles).
    pub fn rejection(&self) -> Rejection {
        use StatusCode as S;
        let r = |status, error, description, reason, www_authenticate: Option<&'static str>| {
            Rejection {
                status,
                error,
                description,
                reason,
                www_authenticate: www_authenticate.map(Cow::Borrowed),
                retry_after: None,
            }
        };
        let invalid = |description: &'static str, challenge: &'static str, reason| Rejection {
            status: S::UNAUTHORIZED,
            error: "invalid_token",
            description,
            reason,
            www_authenticate: Some(Cow::Borrowed(challenge)),
            retry_after: None,
        };
        match self {
            ProxyError::Path(e) => r(
                S::BAD_REQUEST,
                "invalid_request",
                match e {
                    PathError::NotAbsolute => "the request target must be an absolute path",
                    PathError::EncodedSlash
                    | PathError::EncodedBackslash
                    | PathError::EncodedNul => "the path contains a forbidden encoded character",
                    PathError::Backslash => "the path contains a backslash",
                    PathError::InvalidEscape => "the path contains an invalid percent escape",
                    PathError::ControlCharacter => "the path contains a control character",
                    PathError::AboveRoot => "the path climbs above the root",
                    PathError::Semicolon => "path parameters (;) are not allowed",
                    PathError::DotSegmentParameters => {
                        "the path contains a dot segment with parameters"
                    }
                },
                Reason::BadPath,
                None,
            ),
            ProxyError::Request(e) => r(
                S::BAD_REQUEST,
                "invalid_request",
                match e {
                    RequestError::DuplicateAuthorization => "more than one Authorization header",
                    RequestError::TokenInTwoPlaces => "a token was sent in more than one place",
                    RequestError::AmbiguousFraming => {
                        "Content-Length with Transfer-Encoding, or more than one Content-Length"
                    }
                },
                Reason::BadRequest,
                None,
            ),
            ProxyError::Auth(e) => match e {
                AuthError::MissingToken => r(
                    S::UNAUTHORIZED,
                    "unauthorized",
                    "a bearer token is required",
                    Reason::MissingToken,
                    Some(CHALLENGE),
                ),
                AuthError::MalformedAuthorization | AuthError::Malformed => invalid(
                    "malformed token",
                    challenge!("malformed token"),
                    Reason::InvalidToken,
                ),
                AuthError::TokenTooLarge => invalid(
                    "token too large",
                    challenge!("token too large"),
                    Reason::InvalidToken,
                ),
                AuthError::UnsupportedAlgorithm => invalid(
                    "token algorithm not accepted",
                    challenge!("token algorithm not accepted"),
                    Reason::InvalidToken,
                ),
                AuthError::CriticalHeader => invalid(
                    "token has an unsupported critical header",
                    challenge!("token has an unsupported critical header"),
                    Reason::InvalidToken,
                ),
                AuthError::WrongType => invalid(
                    "token type not accepted",
                    challenge!("token type not accepted"),
                    Reason::InvalidToken,
                ),
                AuthError::UnknownIssuer => invalid(
                    "token issuer not accepted",
                    challenge!("token issuer not accepted"),
                    Reason::UnknownIssuer,
                ),
                AuthError::UnknownKey => invalid(
                    "token signing key not found",
                    challenge!("token signing key not found"),
                    Reason::UnknownKey,
                ),
                AuthError::BadSignature => invalid(
                    "token signature invalid",
                    challenge!("token signature invalid"),
                    Reason::BadSignature,
                ),
                AuthError::Expired => invalid(
                    "token expired",
                    challenge!("token expired"),
                    Reason::Expired,
                ),
                AuthError::NotYetValid => invalid(
                    "token not yet valid",
                    challenge!("token not yet valid"),
                    Reason::InvalidToken,
                ),
                AuthError::WrongAudience => invalid(
                    "token audience not accepted",
                    challenge!("token audience not accepted"),
                    Reason::InvalidToken,
                ),
                AuthError::MissingClaim => invalid(
                    "token lacks a required claim",
                    challenge!("token lacks a required claim"),
                    Reason::InvalidToken,
                ),
                AuthError::InvalidClaim => invalid(
                    "token claim has an invalid type",
                    challenge!("token claim has an invalid type"),
                    Reason::InvalidToken,
                ),
                AuthError::LifetimeTooLong => invalid(
                    "token lifetime too long",
                    challenge!("token lifetime too long"),
                    Reason::InvalidToken,
                ),
                AuthError::KeysUnavailable => Rejection {
                    status: S::SERVICE_UNAVAILABLE,
                    error: "temporarily_unavailable",
                    description: "the token issuer's keys are not available yet",
                    reason: Reason::KeysUnavailable,
                    www_authenticate: None,
                    retry_after: Some("5"),
                },
            },
            ProxyError::Denied(e) => match e {
                DenyReason::NoRoute => r(
                    S::FORBIDDEN,
                    "access_denied",
                    "no route allows this request",
                    Reason::NoRoute,
                    None,
                ),
                DenyReason::ProviderNotAllowed => r(
                    S::FORBIDDEN,
                    "access_denied",
                    "tokens from this issuer are not accepted here",
                    Reason::ProviderNotAllowed,
                    None,
                ),
            },
            ProxyError::Identity(e) => match e {
                IdentityError::UnknownAccount => r(
                    S::FORBIDDEN,
                    "unknown_account",
                    "no account is mapped to this identity",
                    Reason::UnknownAccount,
                    None,
                ),
                IdentityError::AccountDisabled => r(
                    S::FORBIDDEN,
                    "account_disabled",
                    "the account is disabled",
                    Reason::AccountDisabled,
                    None,
                ),
                IdentityError::DomainNotAllowed => r(
                    S::FORBIDDEN,
                    "domain_not_allowed",
                    "the email domain is not allowed",
                    Reason::DomainNotAllowed,
                    None,
                ),
            },
            ProxyError::InsufficientScope(scope) => Rejection {
                status: S::FORBIDDEN,
                error: "insufficient_scope",
                description: "the token does not grant the permissions this route requires",
                reason: Reason::InsufficientScope,
                www_authenticate: Some(Cow::Owned(format!(
                    "Bearer realm=\"tollgate\", error=\"insufficient_scope\", scope=\"{scope}\""
                ))),
                retry_after: None,
            },
            ProxyError::Upstream(e) => match e {
                UpstreamError::Connect => r(
                    S::BAD_GATEWAY,
                    "upstream_unavailable",
                    "the upstream service is unreachable",
                    Reason::UpstreamConnect,
                    None,
                ),
                UpstreamError::Timeout => r(
                    S::GATEWAY_TIMEOUT,
                    "upstream_timeout",
                    "the upstream service did not answer in time",
                    Reason::UpstreamTimeout,
                    None,
                ),
                UpstreamError::Protocol => r(
                    S::BAD_GATEWAY,
                    "upstream_error",
                    "the upstream service failed to answer",
                    Reason::UpstreamProtocol,
                    None,
                ),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_indexed_densely() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }

    #[test]
    fn statuses_follow_the_design_table() {
        let s = |e: ProxyError| e.rejection().status.as_u16();
        assert_eq!(s(PathError::EncodedSlash.into()), 400);
        assert_eq!(s(RequestError::DuplicateAuthorization.into()), 400);
        assert_eq!(s(AuthError::MissingToken.into()), 401);
        assert_eq!(s(DenyReason::NoRoute.into()), 403);
        assert_eq!(s(UpstreamError::Connect.into()), 502);
        assert_eq!(s(UpstreamError::Timeout.into()), 504);
        let missing = ProxyError::from(AuthError::MissingToken).rejection();
        assert_eq!(
            missing.www_authenticate.as_deref(),
            Some("Bearer realm=\"tollgate\"")
        );
    }
}

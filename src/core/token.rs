//! The built-in token check: a JSON Web Token verified by the hub itself
//! (`jwt_key`), so that the common case of "a signed token says who may
//! connect, until when, and to which topics" needs no host code per
//! handshake. The verification is the `jsonwebtoken` crate's; this module
//! says which algorithms and claims count and what each refusal is called.
//!
//! A token must carry `exp` (seconds since the epoch); `nbf`, `aud` and
//! `iss` are checked when present (`aud`/`iss` only against what the host
//! configured). A `topics` claim, a list of names, restricts what the
//! client may subscribe to. The key's family must match every algorithm
//! allowed, so a public key can never verify an HMAC token made with it
//! (the classic algorithm-confusion attack), and `none` is never allowed.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::core::authorize::HandshakeRequest;
use crate::core::stats::Rejection;

/// How a token travels in `Sec-WebSocket-Protocol`: `bearer.<token>`,
/// beside the protocol the hub answers with ([`SUBPROTOCOL`]).
pub const PROTOCOL_PREFIX: &str = "bearer.";

/// The subprotocol the hub selects when a client offers it, as a browser
/// passing its token in `Sec-WebSocket-Protocol` must offer one the server
/// accepts.
pub const SUBPROTOCOL: &str = "wshub";

/// What the host configures.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenConfig {
    /// The HMAC secret (HS*), or the PEM public key (RS*, PS*, ES*, EdDSA).
    pub key: Vec<u8>,
    /// Algorithms accepted, by their JWT names (`HS256`, `RS256`, ...),
    /// all of the key's family.
    pub algorithms: Vec<String>,
    /// Accepted `aud` values (`None`: a token's `aud` is not checked).
    pub audience: Option<Vec<String>>,
    /// Accepted `iss` values (`None`: not checked).
    pub issuer: Option<Vec<String>>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// The query parameter a token may come in.
    pub query_param: String,
    /// The cookie a token may come in (`None`: not from a cookie).
    pub cookie: Option<String>,
}

impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key: configurations end up in logs.
        f.debug_struct("TokenConfig")
            .field("algorithms", &self.algorithms)
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("leeway", &self.leeway)
            .field("query_param", &self.query_param)
            .field("cookie", &self.cookie)
            .finish_non_exhaustive()
    }
}

/// A verified token: what the hub needs of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// Seconds since the epoch at which the token expires.
    pub exp: u64,
    /// The topics it allows (`None`: no restriction).
    pub topics: Option<BTreeSet<String>>,
    /// Its subject, if any: a refreshed token must keep it.
    pub sub: Option<String>,
}

impl Claims {
    /// How long from now until it expires (zero if it has).
    pub fn remaining(&self) -> Duration {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Duration::from_secs(self.exp).saturating_sub(now)
    }
}

#[derive(Deserialize)]
struct RawClaims {
    exp: u64,
    #[serde(default)]
    topics: Option<Vec<String>>,
    #[serde(default)]
    sub: Option<String>,
}

/// Why a token was refused: a handshake reason of its own in
/// `handshakes_rejected`, and the message of a refused refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No token where one was looked for.
    Missing,
    /// Not a JWT, or a claim of the wrong type (`exp` not a number,
    /// `topics` not a list of strings), or a required one missing.
    Malformed,
    /// The signature does not verify with the key.
    Signature,
    /// Signed with an algorithm not allowed (or `none`).
    Algorithm,
    /// Its `exp` has passed.
    Expired,
    /// Its `nbf` is still to come.
    NotYetValid,
    /// Its `aud` or `iss` is not one configured, or a refresh changed its
    /// `sub`.
    Claims,
}

impl Refusal {
    /// Its name, as in `handshakes_rejected` without the `token_` prefix.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::Malformed => "malformed",
            Refusal::Signature => "signature",
            Refusal::Algorithm => "algorithm",
            Refusal::Expired => "expired",
            Refusal::NotYetValid => "not_yet_valid",
            Refusal::Claims => "claims",
        }
    }

    /// What the refused client is told (the HTTP body, or the error
    /// frame's message).
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Missing => "a token is required",
            Refusal::Malformed => "invalid token: not a JWT with a numeric exp",
            Refusal::Signature => "invalid token: bad signature",
            Refusal::Algorithm => "invalid token: algorithm not allowed",
            Refusal::Expired => "invalid token: expired",
            Refusal::NotYetValid => "invalid token: not valid yet (nbf)",
            Refusal::Claims => "invalid token: aud, iss or sub not accepted",
        }
    }

    /// The handshake rejection it is counted as.
    pub fn rejection(self) -> Rejection {
        match self {
            Refusal::Missing => Rejection::TokenMissing,
            Refusal::Malformed => Rejection::TokenMalformed,
            Refusal::Signature => Rejection::TokenSignature,
            Refusal::Algorithm => Rejection::TokenAlgorithm,
            Refusal::Expired => Rejection::TokenExpired,
            Refusal::NotYetValid => Rejection::TokenNotYetValid,
            Refusal::Claims => Rejection::TokenClaims,
        }
    }
}

/// The check, built once when the hub starts.
pub struct TokenCheck {
    key: DecodingKey,
    validation: Validation,
    /// Where tokens are looked for besides the headers.
    pub query_param: String,
    /// The cookie looked in, if any.
    pub cookie: Option<String>,
}

impl std::fmt::Debug for TokenCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("TokenCheck")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

impl TokenCheck {
    /// Checks the configuration and builds the key.
    ///
    /// # Errors
    /// A message naming the option at fault, for
    /// [`crate::core::error::Error::InvalidConfig`].
    pub fn new(config: &TokenConfig) -> Result<Self, String> {
        if config.algorithms.is_empty() {
            return Err("jwt_algorithms must name at least one algorithm".into());
        }
        let mut algorithms = Vec::new();
        for name in &config.algorithms {
            let algorithm: Algorithm = name.trim().parse().map_err(|_| {
                format!(
                    "jwt_algorithms: unknown algorithm {name:?} (HS256, HS384, HS512, RS256, \
                     RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA)"
                )
            })?;
            algorithms.push(algorithm);
        }
        let family = algorithms[0].family();
        if algorithms.iter().any(|a| a.family() != family) {
            return Err(
                "jwt_algorithms must all be of one family (HMAC, RSA, EC or EdDSA): one key \
                 verifies them all"
                    .into(),
            );
        }
        if config.key.is_empty() {
            return Err("jwt_key is empty".into());
        }
        let pem = |kind: &str, e: jsonwebtoken::errors::Error| {
            format!("jwt_key is not a PEM {kind} public key ({e})")
        };
        let key = match algorithms[0] {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                DecodingKey::from_secret(&config.key).map_err(|e| format!("jwt_key: {e}"))?
            }
            Algorithm::ES256 | Algorithm::ES384 => {
                DecodingKey::from_ec_pem(&config.key).map_err(|e| pem("EC", e))?
            }
            Algorithm::EdDSA => {
                DecodingKey::from_ed_pem(&config.key).map_err(|e| pem("Ed25519", e))?
            }
            _ => DecodingKey::from_rsa_pem(&config.key).map_err(|e| pem("RSA", e))?,
        };
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms;
        validation.leeway = config.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        match &config.audience {
            Some(audience) => validation.set_audience(audience),
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &config.issuer {
            validation.set_issuer(issuer);
        }
        if config.query_param.is_empty() {
            return Err("jwt_query must not be empty".into());
        }
        Ok(TokenCheck {
            key,
            validation,
            query_param: config.query_param.clone(),
            cookie: config.cookie.clone(),
        })
    }

    /// The token of a handshake, looked for in this order: an
    /// `Authorization: Bearer` header, a `Sec-WebSocket-Protocol` entry
    /// `bearer.<token>` (how a browser's `WebSocket` can send one), the
    /// cookie `jwt_cookie`, the query parameter `jwt_query`.
    pub fn find(&self, request: &HandshakeRequest) -> Option<String> {
        fn header<'a>(
            request: &'a HandshakeRequest,
            name: &'a str,
        ) -> impl Iterator<Item = &'a str> + 'a {
            request
                .headers
                .iter()
                .filter(move |(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        }
        let bearer = header(request, "authorization").find_map(|value| {
            let (scheme, token) = value.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_owned())
        });
        let protocol = || {
            header(request, "sec-websocket-protocol")
                .flat_map(|v| v.split(','))
                .find_map(|p| p.trim().strip_prefix(PROTOCOL_PREFIX).map(str::to_owned))
        };
        let cookie = || {
            let name = self.cookie.as_deref()?;
            request
                .cookies()
                .into_iter()
                .find_map(|(n, v)| (n == name).then_some(v))
        };
        let query = || {
            request
                .query_params()
                .into_iter()
                .filter(|(n, _)| *n == self.query_param)
                .map(|(_, v)| v)
                .next_back()
        };
        bearer
            .or_else(protocol)
            .or_else(cookie)
            .or_else(query)
            .filter(|t| !t.is_empty())
    }

    /// Verifies a token.
    ///
    /// # Errors
    /// Why it is refused.
    pub fn verify(&self, token: &str) -> Result<Claims, Refusal> {
        let data = jsonwebtoken::decode::<RawClaims>(token, &self.key, &self.validation)
            .map_err(|e| refusal(e.kind()))?;
        let claims = data.claims;
        Ok(Claims {
            exp: claims.exp,
            topics: claims.topics.map(|t| t.into_iter().collect()),
            sub: claims.sub,
        })
    }
}

fn refusal(kind: &ErrorKind) -> Refusal {
    match kind {
        ErrorKind::InvalidSignature => Refusal::Signature,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => Refusal::Algorithm,
        ErrorKind::ExpiredSignature => Refusal::Expired,
        ErrorKind::ImmatureSignature => Refusal::NotYetValid,
        ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience | ErrorKind::InvalidSubject => {
            Refusal::Claims
        }
        _ => Refusal::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

    fn config(algorithms: &[&str]) -> TokenConfig {
        TokenConfig {
            key: b"secret".to_vec(),
            algorithms: algorithms.iter().map(|a| (*a).to_owned()).collect(),
            audience: None,
            issuer: None,
            leeway: Duration::ZERO,
            query_param: "token".into(),
            cookie: None,
        }
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn token(claims: &serde_json::Value, secret: &[u8], alg: Algorithm) -> String {
        encode(
            &Header::new(alg),
            claims,
            &EncodingKey::from_secret(secret).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn valid_tokens_give_their_claims_and_bad_ones_their_reason() {
        let check = TokenCheck::new(&config(&["HS256"])).unwrap();
        let exp = now() + 60;
        let good = token(
            &serde_json::json!({"exp": exp, "topics": ["a", "b"], "sub": "u1"}),
            b"secret",
            Algorithm::HS256,
        );
        let claims = check.verify(&good).unwrap();
        assert_eq!(claims.exp, exp);
        assert_eq!(claims.topics.unwrap().len(), 2);
        assert_eq!(claims.sub.as_deref(), Some("u1"));
        let cases = [
            (
                token(&serde_json::json!({"exp": exp}), b"other", Algorithm::HS256),
                Refusal::Signature,
            ),
            (
                token(
                    &serde_json::json!({"exp": exp}),
                    b"secret",
                    Algorithm::HS384,
                ),
                Refusal::Algorithm,
            ),
            (
                token(
                    &serde_json::json!({"exp": now() - 10}),
                    b"secret",
                    Algorithm::HS256,
                ),
                Refusal::Expired,
            ),
            (
                token(
                    &serde_json::json!({"exp": exp, "nbf": now() + 30}),
                    b"secret",
                    Algorithm::HS256,
                ),
                Refusal::NotYetValid,
            ),
            (
                token(
                    &serde_json::json!({"sub": "x"}),
                    b"secret",
                    Algorithm::HS256,
                ),
                Refusal::Malformed,
            ),
            (
                token(
                    &serde_json::json!({"exp": exp, "topics": "a"}),
                    b"secret",
                    Algorithm::HS256,
                ),
                Refusal::Malformed,
            ),
            ("not.a.jwt".to_owned(), Refusal::Malformed),
            // alg "none", unsigned: never accepted.
            (
                "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJleHAiOjk5OTk5OTk5OTl9.".to_owned(),
                Refusal::Malformed,
            ),
        ];
        for (token, why) in cases {
            assert_eq!(check.verify(&token), Err(why), "{token}");
        }
    }

    #[test]
    fn audience_and_issuer_are_checked_when_configured() {
        let mut cfg = config(&["HS256"]);
        cfg.audience = Some(vec!["hub".into()]);
        cfg.issuer = Some(vec!["app".into()]);
        let check = TokenCheck::new(&cfg).unwrap();
        let exp = now() + 60;
        let make = |v: serde_json::Value| token(&v, b"secret", Algorithm::HS256);
        assert!(check
            .verify(&make(
                serde_json::json!({"exp": exp, "aud": "hub", "iss": "app"})
            ))
            .is_ok());
        assert_eq!(
            check.verify(&make(
                serde_json::json!({"exp": exp, "aud": "x", "iss": "app"})
            )),
            Err(Refusal::Claims)
        );
        assert_eq!(
            check.verify(&make(
                serde_json::json!({"exp": exp, "aud": "hub", "iss": "x"})
            )),
            Err(Refusal::Claims)
        );
    }

    #[test]
    fn bad_configurations_are_refused_with_the_option_named() {
        for (algorithms, fragment) in [
            (vec![], "at least one"),
            (vec!["HS256", "RS256"], "one family"),
            (vec!["none"], "unknown algorithm"),
        ] {
            let error = TokenCheck::new(&config(&algorithms)).unwrap_err();
            assert!(error.contains(fragment), "{error}");
        }
        let mut not_pem = config(&["RS256"]);
        not_pem.key = b"secret".to_vec();
        assert!(TokenCheck::new(&not_pem).unwrap_err().contains("PEM"));
    }
}

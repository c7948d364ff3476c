use connector_core::{SecretRef, TickContext};
use http::HeaderValue;
use serde::{Deserialize, Serialize};

use crate::HttpError;

/// How a request authenticates, as operators write it in a connector's config:
/// `{"type": "none"}`, `{"type": "bearer", "token_ref": "$env:NAME"}` or
/// `{"type": "basic", "username": "u", "password_ref": "$env:NAME"}`.
///
/// Secrets stay references until a request is sent; the header built from them is
/// marked sensitive and never logged. An unresolvable reference is a `Config` error
/// (`token resolve: environment variable `NAME` is not set`), which disables the
/// connector until an operator fixes it.
///
/// ```
/// use connector_http::Auth;
///
/// let auth: Auth = serde_json::from_value(serde_json::json!(
///     {"type": "bearer", "token_ref": "$env:AIRQ_TOKEN"}
/// )).unwrap();
/// assert!(matches!(auth, Auth::Bearer { .. }));
/// let typo = serde_json::from_value::<Auth>(serde_json::json!({"type": "bearer", "token": "x"}));
/// assert_eq!(typo.unwrap_err().to_string(), "unknown field `token`, expected `token_ref`");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Auth {
    /// No `Authorization` header.
    #[default]
    None,
    /// `Authorization: Bearer <token>`.
    Bearer {
        /// Where the token comes from, `$env:NAME`.
        #[serde(deserialize_with = "token_ref")]
        token_ref: SecretRef,
    },
    /// `Authorization: Basic base64(username:password)`.
    Basic {
        /// The user name, sent as written.
        username: String,
        /// Where the password comes from, `$env:NAME`.
        #[serde(deserialize_with = "password_ref")]
        password_ref: SecretRef,
    },
}

// The enum's `type` tag makes serde buffer the fields, which loses the key path; these
// put the key back into a refused reference's message (which never shows the value).
fn token_ref<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SecretRef, D::Error> {
    named_secret_ref("token_ref", d)
}

fn password_ref<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SecretRef, D::Error> {
    named_secret_ref("password_ref", d)
}

fn named_secret_ref<'de, D: serde::Deserializer<'de>>(
    key: &str,
    d: D,
) -> Result<SecretRef, D::Error> {
    SecretRef::deserialize(d).map_err(|e| serde::de::Error::custom(format!("{key}: {e}")))
}

impl Auth {
    /// The `Authorization` header value, with secrets resolved now through `ctx`.
    pub fn header(&self, ctx: &TickContext) -> Result<Option<HeaderValue>, HttpError> {
        use base64::Engine as _;
        let resolve = |r| {
            ctx.resolve(r)
                .map_err(|e| HttpError::config(format!("token resolve: {e}")))
        };
        let value = match self {
            Auth::None => return Ok(None),
            Auth::Bearer { token_ref } => format!("Bearer {}", resolve(token_ref)?.expose()),
            Auth::Basic {
                username,
                password_ref,
            } => {
                let password = resolve(password_ref)?;
                let raw = format!("{username}:{}", password.expose());
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(raw)
                )
            }
        };
        let mut value = HeaderValue::from_str(&value).map_err(|_| {
            // Never echo the value: it holds the secret.
            HttpError::config(
                "token resolve: the secret holds characters an HTTP header cannot carry",
            )
        })?;
        value.set_sensitive(true);
        Ok(Some(value))
    }
}

//! Admin endpoints (changing the stop, reloading the configuration) need a bearer token; the
//! token comes from an environment variable or a file named in `[http]`, never from the TOML
//! itself, so configuration files can be shared without leaking it.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// The admin token, if one is configured.
#[derive(Clone, Default)]
pub struct AdminToken(Option<Arc<str>>);

impl AdminToken {
    pub fn new(token: Option<String>) -> Self {
        AdminToken(token.filter(|t| !t.is_empty()).map(Arc::from))
    }

    fn accepts(&self, header_value: Option<&str>) -> Result<(), (StatusCode, &'static str)> {
        let Some(expected) = &self.0 else {
            return Err((
                StatusCode::FORBIDDEN,
                "admin endpoints are disabled: no admin token is configured \
                 (set `http.admin_token_env` or `http.admin_token_file`)",
            ));
        };
        let presented = header_value
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or((
                StatusCode::UNAUTHORIZED,
                "missing `Authorization: Bearer <admin token>`",
            ))?;
        if constant_time_eq(presented.trim().as_bytes(), expected.as_bytes()) {
            Ok(())
        } else {
            Err((StatusCode::UNAUTHORIZED, "wrong admin token"))
        }
    }
}

/// Compares without stopping at the first difference, so response times do not tell an
/// attacker how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Middleware: `router.route_layer(axum::middleware::from_fn_with_state(token, require_admin))`.
pub async fn require_admin(
    State(token): State<AdminToken>,
    request: Request,
    next: Next,
) -> Response {
    let header_value = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match token.accepts(header_value) {
        Ok(()) => next.run(request).await,
        Err((status, reason)) => {
            let path = request.uri().path().to_owned();
            tracing::warn!(%path, %status, "admin request refused: {reason}");
            let mut response =
                (status, Json(serde_json::json!({ "error": reason }))).into_response();
            if status == StatusCode::UNAUTHORIZED {
                if let Ok(value) = "Bearer".parse() {
                    response
                        .headers_mut()
                        .insert(header::WWW_AUTHENTICATE, value);
                }
            }
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_configured_token_passes() {
        let token = AdminToken::new(Some("s3cret".into()));
        assert!(token.accepts(Some("Bearer s3cret")).is_ok());
        assert_eq!(
            token.accepts(Some("Bearer s3cre")).unwrap_err().0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            token.accepts(Some("s3cret")).unwrap_err().0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(token.accepts(None).unwrap_err().0, StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn without_a_token_admin_endpoints_are_closed() {
        let token = AdminToken::new(Some(String::new()));
        assert_eq!(
            token.accepts(Some("Bearer ")).unwrap_err().0,
            StatusCode::FORBIDDEN
        );
    }
}

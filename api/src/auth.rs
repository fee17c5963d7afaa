//! Bearer-token access: `WriteAccess` guards every write; `ReadAccess` guards reads when the
//! deployment asks for it. Tokens are compared in constant time.

use crate::error::ApiError;
use crate::state::AppState;
use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use secrecy::ExposeSecret;
use std::future::{Ready, ready};

/// Proof that the request may write.
pub struct WriteAccess;
/// Proof that the request may read.
pub struct ReadAccess;

fn check(req: &HttpRequest, required: bool) -> Result<(), ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .expect("AppState is registered");
    if !required {
        return Ok(());
    }
    let presented = req
        .headers()
        .get("Authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(ApiError::Unauthorized)?;
    let expected = state.token.expose_secret().as_bytes();
    let presented = presented.trim().as_bytes();
    let same = expected.len() == presented.len()
        && expected
            .iter()
            .zip(presented)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if same {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

/// Checks the token for a write (always) or a read (when the deployment protects reads).
pub fn authorize(req: &HttpRequest, write: bool) -> Result<(), ApiError> {
    let protect_reads = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.protect_reads)
        .unwrap_or(true);
    check(req, write || protect_reads)
}

impl FromRequest for WriteAccess {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authorize(req, true).map(|_| WriteAccess))
    }
}

impl FromRequest for ReadAccess {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authorize(req, false).map(|_| ReadAccess))
    }
}

//! MLflow's error answer: `{"error_code": ..., "message": ...}` with the status MLflow gives
//! each code, so MLflow clients raise the exception they would against MLflow itself.

use crate::error::ApiError;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct MlflowError {
    pub code: &'static str,
    pub message: String,
}

impl MlflowError {
    pub fn invalid(message: impl Into<String>) -> Self {
        MlflowError {
            code: "INVALID_PARAMETER_VALUE",
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        MlflowError {
            code: "RESOURCE_DOES_NOT_EXIST",
            message: message.into(),
        }
    }

    /// A store or server prl depends on did not answer: 503, worth retrying.
    pub fn unavailable(message: impl Into<String>) -> Self {
        MlflowError {
            code: "TEMPORARILY_UNAVAILABLE",
            message: message.into(),
        }
    }

    pub fn exists(message: impl Into<String>) -> Self {
        MlflowError {
            code: "RESOURCE_ALREADY_EXISTS",
            message: message.into(),
        }
    }
}

impl ResponseError for MlflowError {
    fn status_code(&self) -> StatusCode {
        match self.code {
            "RESOURCE_DOES_NOT_EXIST" | "ENDPOINT_NOT_FOUND" => StatusCode::NOT_FOUND,
            "UNAUTHENTICATED" => StatusCode::UNAUTHORIZED,
            "PERMISSION_DENIED" => StatusCode::FORBIDDEN,
            "REQUEST_LIMIT_EXCEEDED" => StatusCode::PAYLOAD_TOO_LARGE,
            "TEMPORARILY_UNAVAILABLE" => StatusCode::SERVICE_UNAVAILABLE,
            "INTERNAL_ERROR" => StatusCode::INTERNAL_SERVER_ERROR,
            // INVALID_PARAMETER_VALUE, RESOURCE_ALREADY_EXISTS, BAD_REQUEST, INVALID_STATE.
            _ => StatusCode::BAD_REQUEST,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        match self.code {
            "UNAUTHENTICATED" => {
                response.insert_header(("WWW-Authenticate", "Bearer"));
            }
            "TEMPORARILY_UNAVAILABLE" => {
                response.insert_header(("Retry-After", "5"));
            }
            _ => {}
        }
        response.json(serde_json::json!({ "error_code": self.code, "message": self.message }))
    }
}

/// prl's own errors in MLflow's words.
impl From<ApiError> for MlflowError {
    fn from(e: ApiError) -> Self {
        let code = match &e {
            ApiError::Unauthorized => "UNAUTHENTICATED",
            ApiError::NotFound(_) => "RESOURCE_DOES_NOT_EXIST",
            ApiError::TooLarge { .. } => "REQUEST_LIMIT_EXCEEDED",
            ApiError::Unavailable(_) => "TEMPORARILY_UNAVAILABLE",
            ApiError::Malformed(_) => "BAD_REQUEST",
            ApiError::MethodNotAllowed { .. } => "ENDPOINT_NOT_FOUND",
            ApiError::Conflict(_) => "INVALID_STATE",
            ApiError::BadParameter { .. }
            | ApiError::InvalidSpec { .. }
            | ApiError::InvalidRequest { .. }
            | ApiError::IdempotencyKeyReused => "INVALID_PARAMETER_VALUE",
        };
        MlflowError {
            code,
            message: e.to_string(),
        }
    }
}

impl From<sqlx::Error> for MlflowError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::from(e).into()
    }
}

impl From<crate::store::AppendError> for MlflowError {
    fn from(e: crate::store::AppendError) -> Self {
        ApiError::from(e).into()
    }
}

//! The API's errors and their HTTP answers: always a JSON body naming what is wrong.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Malformed(String),
    #[error("{reason}")]
    BadParameter { parameter: String, reason: String },
    #[error("{field}: {reason}")]
    InvalidSpec { field: String, reason: String },
    /// A field of an import or a dataset registration is bad; for an import's files, `reason`
    /// names the file and line.
    #[error("{field}: {reason}")]
    InvalidRequest { field: String, reason: String },
    #[error("a bearer token is required")]
    Unauthorized,
    #[error("{0} was not found")]
    NotFound(String),
    #[error("{path} does not answer {method}; it answers {}", allow.join(", "))]
    MethodNotAllowed {
        method: String,
        path: String,
        allow: Vec<&'static str>,
    },
    #[error("{0}")]
    Conflict(String),
    #[error("the request body exceeds the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the service is unavailable: {0}")]
    Unavailable(String),
    #[error("this Idempotency-Key was used before with another body")]
    IdempotencyKeyReused,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A stable code: `malformed`, `bad_parameter`, `invalid_spec`, `unauthorized`, `not_found`,
    /// `method_not_allowed`, `invalid_request`, `conflict`, `too_large`, `unavailable` or
    /// `idempotency_key_reused`.
    pub error: &'static str,
    /// A sentence for people.
    pub message: String,
    /// The path of the offending field, for `invalid_spec` and `invalid_request`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The offending query parameter, for `bad_parameter`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameter: Option<String>,
}

impl ApiError {
    fn code(&self) -> &'static str {
        match self {
            ApiError::Malformed(_) => "malformed",
            ApiError::BadParameter { .. } => "bad_parameter",
            ApiError::InvalidSpec { .. } => "invalid_spec",
            ApiError::InvalidRequest { .. } => "invalid_request",
            ApiError::Unauthorized => "unauthorized",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::TooLarge { .. } => "too_large",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::IdempotencyKeyReused => "idempotency_key_reused",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Malformed(_) | ApiError::BadParameter { .. } => StatusCode::BAD_REQUEST,
            ApiError::InvalidSpec { .. }
            | ApiError::InvalidRequest { .. }
            | ApiError::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let (field, message) = match self {
            ApiError::InvalidSpec { field, reason }
            | ApiError::InvalidRequest { field, reason } => (Some(field.clone()), reason.clone()),
            other => (None, other.to_string()),
        };
        let parameter = match self {
            ApiError::BadParameter { parameter, .. } => Some(parameter.clone()),
            ApiError::IdempotencyKeyReused => Some("Idempotency-Key".into()),
            _ => None,
        };
        let mut response = HttpResponse::build(self.status_code());
        match self {
            ApiError::Unauthorized => {
                response.insert_header(("WWW-Authenticate", "Bearer"));
            }
            ApiError::Unavailable(_) => {
                response.insert_header(("Retry-After", "5"));
            }
            ApiError::MethodNotAllowed { allow, .. } => {
                response.insert_header(("Allow", allow.join(", ")));
            }
            _ => {}
        }
        response.json(ErrorBody {
            error: self.code(),
            message,
            field,
            parameter,
        })
    }
}

/// Infrastructure failures are logged in full and answered without internals.
impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        tracing::error!("database: {e}");
        ApiError::Unavailable("the database did not answer".into())
    }
}

impl From<crate::store::AppendError> for ApiError {
    fn from(e: crate::store::AppendError) -> Self {
        match e {
            crate::store::AppendError::Conflict { .. } => ApiError::Conflict(e.to_string()),
            crate::store::AppendError::Database(db) => db.into(),
        }
    }
}

impl From<prl_schema::spec::SpecError> for ApiError {
    fn from(e: prl_schema::spec::SpecError) -> Self {
        match e {
            prl_schema::spec::SpecError::Malformed(m) => ApiError::Malformed(m),
            prl_schema::spec::SpecError::Invalid { field, reason } => {
                ApiError::InvalidSpec { field, reason }
            }
        }
    }
}

impl ApiError {
    pub fn bad_parameter(parameter: &str, reason: impl Into<String>) -> Self {
        ApiError::BadParameter {
            parameter: parameter.to_owned(),
            reason: reason.into(),
        }
    }
}

//! Query parameters parsed by hand, so that every mistake gets a 400 naming the parameter.

use crate::error::ApiError;
use uuid::Uuid;

/// Whether PostgreSQL can store the time: prl takes the years 1 to 9999 from clients.
pub fn storable_time(t: chrono::DateTime<chrono::Utc>) -> bool {
    use chrono::Datelike;
    (1..=9999).contains(&t.year())
}

/// Parses an integer query parameter within `range`, naming the parameter when it is wrong.
pub fn int_parameter(
    name: &str,
    value: Option<&str>,
    default: i64,
    range: std::ops::RangeInclusive<i64>,
) -> Result<i64, ApiError> {
    let Some(text) = value else {
        return Ok(default);
    };
    let number: i64 = text.parse().map_err(|_| {
        ApiError::bad_parameter(name, format!("{name} must be a whole number, not {text:?}"))
    })?;
    if !range.contains(&number) {
        return Err(ApiError::bad_parameter(
            name,
            format!(
                "{name} must be between {} and {}",
                range.start(),
                range.end()
            ),
        ));
    }
    Ok(number)
}

pub fn float_parameter(name: &str, value: Option<&str>) -> Result<Option<f64>, ApiError> {
    value
        .map(|text| {
            text.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| {
                    ApiError::bad_parameter(name, format!("{name} must be a number, not {text:?}"))
                })
        })
        .transpose()
}

pub fn bool_parameter(name: &str, value: Option<&str>) -> Result<Option<bool>, ApiError> {
    value
        .map(|text| match text {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(ApiError::bad_parameter(
                name,
                format!("{name} must be true or false, not {text:?}"),
            )),
        })
        .transpose()
}

/// A comma-separated list of 1 to `max` ids.
pub fn id_list(name: &str, list: &str, max: usize) -> Result<Vec<Uuid>, ApiError> {
    let ids: Vec<Uuid> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            Uuid::parse_str(s)
                .map_err(|_| ApiError::bad_parameter(name, format!("{s:?} is not an id")))
        })
        .collect::<Result<_, _>>()?;
    if ids.is_empty() || ids.len() > max {
        return Err(ApiError::bad_parameter(
            name,
            format!("name between 1 and {max} ids, separated by commas"),
        ));
    }
    Ok(ids)
}

/// Middleware: refuses a request whose query string holds a NUL in a name or value, with a 400
/// naming the parameter. PostgreSQL cannot compare text holding one, so a filter such as
/// `?name=a%00b` would otherwise answer 503.
pub async fn refuse_nul_in_query(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let query = req.query_string().as_bytes();
    if let Some((name, _)) =
        url::form_urlencoded::parse(query).find(|(k, v)| k.contains('\0') || v.contains('\0'))
    {
        let name = name.escape_debug().to_string();
        let reason = format!("{name} holds a NUL character (U+0000)");
        return Err(ApiError::bad_parameter(&name, reason).into());
    }
    next.call(req).await
}

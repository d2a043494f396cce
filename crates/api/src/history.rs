//! `history`: `GET [base]/_history`, `[base]/[type]/_history`,
//! `[base]/[type]/[id]/_history` (<http://hl7.org/fhir/R4/http.html#history>).
//!
//! Paging stays stable while others write: the next/previous links carry
//! `_before=<instant>`, Hearth's own parameter, which freezes the list at
//! the newest version shown on the first page (`HistoryParams::not_after`).

use crate::caller::Caller;
use domain::access::Access;
use crate::error::ApiError;
use crate::negotiation::{fhir_json_response, prefer};
use crate::request::{check_id, check_type, encode_pairs, is_format_param, query_pairs};
use crate::response_bundle::{BundleType, BundleWriter};
use crate::St;
use axum::extract::{Path, RawQuery};
use axum::response::Response;
use domain::service::{Handling, HistoryParams};
use domain::store::HistoryScope;
use fhir::instant::Instant;
use http::{HeaderMap, StatusCode};

/// `GET [base]/_history`.
pub(crate) async fn system(state: St, Caller(access): Caller, RawQuery(query): RawQuery, headers: HeaderMap) -> Result<Response, ApiError> {
    let path = format!("{}/_history", state.base);
    run(&state, &access, HistoryScope::System, path, query.as_deref(), &headers).await
}

/// `GET [base]/[type]/_history`.
pub(crate) async fn type_level(
    state: St, Caller(access): Caller,
    Path(resource_type): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_type(&resource_type)?;
    let path = format!("{}/{resource_type}/_history", state.base);
    run(&state, &access, HistoryScope::Type(resource_type), path, query.as_deref(), &headers).await
}

/// `GET [base]/[type]/[id]/_history`.
pub(crate) async fn instance(
    state: St, Caller(access): Caller,
    Path((resource_type, id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_type(&resource_type)?;
    check_id(&id)?;
    let path = format!("{}/{resource_type}/{id}/_history", state.base);
    run(&state, &access, HistoryScope::Instance { resource_type, id }, path, query.as_deref(), &headers).await
}

/// Reads `_since`, `_count` and the paging parameters `_offset`/`_before`.
/// Other parameters (including `_at`, which Hearth does not support) are
/// refused unless `Prefer: handling=lenient`.
fn parse_params(query: Option<&str>, handling: Handling) -> Result<HistoryParams, ApiError> {
    let mut params = HistoryParams::default();
    for (key, value) in query_pairs(query) {
        let instant = |name: &str| {
            // A `+` left unencoded in a time zone arrives as a space.
            Instant::parse(&value.replace(' ', "+"))
                .ok_or_else(|| ApiError::bad_request(format!("{name} must be a FHIR instant with a time zone")).at(name))
        };
        let number = |name: &str| {
            value
                .parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("{name} must be a non-negative integer")).at(name))
        };
        match key.as_str() {
            "_since" => params.since = Some(instant("_since")?),
            "_before" => params.not_after = Some(instant("_before")?),
            "_count" => params.count = Some(number("_count")?),
            "_offset" => params.offset = number("_offset")?,
            k if is_format_param(k) => {}
            _ if handling == Handling::Lenient => {}
            _ => {
                let shown: String = key.chars().take(64).collect();
                return Err(ApiError::bad_request(format!("history does not support the parameter '{shown}'")));
            }
        }
    }
    Ok(params)
}

async fn run(
    state: &St, access: &Access,
    scope: HistoryScope,
    path: String,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let params = parse_params(query, prefer(headers).handling)?;
    let page = state.service.history(access, &scope, &params).await?;

    // The page size the Service applied (it clamps the same way).
    let config = state.service.config();
    let count = params.count.unwrap_or(config.default_page_size).min(config.max_page_size);
    let frozen = params.not_after.or_else(|| page.items.first().map(|v| v.last_updated));
    let link = |offset: usize, before: Option<Instant>| {
        let mut pairs = Vec::with_capacity(4);
        if let Some(since) = params.since {
            pairs.push(("_since".to_string(), since.to_fhir()));
        }
        pairs.push(("_count".to_string(), count.to_string()));
        if offset > 0 {
            pairs.push(("_offset".to_string(), offset.to_string()));
        }
        if let Some(before) = before {
            pairs.push(("_before".to_string(), before.to_fhir()));
        }
        format!("{path}?{}", encode_pairs(&pairs))
    };
    let mut links = vec![("self", link(params.offset, params.not_after)), ("first", link(0, frozen))];
    let shown_end = params.offset + page.items.len();
    let more = match page.total {
        Some(total) => (shown_end as u64) < total,
        None => page.items.len() >= count,
    };
    if more && count > 0 {
        links.push(("next", link(params.offset + count, frozen)));
    }
    if params.offset > 0 {
        links.push(("previous", link(params.offset.saturating_sub(count), frozen)));
    }

    let size: usize = page.items.iter().map(|v| v.body.as_deref().map_or(0, str::len) + 256).sum();
    let mut bundle = BundleWriter::new(BundleType::History, page.total, &links, size);
    for version in &page.items {
        let full_url = format!("{}/{}/{}", state.base, version.resource_type, version.id);
        bundle.history_entry(&full_url, version, version.body.as_deref());
    }
    Ok(fhir_json_response(StatusCode::OK, bundle.finish()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parameters() {
        let p = parse_params(Some("_since=2024-01-01T00:00:00Z&_count=5&_offset=10&_format=json"), Handling::Strict).unwrap();
        assert_eq!(p.count, Some(5));
        assert_eq!(p.offset, 10);
        assert!(p.since.is_some());
        assert!(parse_params(Some("_since=yesterday"), Handling::Strict).is_err());
        assert!(parse_params(Some("_at=2024"), Handling::Strict).is_err());
        assert!(parse_params(Some("_at=2024"), Handling::Lenient).is_ok());
        assert!(parse_params(Some("_count=-1"), Handling::Strict).is_err());
    }
}

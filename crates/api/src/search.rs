//! `search`: `GET [base]/[type]?params`, `POST [base]/[type]/_search`,
//! `GET [base]?params` and `POST [base]/_search`
//! (<http://hl7.org/fhir/R4/http.html#search>, <http://hl7.org/fhir/R4/search.html>).
//!
//! The Service parses and runs the search; this module merges the
//! parameters, applies `_summary`/`_elements`, and writes the searchset
//! Bundle with its paging links (`_offset` is Hearth's paging parameter).

use crate::caller::Caller;
use domain::access::Access;
use crate::error::ApiError;
use crate::negotiation::{BodyMedia, body_media, fhir_json_response, prefer};
use crate::request::{check_type, encode_pairs, is_format_param, query_pairs, read_body};
use crate::response_bundle::{BundleType, BundleWriter};
use crate::summary::Subsetting;
use crate::St;
use axum::body::Body;
use axum::extract::{Path, RawQuery};
use axum::response::Response;
use domain::ErrorKind;
use domain::service::{MAX_INCLUDED, SearchResult};
use http::{HeaderMap, StatusCode};

/// `GET [base]/[type]?params`.
pub(crate) async fn type_get(
    state: St, Caller(access): Caller,
    Path(resource_type): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_type(&resource_type)?;
    run(&state, &access, Some(resource_type), query_pairs(query.as_deref()), &headers).await
}

/// `POST [base]/[type]/_search` with a form body, merged with the query string.
pub(crate) async fn type_post(
    state: St, Caller(access): Caller,
    Path(resource_type): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_type(&resource_type)?;
    let params = form_params(&state, query.as_deref(), &headers, body).await?;
    run(&state, &access, Some(resource_type), params, &headers).await
}

/// `GET [base]?params`: across all types (`_type` narrows).
pub(crate) async fn system(state: St, Caller(access): Caller, RawQuery(query): RawQuery, headers: HeaderMap) -> Result<Response, ApiError> {
    run(&state, &access, None, query_pairs(query.as_deref()), &headers).await
}

/// `POST [base]/_search`.
pub(crate) async fn system_post(
    state: St, Caller(access): Caller,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let params = form_params(&state, query.as_deref(), &headers, body).await?;
    run(&state, &access, None, params, &headers).await
}

/// Query-string parameters followed by those of the
/// `application/x-www-form-urlencoded` body (<http://hl7.org/fhir/R4/http.html#search>).
async fn form_params(
    state: &St,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Vec<(String, String)>, ApiError> {
    if headers.contains_key(http::header::CONTENT_TYPE) && body_media(headers)? != BodyMedia::Form {
        return Err(ApiError::new(
            ErrorKind::UnsupportedMediaType,
            "POST _search takes an application/x-www-form-urlencoded body",
        ));
    }
    let bytes = read_body(body, state.config.max_body_bytes).await?;
    let mut params = query_pairs(query);
    params.extend(form_urlencoded::parse(&bytes).into_owned());
    Ok(params)
}

async fn run(
    state: &St, access: &Access,
    resource_type: Option<String>,
    mut params: Vec<(String, String)>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let subsetting = take_subsetting(&mut params)?;
    let handling = prefer(headers).handling;
    let result = state.service.search(access, resource_type.as_deref(), &params, handling).await?;

    let path = match &resource_type {
        Some(t) => format!("{}/{t}", state.base),
        None => state.base.clone(),
    };
    searchset(&state.base, &path, &result, &subsetting)
}

/// Drops the format parameters and takes `_summary`/`_elements` out of `params`;
/// `_summary=count` becomes an exact count of no entries. Shared by every search-like
/// request (compartment search and the operations that answer a searchset).
pub(crate) fn take_subsetting(params: &mut Vec<(String, String)>) -> Result<Subsetting, ApiError> {
    params.retain(|(k, _)| !is_format_param(k));
    let subsetting = Subsetting::take(params)?;
    if subsetting.is_count() {
        // Only the total is wanted: ask for an exact count and no entries.
        params.retain(|(k, _)| k != "_count" && k != "_total");
        params.push(("_total".to_string(), "accurate".to_string()));
        params.push(("_count".to_string(), "0".to_string()));
    }
    Ok(subsetting)
}

/// The searchset Bundle of `result`, with paging links to `path` (the request's URL
/// without its query) and entries' fullUrls under `base`.
pub(crate) fn searchset(
    base: &str,
    path: &str,
    result: &SearchResult,
    subsetting: &Subsetting,
) -> Result<Response, ApiError> {
    let mut link_params: Vec<(String, String)> =
        result.applied.iter().filter(|(k, _)| k != "_count" && k != "_offset").cloned().collect();
    link_params.extend(subsetting.given().iter().cloned());
    // A search that pages stably names its kept result list (Hearth's `_page`).
    if let Some(token) = &result.page_token {
        link_params.push(("_page".to_string(), token.clone()));
    }
    let link = |offset: usize| {
        let mut pairs = link_params.clone();
        pairs.push(("_count".to_string(), result.count.to_string()));
        if offset > 0 {
            pairs.push(("_offset".to_string(), offset.to_string()));
        }
        format!("{path}?{}", encode_pairs(&pairs))
    };

    let page = &result.page;
    let mut links = vec![("self", link(result.offset))];
    if !subsetting.is_count() && result.count > 0 {
        links.push(("first", link(0)));
        let more = match page.total {
            Some(total) => ((result.offset + result.count) as u64) < total,
            // Without a total, a full page may have a successor.
            None => page.items.len() >= result.count,
        };
        if more {
            links.push(("next", link(result.offset + result.count)));
        }
        if result.offset > 0 {
            links.push(("previous", link(result.offset.saturating_sub(result.count))));
        }
    }

    let included = &result.included.resources;
    let size: usize =
        page.items.iter().chain(included).map(|r| r.body.as_deref().map_or(0, str::len) + 128).sum();
    let mut bundle = BundleWriter::new(BundleType::Searchset, page.total, &links, size);
    if !subsetting.is_count() {
        for stored in &page.items {
            let Some(text) = stored.body.as_deref() else { continue };
            let full_url = format!("{base}/{}/{}", stored.resource_type, stored.id);
            // A contained match (`_containedType=contained`) is the contained
            // resource itself, at its container's URL + `#id` (search.html#contained);
            // gone from a container written since the search (a later page), it is left out.
            let contained = match domain::store::split_contained_match_id(&stored.id) {
                Some((_, local)) => match domain::service::prepare::contained_resource(text, local) {
                    Some(found) => Some(found),
                    None => continue,
                },
                None => None,
            };
            let (resource_type, text) = match &contained {
                Some((resource_type, json)) => (resource_type.as_str(), json.as_str()),
                None => (stored.resource_type.as_str(), text),
            };
            if subsetting.is_full() {
                bundle.match_entry(&full_url, text);
            } else {
                bundle.match_entry(&full_url, &subsetting.apply(resource_type, text)?);
            }
        }
        // Included resources follow the matches, subset the same way.
        for stored in included {
            let Some(text) = stored.body.as_deref() else { continue };
            let full_url = format!("{base}/{}/{}", stored.resource_type, stored.id);
            if subsetting.is_full() {
                bundle.include_entry(&full_url, text);
            } else {
                bundle.include_entry(&full_url, &subsetting.apply(&stored.resource_type, text)?);
            }
        }
        if result.included.truncated {
            bundle.outcome_entry(
                "too-costly",
                &format!("_include/_revinclude found more resources than the {MAX_INCLUDED} a page may include; some were left out"),
            );
        }
    }
    Ok(fhir_json_response(StatusCode::OK, bundle.finish()))
}

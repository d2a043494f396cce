//! `$reindex`: `POST [base]/$reindex` (every resource) and
//! `POST [base]/[type]/$reindex` (one type). It activates the stored active
//! SearchParameter resources and rewrites the index rows of the resources in
//! scope (see `domain::service::reindex`).
//!
//! By default the request waits and answers 200 with a `Parameters` report.
//! With `Prefer: respond-async` it follows the FHIR asynchronous pattern
//! (<http://hl7.org/fhir/R4/async.html>): 202 Accepted at once with a
//! `Content-Location` to poll, which answers 202 with `X-Progress` while the
//! walk runs and then the report (or the error) once it is done. Reads and
//! writes go on while it runs.

use crate::caller::Caller;
use domain::access::Access;
use crate::St;
use crate::error::ApiError;
use crate::negotiation::{fhir_json_response, prefer};
use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use domain::service::{ReindexProgress, ReindexReport};
use domain::{Error, ErrorKind};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};

/// Background runs, by job id. Finished jobs are kept for polling until the
/// server stops (a few small reports).
#[derive(Default)]
pub(crate) struct Jobs {
    running: Mutex<HashMap<String, Arc<Job>>>,
}

struct Job {
    progress: ReindexProgress,
    result: OnceLock<Result<ReindexReport, Error>>,
}

/// `POST [base]/$reindex`.
pub(crate) async fn system(state: St, Caller(access): Caller, headers: HeaderMap) -> Result<Response, ApiError> {
    start(state, &access, None, &headers).await
}

/// `POST [base]/[type]/$reindex`.
pub(crate) async fn type_level(state: St, Caller(access): Caller, Path(resource_type): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    crate::request::check_type(&resource_type)?;
    start(state, &access, Some(resource_type), &headers).await
}

async fn start(state: St, access: &Access, resource_type: Option<String>, headers: &HeaderMap) -> Result<Response, ApiError> {
    if !prefer(headers).respond_async {
        let progress = ReindexProgress::default();
        let report = state.service.reindex(access, resource_type.as_deref(), &progress).await?;
        return Ok(fhir_json_response(StatusCode::OK, report_json(&report).to_string().into()));
    }
    let id = uuid::Uuid::new_v4().to_string();
    let job = Arc::new(Job { progress: ReindexProgress::default(), result: OnceLock::new() });
    lock(&state.jobs.running).insert(id.clone(), Arc::clone(&job));
    let service = Arc::clone(&state.service);
    let access = access.clone();
    tokio::spawn(async move {
        let result = service.reindex(&access, resource_type.as_deref(), &job.progress).await;
        if let Err(e) = &result {
            tracing::warn!(code = e.kind.code(), "reindex failed");
        }
        let _ = job.result.set(result);
    });
    let location = format!("{}/$reindex-status/{id}", state.base);
    let mut response = StatusCode::ACCEPTED.into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(http::header::CONTENT_LOCATION, value);
    }
    Ok(response)
}

/// `GET [base]/$reindex-status/[job]`: 202 with progress while running, then
/// the report or the error.
pub(crate) async fn status(state: St, Path(id): Path<String>) -> Result<Response, ApiError> {
    let job = lock(&state.jobs.running).get(&id).cloned();
    let Some(job) = job else {
        return Err(ApiError::new(ErrorKind::NotFound, "no such $reindex job"));
    };
    match job.result.get() {
        None => {
            let done = job.progress.done.load(Ordering::Relaxed);
            let total = job.progress.total.load(Ordering::Relaxed);
            let mut response = StatusCode::ACCEPTED.into_response();
            if let Ok(value) = HeaderValue::from_str(&format!("reindexed {done} of {total} resources")) {
                response.headers_mut().insert("x-progress", value);
            }
            Ok(response)
        }
        Some(Ok(report)) => Ok(fhir_json_response(StatusCode::OK, report_json(report).to_string().into())),
        Some(Err(e)) => Err(ApiError(e.clone())),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// The report as a `Parameters` resource.
fn report_json(report: &ReindexReport) -> Value {
    let mut parameters = vec![json!({ "name": "reindexed", "valueInteger": report.reindexed })];
    for active in &report.active {
        parameters.push(json!({ "name": "active", "valueString": active }));
    }
    for rejected in &report.rejected {
        parameters.push(json!({
            "name": "rejected",
            "part": [
                { "name": "searchParameter", "valueString": rejected.name },
                { "name": "reason", "valueString": rejected.issue.diagnostics },
            ]
        }));
    }
    json!({ "resourceType": "Parameters", "parameter": parameters })
}

use domain::Store;
use fhir::search::Registry;
use store::sqlite::{SqliteOptions, SqliteStore};
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(&dir.path().join("h.db"), SqliteOptions::default())?;
    let reg = Registry::core();
    let res = serde_json::json!({"resourceType": "Observation", "id": "o1", "status": "final", "subject": {"reference": "#p1"},
        "contained": [{"resourceType": "Patient", "id": "p1", "name": [{"family": "Taylor"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]}});
    let w = domain::service::prepare::stamp(&reg, "Observation", "o1", 1, fhir::instant::Instant(1), domain::store::Method::Post, res);
    store.commit(domain::store::Commit { writes: vec![w], ..Default::default() }).await?;
    for shape in std::env::args().skip(1) {
        let (rt, q) = shape.split_once('?').unwrap();
        let params: Vec<(String, String)> = form_urlencoded::parse(q.as_bytes()).into_owned().collect();
        let parsed = fhir::search::query::parse(&reg, Some(rt), &params, false).map_err(|e| format!("{e:?}"))?.query;
        println!("== {shape}");
        for l in store.explain(&parsed).await? { println!("{l}"); }
        println!("{:?}", store.search(&parsed).await?.items.iter().map(|r| r.id.clone()).collect::<Vec<_>>());
    }
    Ok(())
}

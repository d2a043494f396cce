//! System records and the audit trail on every backend: compare-and-swap of
//! system records, audit entries numbered without gaps and chained in the
//! commit's own transaction (also under concurrent and failing commits),
//! report searches that answer as the memory store does, and tampering done
//! in SQL, as an attacker with access to the database would, found by
//! `domain::audit::verify`.

use crate::harness::*;
use domain::audit::{
    AuditAction, AuditActor, AuditChain, AuditEntry, AuditOutcome, AuditQuery, AuditRecord, AuditSort, Checkpoint,
    Verdict, verify,
};
use domain::memory::MemoryStore;
use domain::store::{Check, Commit, Store, StoreError, SysWrite};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use store::postgres::{PgOptions, PostgresStore};
use store::sqlite::{SqliteOptions, SqliteStore};

/// A store under test, the key of its chain, and a way into its database.
pub(crate) struct Trail {
    store: Arc<dyn Store>,
    chain: AuditChain,
    db: Db,
}

enum Db {
    Memory(Arc<MemoryStore>),
    Sqlite(PathBuf),
    Postgres(String),
}

pub(crate) async fn on_memory<F, Fut>(test: F)
where
    F: FnOnce(Trail) -> Fut,
    Fut: Future<Output = ()>,
{
    let chain = AuditChain::random();
    let memory = Arc::new(MemoryStore::with_audit_chain(chain.clone()));
    test(Trail { store: memory.clone(), chain, db: Db::Memory(memory) }).await;
}

pub(crate) async fn on_sqlite<F, Fut>(test: F)
where
    F: FnOnce(Trail) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("hearth.db");
    let chain = AuditChain::random();
    let options = SqliteOptions { audit_chain: chain.clone(), ..SqliteOptions::default() };
    let store = SqliteStore::open(&path, options).expect("open sqlite");
    test(Trail { store: Arc::new(store), chain, db: Db::Sqlite(path) }).await;
}

pub(crate) async fn on_postgres<F, Fut>(test: F)
where
    F: FnOnce(Trail) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    in_postgres_schema(|url| async move {
        let chain = AuditChain::random();
        let store = PostgresStore::connect_with(&url, PgOptions { audit_chain: chain.clone() })
            .await
            .expect("connect PostgresStore");
        test(Trail { store: Arc::new(store), chain, db: Db::Postgres(url) }).await;
    })
    .await;
}

// ---------------------------------------------------------------------------
// Fixtures

fn actor(id: &str) -> AuditActor {
    AuditActor { kind: "user".into(), id: id.into(), role: Some("physician".into()), client: None }
}

fn record(seconds: i64, who: &str, event: &str, action: AuditAction, patients: &[&str]) -> AuditRecord {
    let mut record = AuditRecord::new(at(seconds), event, action, actor(who));
    record.patients = patients.iter().map(|p| p.to_string()).collect();
    record
}

fn read_of(who: &str, patient: &str) -> AuditRecord {
    let mut record = record(1, who, "read", AuditAction::Read, &[patient]);
    record.resource_type = Some("Patient".into());
    record.entities = vec![format!("Patient/{patient}")];
    record
}

fn audit_only(records: Vec<AuditRecord>) -> Commit {
    Commit { audit: records, ..Commit::default() }
}

fn sys(kind: &str, key: &str, expected: Option<u64>, json: Option<&str>) -> SysWrite {
    SysWrite { kind: kind.into(), key: key.into(), expected, json: json.map(Arc::from) }
}

/// Every entry, in order.
async fn entries(store: &Arc<dyn Store>) -> Vec<AuditEntry> {
    let mut all = Vec::new();
    loop {
        let batch = store.audit_scan(all.last().map_or(0, |e: &AuditEntry| e.seq), 500).await.expect("audit_scan");
        if batch.is_empty() {
            return all;
        }
        all.extend(batch);
    }
}

async fn verdict(trail: &Trail, checkpoints: &[Checkpoint]) -> Verdict {
    verify(&*trail.store, &trail.chain, checkpoints, |_| {}).await.expect("verify")
}

async fn assert_intact(trail: &Trail, entries: u64) {
    match verdict(trail, &[]).await {
        Verdict::Intact { entries: n, last_hash } => {
            assert_eq!(n, entries, "entries in the trail");
            let head = trail.store.audit_head().await.expect("audit_head");
            assert_eq!(head, (n > 0).then_some((n, last_hash)), "the head is the last entry");
        }
        broken => panic!("the trail should be intact: {broken:?}"),
    }
}

/// The records of entries whose actor is `who`.
async fn records_by(store: &Arc<dyn Store>, who: &str) -> Vec<AuditRecord> {
    let page = store
        .audit_search(&AuditQuery { who: Some(who.into()), count: 100_000, ..AuditQuery::default() })
        .await
        .expect("audit_search");
    page.items.iter().map(|e| e.parse().expect("stored record parses")).collect()
}

// ---------------------------------------------------------------------------
// The chain

pub(crate) async fn commits_chain_their_records(trail: Trail) {
    let store = &trail.store;
    assert_eq!(store.audit_head().await.expect("audit_head"), None, "an empty trail has no head");
    assert_intact(&trail, 0).await;
    let mut create = record(1, "alice", "create", AuditAction::Create, &["p1"]);
    create.resource_type = Some("Patient".into());
    create.entities = vec!["Patient/p1/_history/1".into()];
    create.from = Some("192.0.2.7".into());
    store
        .commit(Commit {
            writes: vec![write("Patient", "p1", 1, at(1), vec![])],
            audit: vec![create.clone()],
            ..Commit::default()
        })
        .await
        .expect("create with its audit record");
    let mut search = record(2, "bob", "search", AuditAction::Execute, &["p1", "p2"]);
    search.query = Some("name=Ñúñez&_count=10".into());
    search.detail = Some("a \"quoted\" reason".into());
    search.emergency = true;
    search.outcome = AuditOutcome::Denied;
    let login = record(3, "carol", "login", AuditAction::Execute, &[]);
    store.commit(audit_only(vec![search.clone(), login.clone()])).await.expect("two records in one commit");
    store
        .commit(Commit {
            writes: vec![write("Patient", "p1", 2, at(4), vec![]), write("Observation", "o1", 1, at(4), vec![])],
            sys: vec![sys("session", "s1", None, Some(r#"{"user":"alice"}"#))],
            audit: vec![read_of("alice", "p1")],
            ..Commit::default()
        })
        .await
        .expect("writes, a system record and audit");

    let stored = entries(store).await;
    let expected = [create, search, login, read_of("alice", "p1")];
    assert_eq!(stored.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    let mut previous = domain::audit::GENESIS.to_string();
    for (entry, record) in stored.iter().zip(&expected) {
        assert_eq!(entry.record, record.to_canonical_json(), "entry {} holds the canonical JSON", entry.seq);
        assert_eq!(&entry.parse().expect("parses"), record);
        assert_eq!(entry.hash, trail.chain.link(&previous, entry.seq, &entry.record), "entry {} links", entry.seq);
        previous = entry.hash.clone();
    }
    assert_intact(&trail, 4).await;
    // Another key does not verify it.
    let other = Trail { store: Arc::clone(&trail.store), chain: AuditChain::random(), db: Db::Memory(Arc::default()) };
    assert!(matches!(verdict(&other, &[]).await, Verdict::Broken { seq: 1, .. }));
    // audit_scan pages by seq.
    let page = store.audit_scan(1, 2).await.expect("audit_scan");
    assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2, 3]);
    assert!(store.audit_scan(4, 10).await.expect("audit_scan").is_empty());
}

pub(crate) async fn concurrent_audit_only_commits_leave_no_gap(trail: Trail) {
    const TASKS: usize = 8;
    const COMMITS: usize = 200;
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let store = Arc::clone(&trail.store);
            tokio::spawn(async move {
                for n in 0..COMMITS {
                    let who = format!("user{task}");
                    let mut records = vec![read_of(&who, &format!("p{n}"))];
                    if n % 10 == 0 {
                        // Some commits carry several records.
                        records.push(record(2, &who, "search", AuditAction::Execute, &["a", "b", "c"]));
                    }
                    store.commit(audit_only(records)).await.expect("audit-only commit");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    let total = (TASKS * (COMMITS + COMMITS / 10)) as u64;
    let stored = entries(&trail.store).await;
    assert_eq!(stored.iter().map(|e| e.seq).collect::<Vec<_>>(), (1..=total).collect::<Vec<_>>());
    assert_intact(&trail, total).await;
    // Each task's records are all there, in the order it committed them.
    for task in 0..TASKS {
        let who = format!("user{task}");
        let patients: Vec<String> = records_by(&trail.store, &who)
            .await
            .iter()
            .filter(|r| r.event == "read")
            .map(|r| r.patients[0].clone())
            .collect();
        assert_eq!(patients, (0..COMMITS).map(|n| format!("p{n}")).collect::<Vec<_>>(), "{who}");
    }
}

/// Commits that fail a check, among concurrent ones that succeed (on SQLite
/// they share group-committed transactions), leave neither writes nor
/// audit entries, and the chain stays whole.
pub(crate) async fn failed_commits_leave_no_entries(trail: Trail) {
    let store = &trail.store;
    create(store, "Patient", "existing", at(0), vec![]).await;
    store
        .commit(Commit { sys: vec![sys("user", "alice", None, Some("{}"))], ..Commit::default() })
        .await
        .expect("a system record");
    let doomed = |n: usize| -> Commit {
        let audit = vec![read_of("doomed", &format!("d{n}")), record(1, "doomed", "update", AuditAction::Update, &[])];
        match n % 4 {
            // A stale version check.
            0 => Commit {
                checks: vec![Check::Version {
                    resource_type: "Patient".into(),
                    id: "existing".into(),
                    expected: Some(7),
                }],
                writes: vec![write("Patient", &format!("w{n}"), 1, at(1), vec![])],
                audit,
                ..Commit::default()
            },
            // A good write, then one that is not the next version.
            1 => Commit {
                writes: vec![
                    write("Patient", &format!("w{n}"), 1, at(1), vec![]),
                    write("Patient", "existing", 5, at(1), vec![]),
                ],
                audit,
                ..Commit::default()
            },
            // A system record that already exists.
            2 => Commit {
                writes: vec![write("Patient", &format!("w{n}"), 1, at(1), vec![])],
                sys: vec![sys("session", &format!("s{n}"), None, Some("{}")), sys("user", "alice", None, Some("{}"))],
                audit,
                ..Commit::default()
            },
            // A system record at another version.
            _ => Commit { sys: vec![sys("user", "alice", Some(3), Some("{}"))], audit, ..Commit::default() },
        }
    };
    for round in 0..5 {
        let tasks: Vec<_> = (0..40)
            .map(|n| {
                let store = Arc::clone(store);
                let commit = if n % 5 == 2 {
                    doomed(n)
                } else if n % 2 == 0 {
                    Commit {
                        writes: vec![write("Observation", &format!("r{round}-{n}"), 1, at(2), vec![])],
                        audit: vec![record(2, "fine", "create", AuditAction::Create, &["p"])],
                        ..Commit::default()
                    }
                } else {
                    audit_only(vec![read_of("fine", &format!("p{n}"))])
                };
                let fails = n % 5 == 2;
                tokio::spawn(async move { (fails, store.commit(commit).await) })
            })
            .collect();
        for task in tasks {
            let (fails, result) = task.await.expect("task");
            if fails {
                assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");
            } else {
                result.expect("the other commits land");
            }
        }
    }
    assert!(records_by(store, "doomed").await.is_empty(), "no entry of a failed commit");
    assert_eq!(records_by(store, "fine").await.len(), 5 * 32);
    for n in (2..40).step_by(5) {
        assert_eq!(store.read("Patient", &format!("w{n}")).await.expect("read"), None, "no write of a failed commit");
        assert_eq!(store.sys_get("session", &format!("s{n}")).await.expect("sys_get"), None);
    }
    assert_eq!(store.sys_get("user", "alice").await.expect("sys_get").map(|r| r.version), Some(1));
    assert_intact(&trail, 5 * 32).await;
}

// ---------------------------------------------------------------------------
// System records

pub(crate) async fn system_records_compare_and_swap(trail: Trail) {
    let store = &trail.store;
    assert_eq!(store.sys_get("user", "alice").await.expect("sys_get"), None);
    let put = |writes: Vec<SysWrite>| Commit { sys: writes, ..Commit::default() };
    store.commit(put(vec![sys("user", "alice", None, Some(r#"{"v":1}"#))])).await.expect("create");
    let alice = store.sys_get("user", "alice").await.expect("sys_get").expect("stored");
    assert_eq!((alice.key.as_str(), alice.version, &*alice.json), ("alice", 1, r#"{"v":1}"#));

    let again = store.commit(put(vec![sys("user", "alice", None, Some("{}"))])).await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "create of an existing record: {again:?}");
    store.commit(put(vec![sys("user", "alice", Some(1), Some(r#"{"v":2}"#))])).await.expect("update at 1");
    let stale = store.commit(put(vec![sys("user", "alice", Some(1), Some(r#"{"v":3}"#))])).await;
    assert!(matches!(stale, Err(StoreError::Conflict(_))), "stale update: {stale:?}");
    let ghost = store.commit(put(vec![sys("user", "ghost", Some(1), Some("{}"))])).await;
    assert!(matches!(ghost, Err(StoreError::Conflict(_))), "update of a missing record: {ghost:?}");
    assert_eq!(store.sys_get("user", "ghost").await.expect("sys_get"), None);
    let alice = store.sys_get("user", "alice").await.expect("sys_get").expect("stored");
    assert_eq!((alice.version, &*alice.json), (2, r#"{"v":2}"#));

    // Several writes of one record in a commit: each expects what the one before leaves.
    store
        .commit(put(vec![
            sys("user", "bob", None, Some(r#"{"v":1}"#)),
            sys("user", "bob", Some(1), Some(r#"{"v":2}"#)),
            sys("client", "app", None, Some(r#"{"c":1}"#)),
            sys("user", "carol", None, Some(r#"{"v":1}"#)),
        ]))
        .await
        .expect("several writes");
    assert_eq!(store.sys_get("user", "bob").await.expect("sys_get").map(|r| r.version), Some(2));
    // One failing compare-and-swap fails the whole commit, writes and audit included.
    let mixed = store
        .commit(Commit {
            writes: vec![write("Patient", "x", 1, at(1), vec![])],
            sys: vec![sys("user", "dave", None, Some("{}")), sys("user", "carol", Some(5), None)],
            audit: vec![read_of("mixed", "x")],
            ..Commit::default()
        })
        .await;
    assert!(matches!(mixed, Err(StoreError::Conflict(_))), "{mixed:?}");
    assert_eq!(store.read("Patient", "x").await.expect("read"), None);
    assert_eq!(store.sys_get("user", "dave").await.expect("sys_get"), None);
    assert!(records_by(store, "mixed").await.is_empty());

    let listed =
        |records: Vec<domain::store::SysRecord>| records.into_iter().map(|r| (r.key, r.version)).collect::<Vec<_>>();
    assert_eq!(
        listed(store.sys_list("user").await.expect("sys_list")),
        vec![("alice".to_string(), 2), ("bob".to_string(), 2), ("carol".to_string(), 1)]
    );
    assert_eq!(listed(store.sys_list("client").await.expect("sys_list")), vec![("app".to_string(), 1)]);
    assert!(store.sys_list("token").await.expect("sys_list").is_empty());

    // Delete, then create anew at version 1.
    let stale_delete = store.commit(put(vec![sys("user", "carol", Some(2), None)])).await;
    assert!(matches!(stale_delete, Err(StoreError::Conflict(_))), "{stale_delete:?}");
    store.commit(put(vec![sys("user", "carol", Some(1), None)])).await.expect("delete");
    assert_eq!(store.sys_get("user", "carol").await.expect("sys_get"), None);
    assert_eq!(listed(store.sys_list("user").await.expect("sys_list")).len(), 2);
    store
        .commit(put(vec![sys("user", "bob", Some(2), None), sys("user", "bob", None, Some(r#"{"new":true}"#))]))
        .await
        .expect("delete and create in one commit");
    let bob = store.sys_get("user", "bob").await.expect("sys_get").expect("bob");
    assert_eq!((bob.version, &*bob.json), (1, r#"{"new":true}"#));
    store.commit(put(vec![sys("user", "carol", None, Some("{}"))])).await.expect("create after delete");
    assert_eq!(store.sys_get("user", "carol").await.expect("sys_get").map(|r| r.version), Some(1));
}

pub(crate) async fn racing_system_record_creates_one_wins(trail: Trail) {
    for round in 0..5 {
        let key = format!("session{round}");
        let tasks: Vec<_> = (0..8)
            .map(|n| {
                let store = Arc::clone(&trail.store);
                let key = key.clone();
                tokio::spawn(async move {
                    store
                        .commit(Commit {
                            sys: vec![sys("session", &key, None, Some(&format!(r#"{{"by":{n}}}"#)))],
                            audit: vec![record(1, &format!("racer{n}"), "login", AuditAction::Execute, &[])],
                            ..Commit::default()
                        })
                        .await
                })
            })
            .collect();
        let mut won = 0;
        for task in tasks {
            match task.await.expect("task") {
                Ok(()) => won += 1,
                Err(StoreError::Conflict(_)) => {}
                Err(other) => panic!("{other:?}"),
            }
        }
        assert_eq!(won, 1, "exactly one create of {key} wins");
        assert_eq!(trail.store.sys_get("session", &key).await.expect("sys_get").map(|r| r.version), Some(1));
    }
    assert_intact(&trail, 5).await;
}

// ---------------------------------------------------------------------------
// Reports

/// A varied trail: several actors, none to three patients (repeated ones
/// too), every action and outcome, types or none, and times that repeat
/// and do not follow the entry order.
fn report_records() -> Vec<AuditRecord> {
    let whos = ["alice", "bob", "Bob", "carol", "émile"];
    let patients: [&[&str]; 8] =
        [&[], &["p1"], &["p2"], &["p1", "p2"], &["p2", "p1", "p3"], &["p3", "p3"], &["p10"], &["p2", "p2", "p4"]];
    let events = [
        ("read", AuditAction::Read),
        ("search", AuditAction::Execute),
        ("create", AuditAction::Create),
        ("update", AuditAction::Update),
        ("delete", AuditAction::Delete),
        ("login", AuditAction::Execute),
    ];
    let types = [None, Some("Patient"), Some("Observation"), Some("Encounter")];
    let outcomes = [AuditOutcome::Success, AuditOutcome::Refused, AuditOutcome::Denied, AuditOutcome::Failed];
    (0..90usize)
        .map(|i| {
            let (event, action) = events[(i * 5 + i / 7) % events.len()];
            let mut record = record(
                ((i * 7) % 30) as i64,
                whos[(i * 3 + i / 4) % whos.len()],
                event,
                action,
                patients[(i * 5 + i / 4) % patients.len()],
            );
            record.resource_type = types[(i / 2 + i) % types.len()].map(str::to_string);
            record.outcome = if i % 3 == 0 { AuditOutcome::Success } else { outcomes[(i / 3) % outcomes.len()] };
            record
        })
        .collect()
}

fn report_queries() -> Vec<AuditQuery> {
    let all = AuditQuery { count: 1000, ..AuditQuery::default() };
    let mut queries = vec![
        all.clone(),
        AuditQuery { from: Some(at(10)), ..all.clone() },
        AuditQuery { to: Some(at(10)), ..all.clone() },
        AuditQuery { from: Some(at(7)), to: Some(at(14)), ..all.clone() },
        AuditQuery { from: Some(at(14)), to: Some(at(14)), ..all.clone() },
        AuditQuery { who: Some("bob".into()), ..all.clone() },
        AuditQuery { who: Some("Bob".into()), ..all.clone() },
        AuditQuery { who: Some("émile".into()), ..all.clone() },
        AuditQuery { who: Some("nobody".into()), ..all.clone() },
        AuditQuery { patient: Some("p1".into()), ..all.clone() },
        AuditQuery { patient: Some("p2".into()), ..all.clone() },
        // Only ever a second or third patient.
        AuditQuery { patient: Some("p3".into()), ..all.clone() },
        AuditQuery { patient: Some("p4".into()), ..all.clone() },
        AuditQuery { patient: Some("p10".into()), ..all.clone() },
        AuditQuery { patient: Some("p".into()), ..all.clone() },
        AuditQuery { action: Some(AuditAction::Execute), ..all.clone() },
        AuditQuery { action: Some(AuditAction::Delete), ..all.clone() },
        AuditQuery { event: Some("login".into()), ..all.clone() },
        AuditQuery { resource_type: Some("Patient".into()), ..all.clone() },
        AuditQuery { resource_type: Some("Observation".into()), ..all.clone() },
        AuditQuery { outcome: Some(AuditOutcome::Denied), ..all.clone() },
        AuditQuery { outcome: Some(AuditOutcome::Success), ..all.clone() },
        AuditQuery { who: Some("alice".into()), patient: Some("p2".into()), ..all.clone() },
        AuditQuery { patient: Some("p3".into()), from: Some(at(5)), to: Some(at(25)), ..all.clone() },
        AuditQuery {
            resource_type: Some("Patient".into()),
            outcome: Some(AuditOutcome::Success),
            action: Some(AuditAction::Read),
            ..all.clone()
        },
    ];
    let fields = [
        AuditSort::Seq,
        AuditSort::At,
        AuditSort::Who,
        AuditSort::Patient,
        AuditSort::Action,
        AuditSort::Event,
        AuditSort::ResourceType,
        AuditSort::Outcome,
    ];
    for field in fields {
        for descending in [false, true] {
            queries.push(AuditQuery { sort: vec![(field, descending)], ..all.clone() });
            queries.push(AuditQuery { sort: vec![(field, descending)], patient: Some("p2".into()), ..all.clone() });
        }
    }
    queries.push(AuditQuery { sort: vec![(AuditSort::Who, false), (AuditSort::At, true)], ..all.clone() });
    queries.push(AuditQuery { sort: vec![(AuditSort::Outcome, true), (AuditSort::Patient, false)], ..all.clone() });
    queries.push(AuditQuery { sort: vec![(AuditSort::ResourceType, true), (AuditSort::Seq, true)], ..all.clone() });
    for (count, offset) in [(7, 0), (7, 7), (7, 84), (7, 90), (0, 0), (5, 1000)] {
        queries.push(AuditQuery { count, offset, sort: vec![(AuditSort::At, true)], ..all.clone() });
        queries.push(AuditQuery { count, offset, who: Some("bob".into()), ..all.clone() });
    }
    queries
}

pub(crate) async fn reports_answer_as_the_memory_store(trail: Trail) {
    let reference: Arc<dyn Store> = Arc::new(MemoryStore::with_audit_chain(trail.chain.clone()));
    let records = report_records();
    for chunk in records.chunks(4) {
        for store in [&trail.store, &reference] {
            store.commit(audit_only(chunk.to_vec())).await.expect("audit");
        }
    }
    for query in report_queries() {
        let expected = reference.audit_search(&query).await.expect("reference search");
        let found = trail.store.audit_search(&query).await.expect("audit_search");
        assert_eq!(
            found.items.iter().map(|e| e.seq).collect::<Vec<_>>(),
            expected.items.iter().map(|e| e.seq).collect::<Vec<_>>(),
            "entries of {query:?}"
        );
        assert_eq!(found, expected, "{query:?}");
    }
    // The fixtures exercise what they are meant to.
    let count = |query: AuditQuery| {
        let reference = Arc::clone(&reference);
        async move { reference.audit_search(&query).await.expect("search").total.unwrap_or(0) }
    };
    let all = AuditQuery { count: 1000, ..AuditQuery::default() };
    assert!(count(AuditQuery { patient: Some("p3".into()), ..all.clone() }).await > 5);
    assert!(count(AuditQuery { patient: Some("p4".into()), ..all.clone() }).await > 5);
    assert!(count(AuditQuery { resource_type: Some("Patient".into()), ..all.clone() }).await > 5);
    assert!(count(AuditQuery { outcome: Some(AuditOutcome::Failed), ..all.clone() }).await > 5);
}

// ---------------------------------------------------------------------------
// Tampering

/// What an attacker with write access to the database does.
enum Attack {
    /// Replace the record of an entry.
    Change {
        seq: u64,
        record: String,
    },
    Delete {
        seq: u64,
    },
    /// Exchange the places of two entries.
    Swap {
        a: u64,
        b: u64,
    },
    /// Remove every entry after `keep`.
    Truncate {
        keep: u64,
    },
}

/// Tries to change the trail through SQL with its append-only triggers in
/// place (which must refuse), then drops them and does it.
async fn tamper(db: &Db, attack: Attack) {
    match db {
        Db::Memory(memory) => memory.tamper_audit(|trail| match attack {
            Attack::Change { seq, record } => trail[seq as usize - 1].record = record,
            Attack::Delete { seq } => {
                trail.remove(seq as usize - 1);
            }
            Attack::Swap { a, b } => {
                let (ea, eb) = (trail[a as usize - 1].clone(), trail[b as usize - 1].clone());
                trail[a as usize - 1] = AuditEntry { seq: a, ..eb };
                trail[b as usize - 1] = AuditEntry { seq: b, ..ea };
            }
            Attack::Truncate { keep } => trail.truncate(keep as usize),
        }),
        Db::Sqlite(path) => {
            let conn = rusqlite::Connection::open(path).expect("open the database file");
            conn.busy_timeout(std::time::Duration::from_secs(5)).expect("busy timeout");
            let refused = conn.execute("DELETE FROM audit_entry WHERE seq = 1", []);
            assert!(refused.is_err(), "the trigger refuses a delete");
            let refused = conn.execute("UPDATE audit_entry SET hash = 'x' WHERE seq = 1", []);
            assert!(refused.is_err(), "the trigger refuses an update");
            conn.execute_batch(
                "DROP TRIGGER audit_entry_no_update; DROP TRIGGER audit_entry_no_delete; \
                 DROP TRIGGER audit_patient_no_update; DROP TRIGGER audit_patient_no_delete;",
            )
            .expect("drop the triggers");
            let done = match attack {
                Attack::Change { seq, record } => {
                    conn.execute("UPDATE audit_entry SET record = ?1 WHERE seq = ?2", rusqlite::params![record, seq])
                }
                Attack::Delete { seq } => conn.execute("DELETE FROM audit_entry WHERE seq = ?1", [seq]),
                Attack::Swap { a, b } => conn
                    .execute_batch(&format!(
                        "BEGIN; UPDATE audit_entry SET seq = -1 WHERE seq = {a}; \
                     UPDATE audit_entry SET seq = {a} WHERE seq = {b}; \
                     UPDATE audit_entry SET seq = {b} WHERE seq = -1; COMMIT;"
                    ))
                    .map(|()| 1),
                Attack::Truncate { keep } => conn.execute("DELETE FROM audit_entry WHERE seq > ?1", [keep]),
            };
            assert!(done.expect("the attack") > 0);
        }
        Db::Postgres(url) => {
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("connect");
            tokio::spawn(connection);
            let refused = client.batch_execute("DELETE FROM audit_entry WHERE seq = 1").await;
            assert!(refused.is_err(), "the trigger refuses a delete");
            let refused = client.batch_execute("UPDATE audit_entry SET hash = 'x' WHERE seq = 1").await;
            assert!(refused.is_err(), "the trigger refuses an update");
            let refused = client.batch_execute("TRUNCATE audit_entry").await;
            assert!(refused.is_err(), "the trigger refuses a truncate");
            client
                .batch_execute(
                    "DROP TRIGGER audit_entry_append_only ON audit_entry; \
                     DROP TRIGGER audit_entry_no_truncate ON audit_entry",
                )
                .await
                .expect("drop the triggers");
            let done = match attack {
                Attack::Change { seq, record } => {
                    client.execute("UPDATE audit_entry SET record = $1 WHERE seq = $2", &[&record, &(seq as i64)]).await
                }
                Attack::Delete { seq } => {
                    client.execute("DELETE FROM audit_entry WHERE seq = $1", &[&(seq as i64)]).await
                }
                Attack::Swap { a: x, b: y } => client
                    .batch_execute(&format!(
                        "BEGIN; UPDATE audit_entry SET seq = -1 WHERE seq = {x}; \
                         UPDATE audit_entry SET seq = {x} WHERE seq = {y}; \
                         UPDATE audit_entry SET seq = {y} WHERE seq = -1; COMMIT;"
                    ))
                    .await
                    .map(|()| 1),
                Attack::Truncate { keep } => {
                    client.execute("DELETE FROM audit_entry WHERE seq > $1", &[&(keep as i64)]).await
                }
            };
            assert!(done.expect("the attack") > 0);
        }
    }
}

/// A trail of ten entries.
async fn ten_entries(trail: &Trail) -> Vec<AuditEntry> {
    for n in 0..10 {
        trail.store.commit(audit_only(vec![read_of("alice", &format!("p{n}"))])).await.expect("audit");
    }
    assert_intact(trail, 10).await;
    entries(&trail.store).await
}

fn broken_at(verdict: Verdict, seq: u64, words: &str) {
    match verdict {
        Verdict::Broken { seq: at, reason } => {
            assert_eq!(at, seq, "the broken entry ({reason})");
            assert!(reason.contains(words), "{reason:?} should say {words:?}");
        }
        intact => panic!("tampering went unnoticed: {intact:?}"),
    }
}

pub(crate) async fn a_changed_record_is_found(trail: Trail) {
    let stored = ten_entries(&trail).await;
    let mut forged = stored[3].parse().expect("parses");
    forged.who.id = "mallory".into();
    tamper(&trail.db, Attack::Change { seq: 4, record: forged.to_canonical_json() }).await;
    assert_eq!(trail.store.audit_scan(3, 1).await.expect("scan")[0].record, forged.to_canonical_json());
    broken_at(verdict(&trail, &[]).await, 4, "digest");
}

pub(crate) async fn a_deleted_entry_is_found(trail: Trail) {
    ten_entries(&trail).await;
    tamper(&trail.db, Attack::Delete { seq: 6 }).await;
    broken_at(verdict(&trail, &[]).await, 6, "missing");
}

pub(crate) async fn swapped_entries_are_found(trail: Trail) {
    ten_entries(&trail).await;
    tamper(&trail.db, Attack::Swap { a: 3, b: 7 }).await;
    broken_at(verdict(&trail, &[]).await, 3, "digest");
}

pub(crate) async fn a_truncated_tail_is_found_with_a_checkpoint(trail: Trail) {
    let stored = ten_entries(&trail).await;
    let last = stored.last().expect("ten entries");
    let checkpoint = Checkpoint { seq: last.seq, hash: last.hash.clone(), at: at(100) };
    // A sealed line round-trips, and a line sealed with another key is refused.
    let line = checkpoint.to_line(&trail.chain);
    assert_eq!(Checkpoint::from_line(&line, &trail.chain), Ok(checkpoint.clone()));
    assert!(Checkpoint::from_line(&line, &AuditChain::random()).is_err());
    assert!(matches!(verdict(&trail, std::slice::from_ref(&checkpoint)).await, Verdict::Intact { entries: 10, .. }));

    tamper(&trail.db, Attack::Truncate { keep: 7 }).await;
    // Without the checkpoint the shorter chain is consistent...
    assert!(matches!(verdict(&trail, &[]).await, Verdict::Intact { entries: 7, .. }));
    // ...with it, the missing tail is found.
    broken_at(verdict(&trail, &[checkpoint]).await, 8, "truncated");
}

// ---------------------------------------------------------------------------
// Backend specifics

/// The SQLite writer keeps the head in memory: after a reopen it continues
/// from the stored one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_reopen_continues_the_chain() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("hearth.db");
    let chain = AuditChain::random();
    let open = || {
        let options = SqliteOptions { audit_chain: chain.clone(), ..SqliteOptions::default() };
        Arc::new(SqliteStore::open(&path, options).expect("open")) as Arc<dyn Store>
    };
    for round in 0..3 {
        let store = open();
        for n in 0..5 {
            store.commit(audit_only(vec![read_of(&format!("round{round}"), &format!("p{n}"))])).await.expect("audit");
        }
    }
    let trail = Trail { store: open(), chain: chain.clone(), db: Db::Sqlite(path.clone()) };
    assert_intact(&trail, 15).await;
}

/// Several processes sharing one database append to one chain: the head
/// comes from the database, not from a process's memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_processes_sharing_a_database_append_to_one_chain() {
    in_postgres_schema(|url| async move {
        let chain = AuditChain::random();
        let mut stores: Vec<Arc<dyn Store>> = Vec::new();
        for _ in 0..2 {
            let options = PgOptions { audit_chain: chain.clone() };
            stores.push(Arc::new(PostgresStore::connect_with(&url, options).await.expect("connect")));
        }
        let tasks: Vec<_> = (0..6)
            .map(|task| {
                let store = Arc::clone(&stores[task % 2]);
                tokio::spawn(async move {
                    for n in 0..50 {
                        let commit = if n % 5 == 0 {
                            Commit {
                                writes: vec![write("Patient", &format!("t{task}-{n}"), 1, at(1), vec![])],
                                audit: vec![record(1, "writer", "create", AuditAction::Create, &["x"])],
                                ..Commit::default()
                            }
                        } else {
                            audit_only(vec![read_of(&format!("user{task}"), &format!("p{n}"))])
                        };
                        store.commit(commit).await.expect("commit");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("task");
        }
        let trail = Trail { store: Arc::clone(&stores[0]), chain, db: Db::Postgres(url) };
        assert_intact(&trail, 300).await;
    })
    .await;
}

/// When an append fails after others of its group were written, the group
/// is rolled back and the SQLite writer's head goes back with it: the
/// entries that follow continue from the last committed one, without a gap.
/// (A trigger planted through SQL makes the append of entry 10 fail, after
/// others of its group.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_failed_append_rolls_the_head_back() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("hearth.db");
    let chain = AuditChain::random();
    let options = SqliteOptions { audit_chain: chain.clone(), ..SqliteOptions::default() };
    let trail = Trail {
        store: Arc::new(SqliteStore::open(&path, options).expect("open")),
        chain,
        db: Db::Sqlite(path.clone()),
    };
    for n in 0..3 {
        trail.store.commit(audit_only(vec![read_of("before", &format!("p{n}"))])).await.expect("audit");
    }
    let conn = rusqlite::Connection::open(&path).expect("open the database file");
    conn.busy_timeout(std::time::Duration::from_secs(5)).expect("busy timeout");
    conn.execute_batch(
        "CREATE TRIGGER planted_failure BEFORE INSERT ON audit_entry WHEN NEW.seq = 10 \
         BEGIN SELECT RAISE(ABORT, 'planted failure'); END;",
    )
    .expect("plant a failure");

    let mut landed = 0;
    for round in 0..3 {
        let tasks: Vec<_> = (0..40)
            .map(|n| {
                let store = Arc::clone(&trail.store);
                let commit = if n % 3 == 0 {
                    Commit {
                        writes: vec![write("Patient", &format!("r{round}-{n}"), 1, at(1), vec![])],
                        audit: vec![read_of("during", "x")],
                        ..Commit::default()
                    }
                } else {
                    audit_only(vec![read_of("during", "x")])
                };
                tokio::spawn(async move { store.commit(commit).await })
            })
            .collect();
        for task in tasks {
            if task.await.expect("task").is_ok() {
                landed += 1;
            }
        }
    }
    assert!(landed < 7, "entries 4 to 9 are free before the failing one ({landed} landed)");

    conn.execute_batch("DROP TRIGGER planted_failure;").expect("remove the planted failure");
    for n in 0..10 {
        trail.store.commit(audit_only(vec![read_of("after", &format!("p{n}"))])).await.expect("audit after");
    }
    assert_intact(&trail, 3 + landed + 10).await;
    assert_eq!(records_by(&trail.store, "during").await.len() as u64, landed);
}

/// The report filters a clinic runs over millions of entries.
fn report_shapes() -> Vec<AuditQuery> {
    let page = AuditQuery { count: 50, ..AuditQuery::default() };
    vec![
        AuditQuery { patient: Some("p1".into()), ..page.clone() },
        AuditQuery { patient: Some("p1".into()), from: Some(at(1)), sort: vec![(AuditSort::At, true)], ..page.clone() },
        AuditQuery { who: Some("alice".into()), ..page.clone() },
        AuditQuery { who: Some("alice".into()), from: Some(at(1)), to: Some(at(2)), ..page.clone() },
        AuditQuery { resource_type: Some("Observation".into()), ..page.clone() },
        AuditQuery { from: Some(at(1)), to: Some(at(2)), ..page.clone() },
        AuditQuery { from: Some(at(1)), sort: vec![(AuditSort::At, true)], ..page.clone() },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_reports_use_indexes() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = SqliteStore::open(&dir.path().join("hearth.db"), SqliteOptions::default()).expect("open");
    for query in report_shapes() {
        let plan = store.explain_audit(&query).await.expect("explain");
        // `audit_index_state` holds one row (migration 0007).
        let scans: Vec<&String> = plan
            .iter()
            .filter(|l| {
                let l = l.trim_start();
                l.starts_with("SCAN ") && !l.contains("SUBQUERY") && l != "SCAN audit_index_state"
            })
            .collect();
        assert!(scans.is_empty(), "{query:?} reads a whole table:\n{}", plan.join("\n"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_reports_use_indexes() {
    in_postgres_schema(|url| async move {
        let store = PostgresStore::connect(&url).await.expect("connect");
        for query in report_shapes() {
            let plan = store.explain_audit(&query).await.expect("explain");
            assert!(
                !plan.iter().any(|l| l.contains("Seq Scan")),
                "{query:?} reads a whole table:\n{}",
                plan.join("\n")
            );
        }
    })
    .await;
}

/// Reads' entries go through the Service's batch (service/read_audit.rs):
/// they reach the trail within the window without anyone flushing, in one
/// chain with the writes'; when the trail refuses them (a trigger planted
/// through SQL), the read that queued them was answered but every later read
/// is refused, and once the trail accepts entries again the queued ones land
/// (none lost) and reads are served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_read_entries_are_batched_and_fail_closed() {
    use domain::access::Access;
    use domain::error::ErrorKind;
    use domain::service::{ServiceConfig, SystemClock, UuidIds};
    use std::time::Duration;

    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("hearth.db");
    let chain = AuditChain::random();
    let options = SqliteOptions { audit_chain: chain.clone(), ..SqliteOptions::default() };
    let trail = Trail { store: Arc::new(SqliteStore::open(&path, options).expect("open")), chain, db: Db::Sqlite(path.clone()) };
    let window = Duration::from_millis(40);
    let config = ServiceConfig { read_audit_window: window, ..ServiceConfig::default() };
    let service = domain::Service::with(Arc::clone(&trail.store), Arc::new(SystemClock), Arc::new(UuidIds), config);
    let access = Access::system("reader");
    let body = serde_json::json!({"resourceType": "Patient", "id": "p1", "name": [{"family": "Batch"}]});
    service.update(&access, "Patient", "p1", body, None).await.expect("create p1");
    let reads_in_trail = |trail_records: Vec<AuditRecord>| trail_records.iter().filter(|r| r.event == "read").count();

    for _ in 0..25 {
        service.read(&access, "Patient", "p1").await.expect("read");
    }
    // No flush: the batch lands within the window.
    let started = std::time::Instant::now();
    while reads_in_trail(records_by(&trail.store, "reader").await) < 25 {
        assert!(started.elapsed() < Duration::from_secs(3), "the read entries never reached the trail");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_intact(&trail, 26).await;

    let conn = rusqlite::Connection::open(&path).expect("open the database file");
    conn.busy_timeout(Duration::from_secs(5)).expect("busy timeout");
    conn.execute_batch("CREATE TRIGGER planted_failure BEFORE INSERT ON audit_entry BEGIN SELECT RAISE(ABORT, 'planted failure'); END;")
        .expect("plant a failure");
    service.read(&access, "Patient", "p1").await.expect("answered; its entry waits in the queue");
    let refused = service.flush_audit().await.expect_err("the batch cannot be written");
    assert_eq!(refused.kind, ErrorKind::Unavailable);
    let refused = service.read(&access, "Patient", "p1").await.expect_err("reads are refused while the trail fails");
    assert_eq!(refused.kind, ErrorKind::Unavailable);

    conn.execute_batch("DROP TRIGGER planted_failure;").expect("remove the planted failure");
    // The retry (every window) lands the queued entry; reads are served again.
    let started = std::time::Instant::now();
    while service.read(&access, "Patient", "p1").await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(3), "reads stayed refused after the trail recovered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    service.flush_audit().await.expect("flush");
    assert_eq!(reads_in_trail(records_by(&trail.store, "reader").await), 27, "25 + the queued one + the last one");
    assert_intact(&trail, 28).await;
}

/// On SQLite entries reach the patient index in bulk (migration 0007): a
/// search by patient answers from the index for the older entries and by
/// number for the newer ones, the same as the memory store, across the
/// boundary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_patient_searches_span_the_bulk_index_and_the_newest_entries() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("hearth.db");
    let chain = AuditChain::random();
    let options = SqliteOptions { audit_chain: chain.clone(), ..SqliteOptions::default() };
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path, options).expect("open"));
    let reference: Arc<dyn Store> = Arc::new(MemoryStore::with_audit_chain(chain));
    let mut n: i64 = 0;
    for _ in 0..53 {
        let batch: Vec<AuditRecord> = (0..100)
            .map(|_| {
                n += 1;
                let second = format!("p{}", (n + 3) % 7);
                if n % 10 == 0 { record(n, "alice", "search", AuditAction::Read, &[&format!("p{}", n % 7), &second]) } else { read_of("alice", &format!("p{}", n % 7)) }
            })
            .collect();
        for s in [&store, &reference] {
            s.commit(audit_only(batch.clone())).await.expect("audit");
        }
    }
    let conn = rusqlite::Connection::open(&path).expect("open the database file");
    let through: i64 = conn.query_row("SELECT through FROM audit_index_state", [], |r| r.get(0)).expect("through");
    assert!((4096..5300).contains(&through), "indexed through {through}: both parts are exercised");
    for patient in ["p0", "p3", "p6"] {
        for sort in [vec![], vec![(AuditSort::Seq, true)]] {
            let query = AuditQuery { patient: Some(patient.into()), sort, count: 10_000, ..AuditQuery::default() };
            let found = store.audit_search(&query).await.expect("search");
            let expected = reference.audit_search(&query).await.expect("reference");
            assert!(found.items.len() > 700, "{patient}: {} entries", found.items.len());
            assert_eq!(found, expected, "{query:?}");
        }
    }
    let tampered = conn.execute("DELETE FROM audit_patient_index WHERE patient = 'p3'", []);
    assert!(tampered.is_err(), "the patient index is append-only");
    let backwards = conn.execute("UPDATE audit_index_state SET through = 1", []);
    assert!(backwards.is_err(), "the index boundary only moves forward");
}

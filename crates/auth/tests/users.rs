//! Users, sign-in, TOTP, break-the-glass and web sessions, against the
//! in-memory store and a real SQLite file, with an injected clock; every
//! event is checked in the audit trail.

use auth::roles::{RoleSettings, Roles};
use auth::sessions::{SessionError, SessionSettings, Sessions};
use auth::users::{AdminError, NewUser, SignInError, User, UserSettings, Users};
use domain::access::Perms;
use domain::audit::{AuditAction, AuditActor, AuditOutcome, AuditRecord};
use domain::service::Clock;
use domain::store::Store;
use fhir::instant::Instant;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

const MINUTE: i64 = 60_000_000;
const PASSWORD: &str = "Tulip-orbit-Quarry7";

/// A clock the test moves by hand.
struct ManualClock(AtomicI64);

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        Instant(self.0.load(Ordering::SeqCst))
    }
}

impl ManualClock {
    fn advance(&self, micros: i64) {
        self.0.fetch_add(micros, Ordering::SeqCst);
    }

    fn unix_seconds(&self) -> u64 {
        (self.0.load(Ordering::SeqCst) / 1_000_000) as u64
    }
}

struct Fixture {
    store: Arc<dyn Store>,
    clock: Arc<ManualClock>,
    users: Users,
    roles: Arc<Roles>,
    _dir: Option<tempfile::TempDir>,
    /// The PostgreSQL schema of the test, dropped by [`Fixture::done`].
    schema: Option<(tokio_postgres::Client, String)>,
}

fn admin_actor() -> AuditActor {
    AuditActor { kind: "system".into(), id: "hearth admin".into(), role: None, client: None }
}

/// The same fixture over each backend: the memory store, a SQLite file, and
/// a schema of its own on the PostgreSQL server at HEARTH_TEST_DATABASE_URL
/// (required: these tests fail rather than skip without it).
async fn fixtures() -> Vec<Fixture> {
    let mut out = Vec::new();
    let memory: Arc<dyn Store> = Arc::new(domain::memory::MemoryStore::new());
    out.push(fixture(memory, None));
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite =
        store::sqlite::SqliteStore::open(&dir.path().join("hearth.db"), store::sqlite::SqliteOptions::default())
            .expect("sqlite opens");
    out.push(fixture(Arc::new(sqlite), Some(dir)));
    out.push(postgres().await);
    out
}

async fn postgres() -> Fixture {
    static NEXT: AtomicI64 = AtomicI64::new(0);
    let url = std::env::var("HEARTH_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .expect("HEARTH_TEST_DATABASE_URL names a PostgreSQL server, e.g. postgres://postgres@127.0.0.1:5432/test");
    let (admin, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(connection);
    let schema = format!("hearth_auth_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
    admin.batch_execute(&format!("CREATE SCHEMA {schema}")).await.expect("create schema");
    let separator = if url.contains('?') { '&' } else { '?' };
    let store_url = format!("{url}{separator}options=-csearch_path%3D{schema}");
    let store = store::postgres::PostgresStore::connect(&store_url).await.expect("PostgresStore connects");
    let mut f = fixture(Arc::new(store), None);
    f.schema = Some((admin, schema));
    f
}

fn fixture(store: Arc<dyn Store>, dir: Option<tempfile::TempDir>) -> Fixture {
    // 2030-01-01T00:00:00Z
    let clock = Arc::new(ManualClock(AtomicI64::new(1_893_456_000 * 1_000_000)));
    let roles = Arc::new(Roles::builtin());
    let users = Users::new(store.clone(), clock.clone(), roles.clone(), UserSettings::default());
    Fixture { store, clock, users, roles, _dir: dir, schema: None }
}

impl Fixture {
    /// Drops the PostgreSQL schema (after the store's connections close).
    async fn done(self) {
        let Fixture { store, users, schema, .. } = self;
        drop(users);
        drop(store);
        if let Some((admin, schema)) = schema {
            for attempt in 1.. {
                match admin.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await {
                    Ok(()) => break,
                    Err(e) if attempt < 20 => {
                        eprintln!("retrying DROP SCHEMA {schema}: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                    Err(e) => panic!("drop schema {schema}: {e}"),
                }
            }
        }
    }

    async fn add(&self, username: &str, role: &str) -> User {
        let patient = (role == "patient").then(|| "p1".to_string());
        let new = NewUser {
            username: username.into(),
            role: role.into(),
            patient,
            password: PASSWORD.into(),
            ..NewUser::default()
        };
        self.users.add(new, &admin_actor()).await.expect("user added")
    }

    async fn audit(&self) -> Vec<AuditRecord> {
        let entries = self.store.audit_scan(0, 100_000).await.expect("audit scan");
        entries.iter().map(|e| e.parse().expect("readable record")).collect()
    }

    /// Audit records of `event` about `who`, oldest first.
    async fn events(&self, event: &str, who: &str) -> Vec<AuditRecord> {
        self.audit().await.into_iter().filter(|r| r.event == event && r.who.id == who).collect()
    }

    fn code(&self, secret: &str) -> String {
        auth::totp::code_at(secret, self.clock.unix_seconds()).expect("code")
    }
}

#[tokio::test]
async fn sign_in_succeeds_and_is_audited_with_the_user_update() {
    for f in fixtures().await {
        f.add("nina", "nurse").await;
        let signed = f.users.sign_in("  Nina ", PASSWORD, None, Some("10.0.0.7")).await.expect("signed in");
        assert_eq!(signed.user.username, "nina");
        assert_eq!(signed.user.last_sign_in, Some(f.clock.now()));
        assert!(signed.access.allows(Perms::UPDATE, "Observation"));
        assert!(!signed.access.allows(Perms::DELETE, "Observation"));
        assert_eq!(signed.access.from.as_deref(), Some("10.0.0.7"));
        let logins = f.events("login", "nina").await;
        assert_eq!(logins.len(), 1);
        assert_eq!(logins[0].outcome, AuditOutcome::Success);
        assert_eq!(logins[0].action, AuditAction::Execute);
        assert_eq!(logins[0].from.as_deref(), Some("10.0.0.7"));
        assert_eq!(logins[0].who.role.as_deref(), Some("nurse"));
        // Adding the user was audited as a privilege change by the administrator.
        let added = f.events("privilege-change", "hearth admin").await;
        assert_eq!(added.len(), 1);
        assert_eq!(added[0].action, AuditAction::Create);
        assert!(added[0].detail.as_deref().is_some_and(|d| d.contains("nina") && d.contains("nurse")));
        f.done().await;
    }
}

#[tokio::test]
async fn five_failures_lock_the_account_for_fifteen_minutes_with_one_answer_for_everything() {
    for f in fixtures().await {
        f.add("bob", "physician").await;
        for attempt in 1..=5 {
            let err = f.users.sign_in("bob", "Wrong-password-99", None, None).await.expect_err("wrong password");
            assert_eq!(err, SignInError::Invalid, "attempt {attempt}");
        }
        let locked = f.users.get("bob").await.expect("read").expect("bob");
        assert!(locked.is_locked(f.clock.now()));
        // The right password does not open a locked account, and the answer is the same.
        let err = f.users.sign_in("bob", PASSWORD, None, None).await.expect_err("locked");
        assert_eq!(err, SignInError::Invalid);
        assert_eq!(err.to_string(), "invalid username or password, or the account is locked");
        // An unknown user gets the same answer.
        assert_eq!(f.users.sign_in("nobody", PASSWORD, None, None).await.expect_err("unknown"), SignInError::Invalid);
        // A disabled account too.
        f.add("dora", "nurse").await;
        f.users.set_disabled("dora", true, &admin_actor()).await.expect("disabled");
        assert_eq!(f.users.sign_in("dora", PASSWORD, None, None).await.expect_err("disabled"), SignInError::Invalid);

        f.clock.advance(14 * MINUTE);
        assert_eq!(f.users.sign_in("bob", PASSWORD, None, None).await.expect_err("still locked"), SignInError::Invalid);
        f.clock.advance(MINUTE + 1);
        f.users.sign_in("bob", PASSWORD, None, None).await.expect("the lock expired after 15 minutes");

        let failed = f.events("login-failed", "bob").await;
        // Five wrong passwords, the lock itself, two attempts while locked.
        assert_eq!(failed.len(), 8, "{failed:?}");
        assert!(failed.iter().all(|r| r.outcome == AuditOutcome::Denied));
        let details: Vec<&str> = failed.iter().filter_map(|r| r.detail.as_deref()).collect();
        assert_eq!(details.iter().filter(|d| **d == "wrong password").count(), 5);
        assert!(details.iter().any(|d| d.contains("locked for 15 minutes after 5 failed sign-ins")), "{details:?}");
        assert_eq!(details.iter().filter(|d| **d == "account locked").count(), 2);
        let unknown = f.events("login-failed", "nobody").await;
        assert_eq!(unknown.len(), 1);
        assert_eq!(unknown[0].detail.as_deref(), Some("unknown user"));
        assert_eq!(unknown[0].who.role, None);
        let disabled = f.events("login-failed", "dora").await;
        assert_eq!(disabled[0].detail.as_deref(), Some("account disabled"));
        assert_eq!(f.events("login", "bob").await.len(), 1);
        // The failure counter starts again after a success.
        assert_eq!(f.users.get("bob").await.expect("read").expect("bob").failures, 0);
        f.done().await;
    }
}

#[tokio::test]
async fn lockout_settings_are_configurable() {
    let store: Arc<dyn Store> = Arc::new(domain::memory::MemoryStore::new());
    let f = fixture(store, None);
    let settings = UserSettings { lockout_failures: 2, lockout_minutes: 1, ..UserSettings::default() };
    let users = Users::new(f.store.clone(), f.clock.clone(), f.roles.clone(), settings);
    f.add("eve", "biller").await;
    for _ in 0..2 {
        let _ = users.sign_in("eve", "Wrong-password-99", None, None).await;
    }
    assert_eq!(users.sign_in("eve", PASSWORD, None, None).await.expect_err("locked"), SignInError::Invalid);
    f.clock.advance(MINUTE);
    users.sign_in("eve", PASSWORD, None, None).await.expect("lock of one minute over");
}

#[tokio::test]
async fn an_unknown_user_costs_a_password_verification() {
    let store: Arc<dyn Store> = Arc::new(domain::memory::MemoryStore::new());
    let f = fixture(store, None);
    f.add("carl", "lab").await;
    let mut wrong = std::time::Duration::MAX;
    let mut unknown = std::time::Duration::MAX;
    for _ in 0..3 {
        let start = std::time::Instant::now();
        let _ = f.users.sign_in("carl", "Wrong-password-99", None, None).await;
        wrong = wrong.min(start.elapsed());
        let start = std::time::Instant::now();
        let _ = f.users.sign_in("ghost", "Wrong-password-99", None, None).await;
        unknown = unknown.min(start.elapsed());
    }
    // Both run one argon2 verification; allow for a busy machine.
    assert!(unknown * 3 >= wrong && wrong * 3 >= unknown, "wrong password {wrong:?}, unknown user {unknown:?}");
}

#[tokio::test]
async fn totp_enrolment_sign_in_and_replay() {
    for f in fixtures().await {
        f.add("tom", "physician").await;
        let enrolment = f.users.enrol_totp("tom", &admin_actor()).await.expect("enrolled");
        assert!(enrolment.uri.starts_with("otpauth://totp/Hearth:tom?secret="), "{}", enrolment.uri);
        assert!(enrolment.uri.contains(&enrolment.secret));
        // Enrolled: a code is needed even though the role does not require one.
        let err = f.users.sign_in("tom", PASSWORD, None, None).await.expect_err("code needed");
        assert_eq!(err, SignInError::MfaRequired);
        let code = f.code(&enrolment.secret);
        let signed = f.users.sign_in("tom", PASSWORD, Some(&code), None).await.expect("password and code");
        assert!(signed.user.totp_last_step.is_some());
        // The same code again is refused, and counts as a failure.
        let err = f.users.sign_in("tom", PASSWORD, Some(&code), None).await.expect_err("replayed");
        assert_eq!(err, SignInError::MfaRequired);
        assert_eq!(f.users.get("tom").await.expect("read").expect("tom").failures, 1);
        // A wrong code counts too; the code of the next step works.
        let wrong = if code == "000000" { "111111" } else { "000000" };
        assert_eq!(
            f.users.sign_in("tom", PASSWORD, Some(wrong), None).await.expect_err("wrong"),
            SignInError::MfaRequired
        );
        assert_eq!(f.users.get("tom").await.expect("read").expect("tom").failures, 2);
        f.clock.advance(30_000_000);
        let next = f.code(&enrolment.secret);
        f.users.sign_in("tom", PASSWORD, Some(&next), None).await.expect("next step's code");
        // A wrong code with a wrong password is just a wrong password.
        assert_eq!(
            f.users.sign_in("tom", "Wrong-password-99", Some(&next), None).await.expect_err("wrong password"),
            SignInError::Invalid
        );
        let failed = f.events("login-failed", "tom").await;
        let details: Vec<&str> = failed.iter().filter_map(|r| r.detail.as_deref()).collect();
        assert_eq!(
            details,
            [
                "password accepted; TOTP code required",
                "wrong or reused TOTP code",
                "wrong or reused TOTP code",
                "wrong password"
            ]
        );
        let logins = f.events("login", "tom").await;
        assert_eq!(logins.len(), 2);
        assert!(logins.iter().all(|r| r.detail.as_deref() == Some("password and TOTP code")));
        // Reset: no code is asked any more (physicians do not require one).
        f.users.reset_mfa("tom", &admin_actor()).await.expect("reset");
        f.users.sign_in("tom", PASSWORD, None, None).await.expect("no second factor after reset");
        f.done().await;
    }
}

#[tokio::test]
async fn admins_need_a_second_factor_by_default() {
    for f in fixtures().await {
        f.add("root", "admin").await;
        let err = f.users.sign_in("root", PASSWORD, None, None).await.expect_err("not enrolled");
        assert_eq!(err, SignInError::MfaNotEnrolled);
        let enrolment = f.users.enrol_totp("root", &admin_actor()).await.expect("enrol");
        assert_eq!(f.users.sign_in("root", PASSWORD, None, None).await.expect_err("code"), SignInError::MfaRequired);
        let signed = f.users.sign_in("root", PASSWORD, Some(&f.code(&enrolment.secret)), None).await.expect("admin in");
        assert!(signed.access.administer);
        assert!(signed.access.allows(Perms::CREATE, "Practitioner"));
        assert!(!signed.access.allows(Perms::READ, "Observation"));
        // None of these counted as failures.
        assert_eq!(f.users.get("root").await.expect("read").expect("root").failures, 0);
        f.done().await;
    }
    // Configurable per role: admins without, nurses with.
    let store: Arc<dyn Store> = Arc::new(domain::memory::MemoryStore::new());
    let f = fixture(store, None);
    let roles = Arc::new(
        Roles::from_settings(&RoleSettings { mfa_roles: vec!["nurse".into()], ..RoleSettings::default() })
            .expect("roles"),
    );
    let users = Users::new(f.store.clone(), f.clock.clone(), roles, UserSettings::default());
    f.add("root", "admin").await;
    f.add("nina", "nurse").await;
    users.sign_in("root", PASSWORD, None, None).await.expect("admin without MFA");
    assert_eq!(users.sign_in("nina", PASSWORD, None, None).await.expect_err("nurse"), SignInError::MfaNotEnrolled);
}

#[tokio::test]
async fn access_follows_role_patient_link_and_account_state() {
    for f in fixtures().await {
        let patient = f.add("pat", "patient").await;
        assert_eq!(patient.fhir_user.as_deref(), Some("Patient/p1"));
        let access = f.users.access_for(&patient, &f.roles);
        assert_eq!(access.patient.as_deref(), Some("p1"));
        assert!(access.allows(Perms::READ, "Observation"));
        assert!(!access.allows(Perms::READ, "Measure"), "outside the compartment and shared data");
        assert!(!access.administer);
        assert_eq!(access.actor.id, "pat");
        let nurse = f.add("nina", "nurse").await;
        let access = f.users.access_for(&nurse, &f.roles);
        assert_eq!(access.patient, None);
        assert_eq!(access.emergency, None);
        let disabled = f.users.set_disabled("nina", true, &admin_actor()).await.expect("disable");
        assert!(!f.users.access_for(&disabled, &f.roles).allows(Perms::READ, "Observation"));
        f.done().await;
    }
}

#[tokio::test]
async fn administration_validates_and_audits() {
    for f in fixtures().await {
        let by = admin_actor();
        f.add("nina", "nurse").await;
        let again =
            NewUser { username: "NINA".into(), role: "nurse".into(), password: PASSWORD.into(), ..NewUser::default() };
        assert_eq!(f.users.add(again, &by).await.expect_err("duplicate"), AdminError::Exists("nina".into()));
        let bad = |username: &str, role: &str, patient: Option<&str>, password: &str| NewUser {
            username: username.into(),
            role: role.into(),
            patient: patient.map(str::to_string),
            password: password.into(),
            ..NewUser::default()
        };
        assert_eq!(
            f.users.add(bad("x y", "nurse", None, PASSWORD), &by).await.expect_err("name"),
            AdminError::BadUsername("x y".into())
        );
        assert_eq!(
            f.users.add(bad("sam", "surgeon", None, PASSWORD), &by).await.expect_err("role"),
            AdminError::UnknownRole("surgeon".into())
        );
        assert_eq!(
            f.users.add(bad("sam", "patient", None, PASSWORD), &by).await.expect_err("patient"),
            AdminError::PatientRequired
        );
        assert_eq!(
            f.users.add(bad("sam", "nurse", Some("p1"), PASSWORD), &by).await.expect_err("patient link"),
            AdminError::PatientNotAllowed("nurse".into())
        );
        let err = f.users.add(bad("sam", "nurse", None, "short"), &by).await.expect_err("policy");
        assert_eq!(err.to_string(), "the password must be at least 12 characters long");
        let err = f.users.add(bad("sam", "nurse", None, "sam-is-great-2024"), &by).await.expect_err("policy");
        assert_eq!(err.to_string(), "the password must not contain the username");
        let fhir_user = NewUser { fhir_user: Some("Practitioner".into()), ..bad("sam", "nurse", None, PASSWORD) };
        assert!(matches!(f.users.add(fhir_user, &by).await, Err(AdminError::BadFhirUser(_))));
        assert_eq!(f.users.list().await.expect("list").len(), 1);

        let changed = f.users.set_role("nina", "physician", None, &by).await.expect("role change");
        assert_eq!(changed.role, "physician");
        let changes = f.events("privilege-change", "hearth admin").await;
        let last = changes.last().expect("audited");
        assert_eq!(last.detail.as_deref(), Some("role of user nina changed from nurse to physician"));
        assert_eq!(last.action, AuditAction::Update);
        assert_eq!(last.outcome, AuditOutcome::Success);
        assert_eq!(
            f.users.set_role("ghost", "nurse", None, &by).await.expect_err("no user"),
            AdminError::NoSuchUser("ghost".into())
        );

        for _ in 0..5 {
            let _ = f.users.sign_in("nina", "Wrong-password-99", None, None).await;
        }
        f.users.unlock("nina", &by).await.expect("unlock");
        f.users.sign_in("nina", PASSWORD, None, None).await.expect("unlocked");
        f.users.set_password("nina", "Another-fine-Phrase4", &by).await.expect("new password");
        assert_eq!(
            f.users.sign_in("nina", PASSWORD, None, None).await.expect_err("old password"),
            SignInError::Invalid
        );
        f.users.sign_in("nina", "Another-fine-Phrase4", None, None).await.expect("new password works");
        let details: Vec<String> =
            f.events("privilege-change", "hearth admin").await.into_iter().filter_map(|r| r.detail).collect();
        assert!(details.contains(&"user nina unlocked".to_string()), "{details:?}");
        assert!(details.contains(&"password of user nina changed".to_string()), "{details:?}");
        // No secret reaches the audit trail.
        for record in f.audit().await {
            let json = record.to_canonical_json();
            assert!(!json.contains(PASSWORD) && !json.contains("argon2"), "{json}");
        }
        f.done().await;
    }
}

#[tokio::test]
async fn break_the_glass_grants_expire_notify_and_refuse_outsiders() {
    for f in fixtures().await {
        let nurse = f.add("nina", "nurse").await;
        assert!(f.users.may_break_glass(&nurse));
        let grant =
            f.users.break_glass("nina", "  unconscious patient in ED  ", Some("10.0.0.9")).await.expect("granted");
        assert_eq!(grant.reason, "unconscious patient in ED");
        assert_eq!(grant.until, Instant(f.clock.now().0 + 60 * MINUTE));
        let user = f.users.get("nina").await.expect("read").expect("nina");
        let access = f.users.access_for(&user, &f.roles);
        assert_eq!(access.emergency.map(|e| e.reason).as_deref(), Some("unconscious patient in ED"));
        let records = f.events("break-glass", "nina").await;
        assert_eq!(records.len(), 1);
        assert!(records[0].emergency);
        assert_eq!(records[0].action, AuditAction::Execute);
        assert_eq!(records[0].outcome, AuditOutcome::Success);
        assert_eq!(records[0].detail.as_deref(), Some("unconscious patient in ED"));
        assert_eq!(records[0].from.as_deref(), Some("10.0.0.9"));
        let notifications = f.users.notifications().await.expect("notifications");
        assert_eq!(notifications.len(), 1);
        assert_eq!(notifications[0].to, "privacy-officer");
        assert_eq!(notifications[0].username, "nina");
        assert_eq!(notifications[0].reason, "unconscious patient in ED");

        f.clock.advance(60 * MINUTE);
        let access = f.users.access_for(&user, &f.roles);
        assert_eq!(access.emergency, None, "the grant expired");

        // Outside the group: refused and audited; no notification.
        f.add("bill", "biller").await;
        let err = f.users.break_glass("bill", "curious", None).await.expect_err("not in group");
        assert_eq!(err, auth::break_glass::BreakGlassError::NotInGroup);
        let refused = f.events("break-glass", "bill").await;
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].outcome, AuditOutcome::Denied);
        assert_eq!(f.users.notifications().await.expect("notifications").len(), 1);
        let bill = f.users.get("bill").await.expect("read").expect("bill");
        assert_eq!(f.users.access_for(&bill, &f.roles).emergency, None);
        // A reason is required.
        assert_eq!(
            f.users.break_glass("nina", "  ", None).await.expect_err("no reason"),
            auth::break_glass::BreakGlassError::ReasonRequired
        );
        // The account's own flag puts it in the group.
        f.users.set_break_glass("bill", true, &admin_actor()).await.expect("flag");
        f.users.break_glass("bill", "covering the ED tonight", None).await.expect("member by flag");
        let notifications = f.users.notifications().await.expect("notifications");
        assert_eq!(notifications.len(), 2);
        assert_eq!(notifications[0].username, "bill", "newest first");
        f.done().await;
    }
}

#[tokio::test]
async fn sessions_time_out_are_revoked_and_audited() {
    for f in fixtures().await {
        let sessions = Sessions::new(f.users.clone(), SessionSettings::default());
        let signed = {
            f.add("nina", "nurse").await;
            f.users.sign_in("nina", PASSWORD, None, None).await.expect("signed in")
        };
        let new = sessions.create(&signed.user, Some("10.0.0.7")).await.expect("session");
        assert_eq!(new.token.len(), 43, "256 bits, base64url");
        assert_eq!(new.session.id, auth::sessions::token_hash(&new.token));
        // Only the digest is stored.
        let stored = f.store.sys_get(auth::sessions::KIND, &new.session.id).await.expect("read").expect("stored");
        assert!(!stored.json.contains(&new.token));
        assert!(f.store.sys_get(auth::sessions::KIND, &new.token).await.expect("read").is_none());

        let active = sessions.check(&new.token).await.expect("valid");
        assert_eq!(active.user.username, "nina");
        assert_eq!(active.csrf, new.csrf);
        assert!(auth::sessions::csrf_matches(&new.token, &new.csrf));
        assert!(!auth::sessions::csrf_matches(&new.token, "forged"));
        assert_eq!(sessions.check("not-a-session").await.expect_err("unknown"), SessionError::Invalid);

        // Checks within a minute write nothing; later ones refresh last-seen.
        f.clock.advance(30_000_000);
        sessions.check(&new.token).await.expect("valid");
        let version =
            f.store.sys_get(auth::sessions::KIND, &new.session.id).await.expect("read").expect("stored").version;
        assert_eq!(version, 1);
        // Active every 10 minutes: still valid after 40 minutes.
        for _ in 0..4 {
            f.clock.advance(10 * MINUTE);
            sessions.check(&new.token).await.expect("kept alive");
        }
        // Idle for 15 minutes: ended, and audited as a logout.
        f.clock.advance(15 * MINUTE);
        assert_eq!(sessions.check(&new.token).await.expect_err("idle"), SessionError::Invalid);
        assert!(f.store.sys_get(auth::sessions::KIND, &new.session.id).await.expect("read").is_none());
        let logouts = f.events("logout", "nina").await;
        assert_eq!(logouts.len(), 1);
        assert_eq!(logouts[0].detail.as_deref(), Some("session timed out after 15 minutes without use"));

        // Sign-out.
        let second = sessions.create(&signed.user, None).await.expect("session");
        sessions.sign_out(&second.token, Some("10.0.0.7")).await.expect("signed out");
        assert_eq!(sessions.check(&second.token).await.expect_err("signed out"), SessionError::Invalid);
        assert_eq!(
            f.events("logout", "nina").await.last().and_then(|r| r.detail.clone()).as_deref(),
            Some("signed out")
        );

        // Revocation of one, and of all of a user's sessions.
        let a = sessions.create(&signed.user, None).await.expect("a");
        let b = sessions.create(&signed.user, None).await.expect("b");
        let c = sessions.create(&signed.user, None).await.expect("c");
        assert_eq!(sessions.list(Some("nina")).await.expect("list").len(), 3);
        assert!(sessions.revoke(&a.session.id, &admin_actor()).await.expect("revoke"));
        assert_eq!(sessions.check(&a.token).await.expect_err("revoked"), SessionError::Invalid);
        sessions.check(&b.token).await.expect("b still valid");
        assert_eq!(sessions.revoke_all("nina", &admin_actor()).await.expect("revoke all"), 2);
        assert_eq!(sessions.check(&c.token).await.expect_err("revoked"), SessionError::Invalid);
        assert!(sessions.list(None).await.expect("list").is_empty());
        let revocations = f.events("logout", "hearth admin").await;
        assert_eq!(revocations.len(), 3);
        assert!(revocations.iter().all(|r| r.detail.as_deref() == Some("session of user nina revoked")));

        // Disabling the account ends its sessions at their next check.
        let d = sessions.create(&signed.user, None).await.expect("d");
        f.users.set_disabled("nina", true, &admin_actor()).await.expect("disable");
        assert_eq!(sessions.check(&d.token).await.expect_err("disabled"), SessionError::Invalid);
        f.done().await;
    }
}

#[tokio::test]
async fn sessions_end_after_their_absolute_lifetime() {
    let store: Arc<dyn Store> = Arc::new(domain::memory::MemoryStore::new());
    let f = fixture(store, None);
    let sessions = Sessions::new(f.users.clone(), SessionSettings { idle_minutes: 15, absolute_hours: 1 });
    let user = f.add("nina", "nurse").await;
    let new = sessions.create(&user, None).await.expect("session");
    for _ in 0..5 {
        f.clock.advance(10 * MINUTE);
        sessions.check(&new.token).await.expect("active");
    }
    f.clock.advance(10 * MINUTE);
    assert_eq!(sessions.check(&new.token).await.expect_err("lifetime over"), SessionError::Invalid);
    let logouts = f.events("logout", "nina").await;
    assert_eq!(logouts[0].detail.as_deref(), Some("session ended: its lifetime of 1 h is over"));
}
